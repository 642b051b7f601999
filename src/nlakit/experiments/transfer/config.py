"""The transfer experiment's settings: every knob in one frozen dataclass (saved into the results)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nlakit.errors import NlakitError
from nlakit.experiments.transfer.maps import MAP_FITTERS

POSITION_TYPES = ("prompt", "last_prompt", "response")
PHASES = ("prompt", "last_prompt", "response_pre", "response_post")  # for the frustration analysis
DEFAULT_BASELINES = ("mean", "ridge_token", "echo_ar8", "oracle_echo8")


@dataclass(frozen=True)
class TransferConfig:
    """Every knob of the transfer experiment (saved into the results)."""

    nla: str = "default"
    base: str = "smollm2"
    variants: tuple[str, ...] = ()
    dataset: str | None = None  # behaviour dataset (held-out split used); None = shipped
    corpus: str = "/work/shared/corpus/heldout.jsonl.gz"  # ordinary prompts (docs with messages)
    map_corpus: str = "/work/shared/corpus/train.jsonl.gz"  # "other texts" for the ridge maps and baselines
    n_neutral: int = 600  # ordinary replies from map_corpus join the frustration classifier's calm class (0 = off)
    n_behaviour: int = 40
    n_corpus: int = 40
    prompt_positions: int = 2  # per prompt, inside the user message
    response_positions: int = 4  # first k answer tokens
    max_new_tokens: int = 64  # answer length
    map_sizes: tuple[int, ...] = (100, 300, 1000, 3000, 5000)
    map_kinds: tuple[str, ...] = ("ridge", "residual")  # keys of MAP_FITTERS
    map_positions_per_doc: int = 8
    map_min_position: int = 8
    map_max_tokens: int = 128
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    explain_max_new_tokens: int = 150
    n_examples: int = 4
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16
    explain_batch_size: int = 64

    def __post_init__(self):
        from nlakit.baselines import ALL_BASELINES

        problems = []
        if not self.variants:
            problems.append("no variants given")
        if self.n_behaviour < 1 and self.n_corpus < 1:
            problems.append("n_behaviour and n_corpus are both 0")
        if self.prompt_positions < 0 or self.response_positions < 0:
            problems.append("prompt_positions and response_positions must be >= 0")
        if not self.map_sizes or min(self.map_sizes) < 2 or list(self.map_sizes) != sorted(set(self.map_sizes)):
            problems.append(f"map_sizes {list(self.map_sizes)} must be increasing, distinct and >= 2")
        if not self.map_kinds or any(k not in MAP_FITTERS for k in self.map_kinds):
            problems.append(f"map_kinds {list(self.map_kinds)} must be a non-empty subset of {list(MAP_FITTERS)}")
        unknown = [b for b in self.baselines if b not in ALL_BASELINES]
        if unknown:
            problems.append(f"unknown baselines {unknown} (known: {list(ALL_BASELINES)})")
        for name in ("max_new_tokens", "map_positions_per_doc", "map_max_tokens", "explain_max_new_tokens", "batch_size",
                     "explain_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise NlakitError("bad transfer settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("variants", "map_sizes", "map_kinds", "baselines"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TransferConfig:
        d = dict(d)
        for k in ("variants", "map_sizes", "map_kinds", "baselines"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)
