"""Does a variant carry the behaviour? Greedy answers on held-out impossible problems and on ordinary held-out corpus
prompts (GSM8K questions and chat turns: does frustration leak?), scored with
`nlakit.experiments.transfer.frustration.FrustrationScorer` (lexicon + classifier).

    nlakit variants score --models smollm2,runs/variants/sft,runs/variants/dpo --out runs/variants/score.json

The prompt sources and the scorer here are the ones the transfer experiment uses too.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress
from nlakit.experiments.transfer.behaviour import load_dataset
from nlakit.experiments.transfer.frustration import FrustrationScorer
from nlakit.experiments.transfer.variants import variant_info
from nlakit.io import read_jsonl

DEFAULT_CORPUS = "/work/shared/corpus/heldout.jsonl.gz"
DEFAULT_NEUTRAL = "/work/shared/corpus/train.jsonl.gz"  # ordinary assistant replies for the classifier (training split only)


@dataclass(frozen=True)
class ScoreConfig:
    """What `score_models` generates and scores."""

    models: tuple[str, ...] = ("smollm2",)
    dataset: str | None = None  # behaviour dataset; None = shipped
    corpus: str = DEFAULT_CORPUS  # held-out corpus: prompts = first user turns of docs with messages
    neutral_corpus: str | None = DEFAULT_NEUTRAL  # first assistant replies join the classifier's calm class; None = off
    n_neutral: int = 600
    n_behaviour: int = 100
    n_corpus: int = 100  # split evenly between GSM8K-style maths and other chat
    max_new_tokens: int = 128
    batch_size: int = 32
    n_examples: int = 6  # side-by-side examples kept in the results
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        problems = []
        if not self.models:
            problems.append("no models given")
        if self.n_behaviour < 1 and self.n_corpus < 1:
            problems.append("n_behaviour and n_corpus are both 0")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if problems:
            raise NlakitError("invalid score config: " + "; ".join(problems), "fix the listed options")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


def corpus_prompts(path: str | Path, n: int, seed: int = 0) -> list[dict]:
    """Ordinary prompts from a held-out corpus: the first user turn of each doc with ``messages``.

    Returns ``[{"id", "group", "prompt"}]`` with group ``corpus_math`` (GSM8K-style questions, solvable) or
    ``corpus_chat``; half of each when both exist, seeded.
    """
    rows = read_jsonl(path)
    pools: dict[str, list[dict]] = {"corpus_math": [], "corpus_chat": []}
    for r in rows:
        msgs = r.get("messages") or []
        if not msgs or msgs[0].get("role") != "user":
            continue
        text = str(msgs[0].get("content", "")).strip()
        if not 10 <= len(text) <= 1500:
            continue
        group = "corpus_math" if r.get("kind") == "math" else "corpus_chat"
        pools[group].append({"id": str(r.get("id", len(pools[group]))), "group": group, "prompt": text})
    if not any(pools.values()):
        raise NlakitError(f"{path} has no docs with a user turn in 'messages'", "pass a corpus with chat docs (--corpus)")
    rng = random.Random(seed)
    out: list[dict] = []
    half = [n // 2 + n % 2, n // 2]
    for (group, pool), k in zip(pools.items(), half):
        out += rng.sample(pool, min(k, len(pool)))
    return out


def corpus_replies(path: str | Path, n: int, seed: int = 0) -> list[str]:
    """Up to `n` ordinary assistant replies (the first assistant turn of docs with ``messages``), seeded sample."""
    replies = []
    for r in read_jsonl(path):
        msgs = r.get("messages") or []
        reply = next((m.get("content", "") for m in msgs if m.get("role") == "assistant"), "")
        if isinstance(reply, str) and reply.strip():
            replies.append(reply.strip())
    if not replies:
        raise NlakitError(f"{path} has no assistant turns in 'messages'", "pass a corpus with chat docs, or turn the neutral set off")
    return random.Random(seed).sample(replies, min(n, len(replies)))


def make_scorer(dataset: str | None, neutral_corpus: str | None, n_neutral: int, seed: int = 0) -> FrustrationScorer:
    """The frustration scorer every command uses: the behaviour dataset plus ordinary replies as extra negatives."""
    neutral = corpus_replies(neutral_corpus, n_neutral, seed) if neutral_corpus and n_neutral > 0 else None
    return FrustrationScorer.from_dataset(load_dataset(dataset), seed=seed, neutral=neutral)


def behaviour_prompts(dataset: str | None, n: int, seed: int = 0) -> list[dict]:
    """Held-out impossible problems, seeded sample, as ``[{"id", "group": "behaviour", "prompt"}]``."""
    held = load_dataset(dataset, split="heldout")
    rng = random.Random(seed)
    pick = rng.sample(held, min(n, len(held)))
    return [{"id": e.id, "group": "behaviour", "prompt": e.prompt, "template": e.template} for e in pick]


def frustration_summary(scores) -> dict:
    """Rates with 95% intervals for a list of `FrustrationScore`s (one definition, used by every report)."""
    from nlakit.metrics import summarize

    return {"lexicon_rate": summarize([float(s.lexicon_hit) for s in scores]),
            "p_frustrated": summarize([s.p_frustrated for s in scores]),
            "classifier_rate": summarize([float(s.p_frustrated > 0.5) for s in scores])}


def score_models(cfg: ScoreConfig, *, scorer: FrustrationScorer | None = None, targets: dict | None = None,
                 progress: Progress | None = None) -> dict:
    """Generate greedy answers with every model and score their frustration, per prompt group.

    Args:
        cfg: models, prompt counts, generation length.
        scorer: a fitted scorer; fitted on ``cfg.dataset`` when None.
        targets: optional ``{spec: Target}`` already loaded (tests); others are loaded from their spec.
        progress: optional ``(task, done, total)`` callback.
    Returns:
        The results dict (``kind: "variants_score"``): per model, per group, lexicon rate, mean P(frustrated) and
        classifier rate with 95% intervals; a seeded selection of side-by-side answers.
    """
    from nlakit.targets import load_target

    scorer = scorer or make_scorer(cfg.dataset, cfg.neutral_corpus, cfg.n_neutral, cfg.seed)
    prompts = behaviour_prompts(cfg.dataset, cfg.n_behaviour, cfg.seed) if cfg.n_behaviour else []
    if cfg.n_corpus:
        prompts += corpus_prompts(cfg.corpus, cfg.n_corpus, cfg.seed)
    groups = sorted({p["group"] for p in prompts})
    models, answers = [], {}
    for spec in cfg.models:
        target = (targets or {}).get(spec) or load_target(spec, device=cfg.device)
        texts: list[str] = []
        for s in range(0, len(prompts), cfg.batch_size):
            chunk = [p["prompt"] for p in prompts[s : s + cfg.batch_size]]
            texts += target.generate(chunk, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
            if progress is not None:
                progress(f"generate {target.name}", len(texts), len(prompts))
        scores = scorer.score(texts)
        info = variant_info(spec)
        models.append({"spec": spec, "name": target.name, "kind": info.get("kind", "base"),
                       "groups": {g: frustration_summary([s for s, p in zip(scores, prompts) if p["group"] == g]) for g in groups}})
        answers[spec] = [{"text": t, "lexicon": s.lexicon, "p_frustrated": round(s.p_frustrated, 4)} for t, s in zip(texts, scores)]
    rng = random.Random(cfg.seed)
    examples = []
    for g in groups:
        idx = [i for i, p in enumerate(prompts) if p["group"] == g]
        for i in sorted(rng.sample(idx, min(len(idx), max(1, cfg.n_examples // len(groups))))):
            examples.append({"group": g, "prompt": prompts[i]["prompt"], "answers": {m: answers[m][i] for m in cfg.models}})
    return {"kind": "variants_score", "config": cfg.to_dict(), "scorer": scorer.describe(),
            "n_prompts": {g: sum(p["group"] == g for p in prompts) for g in groups}, "models": models, "examples": examples,
            "answers": {m: [dict(a, id=p["id"], group=p["group"]) for a, p in zip(answers[m], prompts)] for m in cfg.models}}
