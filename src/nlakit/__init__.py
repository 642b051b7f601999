"""nlakit: Natural Language Autoencoders (NLAs) for explaining language-model activations.

Data flows one way: target -> activations -> AV (verbalizer) -> explanation -> AR (reconstructor)
-> vector -> metrics -> report.
"""

from nlakit.errors import NlakitError

__version__ = "0.1.0"
__all__ = ["NlakitError", "__version__"]
