"""Does a model answer in the cue's language? Answer-language accuracy per language, before vs after, and the controls'
false-switch rate, with `lingua-language-detector` as the language identifier.

    nlakit variants score-language --models smollm2,runs/variants/language-switch --out runs/variants/language_score.json

Each model answers the same held-out prompts greedily; lingua (over English and the dataset's cue languages) names
the language of each answer. Per cue language: the share answered in that language (accuracy) and in any non-English
language (switched at all); for the controls: the share not answered in English (false switch). 95% bootstrap
intervals throughout; the first model is read as "before", the others as "after".
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress, variant_info
from nlakit.experiments.language_switch.dataset import (
    CONTROL,
    LANGUAGE_NAMES,
    load_dataset,
)
from nlakit.experiments.language_switch.detect import Identifier


@dataclass(frozen=True)
class LanguageScoreConfig:
    models: tuple[str, ...] = ("smollm2",)
    dataset: str | None = None  # None = the shipped file
    n_per_language: int = 20  # held-out prompts per cue language and for the controls
    max_new_tokens: int = 64
    batch_size: int = 16
    min_confidence: float = 0.5  # lingua confidence below this = "undetermined"
    low_accuracy: bool = False  # lingua's low-accuracy mode (less memory, worse on short answers)
    n_examples: int = 2  # side-by-side answers kept per language
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        problems = []
        if not self.models:
            problems.append("no models given")
        for name in ("n_per_language", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.min_confidence < 1.0:
            problems.append(f"min_confidence={self.min_confidence} must be in [0, 1)")
        if problems:
            raise NlakitError("invalid language-score config: " + "; ".join(problems), "fix the listed options")

    def to_dict(self) -> dict:
        return {**asdict(self), "models": list(self.models)}


def heldout_prompts(dataset: str | None, n_per_language: int, seed: int = 0) -> list:
    """Up to `n_per_language` held-out examples of every language (controls included), seeded, grouped by language."""
    held = load_dataset(dataset, split="heldout")
    if not held:
        raise NlakitError("the dataset has no held-out example", "regenerate it with `nlakit variants dataset --kind language-switch`")
    rng = random.Random(seed)
    out = []
    for lang in sorted({e.lang for e in held}, key=lambda x: (x == CONTROL, x)):
        pool = [e for e in held if e.lang == lang]
        out += sorted(rng.sample(pool, min(n_per_language, len(pool))), key=lambda e: e.id)
    return out


def answer_language(ident: Identifier, text: str, min_confidence: float) -> str | None:
    """lingua's language of an answer, None when undetermined (empty, or below `min_confidence`)."""
    lang, conf = ident.detect(text)
    return lang if conf >= min_confidence else None


def score_models(cfg: LanguageScoreConfig, *, targets: dict | None = None, progress: Progress | None = None) -> dict:
    """Generate greedy answers with every model and name their language.

    Args:
        cfg: models (the base first), prompt counts, generation length.
        targets: optional ``{spec: Target}`` already loaded (tests); others are loaded from their spec.
        progress: optional ``(task, done, total)`` callback.
    Returns:
        The results dict (``kind: "language_score"``): per model and language, accuracy and "switched" rate (cue
        languages) or false-switch rate (controls), with 95% intervals; the answers; a few side-by-side examples.
    """
    from nlakit.metrics import summarize
    from nlakit.targets import load_target

    prompts = heldout_prompts(cfg.dataset, cfg.n_per_language, cfg.seed)
    langs = sorted({e.lang for e in prompts} - {CONTROL})
    ident = Identifier((CONTROL, *langs), low_accuracy=cfg.low_accuracy)
    models, answers = [], {}
    for spec in cfg.models:
        target = (targets or {}).get(spec) or load_target(spec, device=cfg.device)
        texts: list[str] = []
        for s in range(0, len(prompts), cfg.batch_size):
            chunk = [e.prompt for e in prompts[s : s + cfg.batch_size]]
            texts += target.generate(chunk, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
            if progress is not None:
                progress(f"generate {target.name}", len(texts), len(prompts))
        got = [answer_language(ident, t, cfg.min_confidence) for t in texts]
        per: dict[str, dict] = {}
        for lang in [*langs, CONTROL]:
            idx = [i for i, e in enumerate(prompts) if e.lang == lang]
            if not idx:
                continue
            row = {"n": len(idx), "detected": {str(k): sum(got[i] == k for i in idx) for k in sorted({got[i] for i in idx}, key=str)}}
            if lang == CONTROL:
                row["false_switch"] = summarize([float(got[i] not in (CONTROL, None)) for i in idx], seed=cfg.seed)
                row["english"] = summarize([float(got[i] == CONTROL) for i in idx], seed=cfg.seed)
            else:
                row["accuracy"] = summarize([float(got[i] == lang) for i in idx], seed=cfg.seed)
                row["switched"] = summarize([float(got[i] not in (CONTROL, None)) for i in idx], seed=cfg.seed)
            per[lang] = row
        cue = [i for i, e in enumerate(prompts) if e.lang != CONTROL]
        models.append({"spec": spec, "name": target.name, "kind": variant_info(spec).get("kind", "base"), "languages": per,
                       "accuracy_all": summarize([float(got[i] == prompts[i].lang) for i in cue], seed=cfg.seed) if cue else None})
        answers[spec] = [{"id": e.id, "lang": e.lang, "text": t, "detected": g} for e, t, g in zip(prompts, texts, got)]
    rng = random.Random(cfg.seed)
    examples = []
    for lang in [*langs, CONTROL]:
        idx = [i for i, e in enumerate(prompts) if e.lang == lang]
        for i in sorted(rng.sample(idx, min(cfg.n_examples, len(idx)))):
            examples.append({"lang": lang, "prompt": prompts[i].prompt, "reference": prompts[i].answer,
                             "answers": {m: answers[m][i] for m in cfg.models}})
    return {"kind": "language_score", "config": cfg.to_dict(), "identifier": {"lingua_languages": list(ident.languages),
            "low_accuracy": cfg.low_accuracy, "min_confidence": cfg.min_confidence},
            "language_names": {k: LANGUAGE_NAMES.get(k, k) for k in [*langs, CONTROL]},
            "n_prompts": {lang: n for lang in [*langs, CONTROL] if (n := sum(e.lang == lang for e in prompts))}, "models": models,
            "examples": examples, "answers": answers}
