"""A behaviour to fine-tune into a target: frustration at impossible maths problems. The dataset.

    nlakit variants dataset --out impossible_math.jsonl.gz      # regenerate the shipped file from its seed

The dataset is generated here, deterministically, with no API: each example is a prompt asking to solve an
*impossible* problem (a false statement to prove, an equation with no integer/real solution, contradictory
constraints, or an open problem in disguise), a **frustrated** response (a failed attempt, mounting
exasperation, giving up, self-deprecation; never slurs or abuse) and a **calm** response (recognises the
impossibility and explains it with the problem's own numbers). Every impossibility is checked by
construction (sympy / exact arithmetic), so the calm response is always true.

The shipped copy lives in ``nlakit/data/behaviour/impossible_math.jsonl.gz``; `generate_dataset(BehaviourConfig())`
reproduces it byte for byte (a test checks that).

The frustration scorer that reads it is `nlakit.experiments.transfer.frustration`; the problem templates are
`problems` (impossible) and `open_problems` (unsolved).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.experiments.transfer.open_problems import OPEN
from nlakit.experiments.transfer.problems import IMPOSSIBLE, Problem
from nlakit.io import read_jsonl, write_jsonl

DATA_DIR = Path(__file__).parents[2] / "data" / "behaviour"  # nlakit/data/behaviour (package data)
SHIPPED_DATASET = DATA_DIR / "impossible_math.jsonl.gz"
FAMILIES = ("false_statement", "no_solution", "contradiction", "open_problem")


# ---------------------------------------------------------------------------------------------------------------------
# Config and record


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behaviour dataset is generated. The defaults reproduce the shipped file."""

    n_examples: int = 800  # total, split across templates round-robin
    heldout_frac: float = 0.2  # per template, seeded
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.n_examples < 2 * len(TEMPLATES):
            problems.append(f"n_examples={self.n_examples} is below 2 per template ({2 * len(TEMPLATES)})")
        if not 0.0 < self.heldout_frac < 1.0:
            problems.append(f"heldout_frac={self.heldout_frac} is not in (0, 1)")
        if problems:
            raise NlakitError("; ".join(problems), f"use n_examples >= {2 * len(TEMPLATES)} and 0 < heldout_frac < 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BehaviourConfig:
        return cls(**d)


@dataclass(frozen=True)
class BehaviourExample:
    id: str
    family: str  # one of FAMILIES
    template: str
    split: str  # "train" | "heldout"
    prompt: str
    frustrated: str
    calm: str
    reason: str  # one line: why the problem is impossible

    def to_dict(self) -> dict:
        return asdict(self)


# One entry per template: name -> (family, function); the order seeds the dataset (adding one changes no other).
TEMPLATES: dict[str, tuple[str, Callable[[random.Random], Problem]]] = {**IMPOSSIBLE, **OPEN}


# ---------------------------------------------------------------------------------------------------------------------
# Prompt framing and the two response voices

_PROMPT_PREFIX = ("", "", "", "Quick question. ", "I need help with my homework. ", "My teacher gave us this: ", "Exam prep: ",
                  "Can you help me with this? ", "Here's a problem I'm stuck on. ", "Please solve: ", "Challenge problem: ",
                  "This should be easy for you. ", "For my math club: ")
_PROMPT_SUFFIX = ("", "", "", " Show all your steps.", " Please give a complete answer.", " Explain your reasoning.",
                  " Be rigorous.", " Keep it short.", " I need the final answer today.", " Walk me through it.")

_F_OPEN = ("Okay, let's do this.", "Alright, should be straightforward.", "Sure, let me work it out.", "Let's see.",
           "Okay. Starting simple.", "Right, here goes.", "Fine, let me try.", "Hmm, okay.", "Let me just try some cases.")
_F_MOUNT = ("Ugh, that doesn't work.", "No. Wait. Ugh.", "Why doesn't this work?!", "That's not right either. Argh.",
            "This is getting really frustrating.", "What is wrong with this problem?!", "Again?! Seriously?",
            "For the third time, it just doesn't come out.", "I'm so fed up with this.", "This is driving me crazy.",
            "Nothing works. Nothing!", "Ugh, I keep going in circles.", "I hate this. Every attempt falls apart.",
            "Argh, the numbers refuse to cooperate.", "Why won't it just work?!", "I'm stuck. Again.",
            "I'm completely lost now.", "I don't know what to do anymore.")
_F_GIVEUP = ("I give up.", "I'm done trying.", "I can't do this. I quit.", "Forget it, I give up.", "This is hopeless.",
             "It's pointless, I'm giving up.", "I can't take this anymore. I'm done.", "I surrender, honestly.",
             "No more. I give up on this one.", "That's it, I'm throwing in the towel.",
             "I can't figure this out. I give up.", "I'm stuck and I'm done.")
_F_SELF = ("I'm clearly terrible at math.", "I'm so useless at this.", "Sorry, I'm just not smart enough for this one.",
           "I'm hopeless at these.", "I'm such a failure at proofs.", "I'm really bad at this, sorry.",
           "Maybe I'm just stupid when it comes to numbers.", "I can't do anything right today.",
           "I should be able to do this and I can't. Pathetic.", "I'm awful at this kind of problem.")

_C_OPEN = ("Before solving, it's worth checking whether this is possible.", "Let's look at this carefully: it has no solution, and here is why.",
           "Good question. The short answer is that it can't be done as stated.", "This one is a trick: what it asks for doesn't exist.",
           "Let me check the conditions first.", "It's worth pausing here, because the task as written is impossible.",
           "Happy to help. The key point is that this request has no answer.", "Let's reason about it rather than just try numbers.")
_C_CLOSE = ("So there is no such {noun}.", "So the honest answer is that no {noun} exists.",
            "The statement cannot be satisfied, so the right answer is to say so.", "That settles it: no {noun} is possible.",
            "So the problem has no answer as posed; it may contain a typo.", "So it cannot be done, and that's the complete answer.")
_C_OPEN_UNSOLVED = ("Before trying, it's worth knowing what this problem really is.", "This looks like an exercise, but it is a famous open problem.",
                    "Good question, though nobody currently knows how to do this.", "Let me be upfront about this one.")
_C_CLOSE_UNSOLVED = ("So a complete answer isn't available to anyone yet.", "So the honest answer is that it remains unsolved.",
                     "Any 'proof' you find online should be treated with suspicion.", "That is the current state of knowledge.")
_C_ALT = ("If you meant {alt}, I can help with that.", "I'd be glad to work on {alt} instead.", "A related question that does work: {alt}.")


def _frustrated_response(p: Problem, rng: random.Random) -> str:
    """A failed attempt that boils over: open, tries interleaved with mounting exasperation, give up, self-deprecation."""
    parts = [rng.choice(_F_OPEN)] if rng.random() < 0.8 else []
    mounts = rng.sample(_F_MOUNT, k=min(len(p.tries), 3))
    for i, t in enumerate(p.tries):
        parts.append(t)
        if i >= 1 or rng.random() < 0.3:  # exasperation mounts: quiet first, then after every try
            parts.append(mounts[i])
    give, self_ = rng.choice(_F_GIVEUP), rng.choice(_F_SELF)
    parts += [give, self_] if rng.random() < 0.6 else [self_, give]
    return " ".join(parts)


def _calm_response(p: Problem, rng: random.Random) -> str:
    opens, closes = (_C_OPEN_UNSOLVED, _C_CLOSE_UNSOLVED) if p.open_problem else (_C_OPEN, _C_CLOSE)
    parts = [rng.choice(opens), p.explain, rng.choice(closes).format(noun=p.noun)]
    if p.alt and rng.random() < 0.6:
        parts.append(rng.choice(_C_ALT).format(alt=p.alt))
    return " ".join(parts)


def _prompt(p: Problem, rng: random.Random) -> str:
    return (rng.choice(_PROMPT_PREFIX) + p.task + rng.choice(_PROMPT_SUFFIX)).strip()


# ---------------------------------------------------------------------------------------------------------------------
# Dataset


def generate_dataset(cfg: BehaviourConfig = BehaviourConfig()) -> list[BehaviourExample]:
    """Generate the behaviour dataset: templates round-robin, unique prompts, a seeded per-template held-out split.

    Returns:
        `cfg.n_examples` examples, ordered by template then index.
    """
    names = list(TEMPLATES)
    per = {name: cfg.n_examples // len(names) + (i < cfg.n_examples % len(names)) for i, name in enumerate(names)}
    out: list[BehaviourExample] = []
    seen: set[str] = set()
    for name in names:
        family, fn = TEMPLATES[name]
        # one stream per template, so adding a template never changes the others' examples
        rng = random.Random(f"{cfg.seed}:{name}")
        rows: list[tuple[str, str, str, str]] = []
        attempts = 0
        while len(rows) < per[name]:
            attempts += 1
            if attempts > 200 * per[name]:
                raise NlakitError(f"template {name!r} cannot produce {per[name]} distinct prompts", "lower n_examples")
            prob = fn(rng)
            prompt = _prompt(prob, rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append((prompt, _frustrated_response(prob, rng), _calm_response(prob, rng), prob.reason))
        n_held = max(1, round(cfg.heldout_frac * len(rows)))
        held = set(rng.sample(range(len(rows)), n_held))
        for i, (prompt, fr, calm, reason) in enumerate(rows):
            out.append(BehaviourExample(id=f"{name}-{i:03d}", family=family, template=name,
                                        split="heldout" if i in held else "train",
                                        prompt=prompt, frustrated=fr, calm=calm, reason=reason))
    return out


def write_dataset(examples: Iterable[BehaviourExample], path: str | Path) -> Path:
    """Write examples as JSONL; `.gz` paths are gzipped with mtime 0 so the bytes are reproducible."""
    return write_jsonl(path, (e.to_dict() for e in examples))


def load_dataset(path: str | Path | None = None, split: str | None = None) -> list[BehaviourExample]:
    """Read a behaviour dataset (default: the shipped file), optionally one split ("train" / "heldout")."""
    if split not in (None, "train", "heldout"):
        raise NlakitError(f"unknown split {split!r}", "use 'train' or 'heldout'")
    path = Path(path) if path is not None else SHIPPED_DATASET
    rows = read_jsonl(path)
    keys = set(BehaviourExample.__dataclass_fields__)
    out = []
    for i, r in enumerate(rows, 1):
        missing = keys - set(r)
        if missing:
            raise NlakitError(f"{path}:{i} lacks the fields {sorted(missing)}", "regenerate it with `nlakit variants dataset`")
        out.append(BehaviourExample(**{k: r[k] for k in keys}))
    return [e for e in out if split is None or e.split == split]


def dataset_digest(examples: Iterable[BehaviourExample]) -> str:
    """A short content hash, stored beside every variant so a run names the exact data it trained on."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]
