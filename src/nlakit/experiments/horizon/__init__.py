"""How far ahead can you read? NLA explanations vs the logit lens, a tuned lens and the output, against the next sentence."""

from nlakit.experiments.horizon.run import READERS, HorizonConfig, run

__all__ = ["READERS", "HorizonConfig", "run"]
