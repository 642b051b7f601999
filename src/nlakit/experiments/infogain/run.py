"""`nlakit experiment infogain`: do NLA explanations say more about what the model will do than its output so far?

    nlakit experiment infogain --target smollm2 --nla default --label denies --n-prompts 160 --out docs/experiments/infogain
    nlakit experiment infogain --label checkpoint --variants sft=runs/variants/sft,dpo=runs/variants/dpo

1. Prompts: impossible-maths prompts from the shipped behaviour dataset (seeded sample), or a JSONL of ``prompt`` rows.
2. Every model in the list (the base target, named ``it``, plus any ``name=path`` variants) answers each prompt
   greedily (``response_tokens`` tokens); the label is read off what it does later (`LABELS`):
   ``denies`` (the answer says the claim is false / impossible / unsolved), ``frustrated`` (the frustration lexicon
   hits the answer), ``checkpoint`` (which model produced the activation), and two cheap answer-form labels:
   ``opens_with_to`` (the answer opens "To …") and ``writes_equation`` (an "=" within the answer).
3. Read positions, before the labelled behaviour is complete: the last prompt token (``last_prompt``) and response
   tokens ``response_k`` (k 0-based, teacher-forced on the model's own answer). Each position's layer-L activation
   (from the model that wrote the answer) is explained by the NLA through the engine and scored (fve_nrm, cos).
4. Per label and position type, cross-validated logistic regression (`probe`) on TF-IDF of the output text so far
   (the chat text up to and including the token), of the explanation alone (the NLA's text only: it never sees the
   context), of both; a linear probe on the raw activation; a shuffled-label control. Accuracy / AUROC with 95%
   intervals and the paired gain of both over output only.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from nlakit.errors import NlakitError
from nlakit.experiments.common import BEHAVIOUR_DATASET, Progress, chat_prefix, hardware, lexicon_hits
from nlakit.experiments.infogain import probe

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BASE_NAME = "it"
DENIES = re.compile(
    r"\b(?:not (?:true|possible|prime|valid|correct|a (?:prime|perfect square|rational))|impossible|no (?:such|solution|real|integer|"
    r"positive|way)|(?:can ?not|can't|cannot) be|isn't (?:true|possible|prime)|is false|false statement|doesn'?t (?:exist|hold)|"
    r"does not (?:exist|hold)|unsolved|open problem|unproven|not been (?:proven|solved))\b", re.IGNORECASE)
LABELS = {
    "denies": lambda name, answer: "denies" if DENIES.search(answer or "") else "goes_along",
    "frustrated": lambda name, answer: "frustrated" if lexicon_hits(answer or "") else "calm",
    "checkpoint": lambda name, answer: name,
    # answer form (cheap, decided by the answer's first word): a procedural "To solve/find/prove …" opening or not
    "opens_with_to": lambda name, answer: "to" if re.match(r"\s*To\b", answer or "") else "other",
    # answer form, decided later in the answer: it writes an equation ("=") within its response_tokens
    "writes_equation": lambda name, answer: "equation" if "=" in (answer or "") else "prose",
}


@dataclass(frozen=True)
class InfogainConfig:
    """Every knob of an infogain run (saved in the results JSON)."""

    target: str = "smollm2"
    nla: str = "default"
    labels: tuple[str, ...] = ("denies",)
    variants: tuple[str, ...] = ()  # "name=path" (or a path: named after its folder); the base target is "it"
    prompts: str | None = None  # JSONL with "prompt" per row; None: the shipped impossible-maths prompts
    n_prompts: int = 160
    seed: int = 0
    response_tokens: int = 48  # answer length the label is read from
    response_positions: tuple[int, ...] = (0, 2)  # response tokens read (0-based), besides the last prompt token
    max_new_tokens: int = 150  # AV explanation cap
    batch_size: int = 64
    n_folds: int = 5
    n_boot: int = 500
    n_examples: int = 6
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        problems = []
        bad = [x for x in self.labels if x not in LABELS]
        if bad or not self.labels:
            problems.append(f"unknown labels {bad or '(none)'} (known: {list(LABELS)})")
        if "checkpoint" in self.labels and not self.variants:
            problems.append("the checkpoint label needs --variants (at least one model besides the base)")
        for name in ("n_prompts", "response_tokens", "max_new_tokens", "batch_size", "n_boot"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.n_folds < 2:
            problems.append("n_folds must be >= 2")
        if any(k < 0 or k >= self.response_tokens for k in self.response_positions):
            problems.append("response_positions must lie in 0..response_tokens-1")
        if self.prompts is not None and not Path(self.prompts).exists():
            problems.append(f"prompts file {self.prompts} does not exist")
        if problems:
            raise NlakitError("bad infogain settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def variant_specs(self) -> list[tuple[str, str]]:
        out = []
        for v in self.variants:
            name, sep, path = v.partition("=")
            out.append((name, path) if sep else (Path(v).name, v))
        return out


def load_prompts(cfg: InfogainConfig) -> list[dict]:
    """``[{"id", "prompt"}]``: the JSONL rows, or `n_prompts` seeded prompts from the shipped dataset."""
    from nlakit.io import read_jsonl

    rows = list(read_jsonl(cfg.prompts if cfg.prompts is not None else BEHAVIOUR_DATASET))
    rows = [r for r in rows if isinstance(r.get("prompt"), str) and r["prompt"].strip()]
    if not rows:
        raise NlakitError("no row with a 'prompt' string", "write one JSON object per line with a prompt")
    if cfg.prompts is None:
        random.Random(cfg.seed).shuffle(rows)
    return [{"id": str(r.get("id", i)), "prompt": r["prompt"]} for i, r in enumerate(rows[: cfg.n_prompts])]


def _read_model(name: str, target, prompts: list[dict], layer: int, cfg: InfogainConfig, progress: Progress | None) -> list[dict]:
    """One model: its answers, and the activations + context text at each read position of each prompt."""
    from nlakit.activations import extract

    answers: list[str] = []
    for s in range(0, len(prompts), cfg.batch_size):
        answers += target.generate([p["prompt"] for p in prompts[s : s + cfg.batch_size]], chat=True, max_new_tokens=cfg.response_tokens,
                                   temperature=0.0, seed=cfg.seed, batch_size=cfg.batch_size)
        if progress is not None:
            progress(f"generate ({name})", len(answers), len(prompts))
    prefixes = [chat_prefix(target, p["prompt"]) for p in prompts]
    texts = [pre + a for pre, a in zip(prefixes, answers)]
    plan: dict[str, tuple[list[str], list[int]]] = {}  # chat text -> (position names, token indices)
    for text, pre in zip(texts, prefixes):
        offs = target.encode([text]).offsets[0]
        last = max(i for i, (s, e) in enumerate(offs) if s < len(pre) and e > s)
        resp = [i for i, (s, e) in enumerate(offs) if s >= len(pre) and e > s]
        pos, names = [last], ["last_prompt"]
        for k in cfg.response_positions:
            if k < len(resp):
                pos.append(resp[k])
                names.append(f"response_{k}")
        plan[text] = (names, pos)
    docs = extract(target, texts, layer, lambda text, n: plan[text][1], batch_size=8, include_sinks=True)
    rows = []
    for i, (p, d, a) in enumerate(zip(prompts, docs, answers)):
        names, pos = plan[d.text]
        for j, (kind, q) in enumerate(zip(names, pos)):
            rows.append({"model": name, "prompt": i, "prompt_id": p["id"], "position": kind, "pos": q, "token": d.token_text(q),
                         "context": d.text[: d.offsets[q][1]], "answer": a, "vector": d.vectors[j]})
    return rows


def run(cfg: InfogainConfig, *, targets: list[tuple[str, Any]] | None = None, nla=None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the experiment; returns the results JSON (a dict).

    `targets` (tests, or pre-loaded models): ``[(name, Target), ...]``, base first; the NLA reads them all. Without it
    the base is ``cfg.target`` (named ``it``) and each ``cfg.variants`` entry is loaded with `load_target`.

    Returns:
        {"kind": "infogain", "config", "hardware", "models", "nla", "label_rates": {label: {model: {class: n}}},
         "results": {label: {position: probe.evaluate_label(...) + nla fve}}, "examples", "runtime_s"}
    """
    import torch

    from nlakit.evaluate import EvalConfig, aggregate_row, score_vectors

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if targets is None:
        from nlakit.targets import load_target

        targets = [(BASE_NAME, load_target(cfg.target, device=cfg.device, dtype=cfg.dtype))]
        targets += [(n, load_target(p, device=cfg.device, dtype=cfg.dtype)) for n, p in cfg.variant_specs()]
    names = [n for n, _ in targets]
    if len(set(names)) != len(names):
        raise NlakitError(f"model names repeat: {names}", "name each variant differently (name=path)")
    if "checkpoint" in cfg.labels and len(targets) < 2:
        raise NlakitError("the checkpoint label needs two models or more", "pass --variants")
    if nla is None:
        from nlakit.bundle import load_nla

        nla = load_nla(cfg.nla, device=cfg.device, dtype=cfg.dtype, target=targets[0][1])
    for n, t in targets:
        if t.d_model != nla.d_model:
            raise NlakitError(f"model {n} has d_model {t.d_model}, the NLA {nla.d_model}", "use variants of the NLA's target")
    timings["load"] = time.perf_counter() - t_start

    prompts = load_prompts(cfg)
    t0 = time.perf_counter()
    rows: list[dict] = []
    for n, t in targets:
        rows += _read_model(n, t, prompts, nla.layer, cfg, progress)
    timings["generate_and_extract"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vectors = torch.stack([r.pop("vector") for r in rows])
    ecfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, explain_batch_size=cfg.batch_size, seed=cfg.seed, baselines=("mean",),
                      n_positions=max(1, len(rows)), min_position=0, max_tokens=4096)
    part = score_vectors(nla, vectors, reference=nla.require_reference(), cfg=ecfg, progress=progress)
    for r, s in zip(rows, part["rows"]):
        r |= {"explanation": s["explanation"], "ok": s["ok"], "fve_nrm": s["fve_nrm"], "cos": s["cos"]}
    timings["explain_and_reconstruct"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kinds = ["last_prompt"] + [f"response_{k}" for k in cfg.response_positions]
    label_rates: dict[str, dict] = {}
    results: dict[str, dict] = {}
    for label in cfg.labels:
        fn = LABELS[label]
        for r in rows:
            r.setdefault("labels", {})[label] = fn(r["model"], r["answer"])
        label_rates[label] = {n: dict(sorted({c: sum(1 for r in rows if r["model"] == n and r["position"] == "last_prompt" and r["labels"][label] == c)
                                              for c in {r["labels"][label] for r in rows}}.items())) for n in names}
        models = names if label == "checkpoint" else names[:1]  # behaviour labels: the base model's own answers
        results[label] = {}
        for kind in kinds:
            idx = [i for i, r in enumerate(rows) if r["position"] == kind and r["model"] in models]
            if not idx:
                continue
            sub = [rows[i] for i in idx]
            res = probe.evaluate_label([r["labels"][label] for r in sub], [r["prompt"] for r in sub], [r["context"] for r in sub],
                                       [r["explanation"] for r in sub], vectors[idx].numpy(), n_folds=cfg.n_folds, n_boot=cfg.n_boot,
                                       seed=cfg.seed)
            ix = torch.tensor(idx, dtype=torch.long)
            res["nla_scores"] = aggregate_row("nla", {k: v[ix] for k, v in part["per_item"].items()}, cfg.seed)
            results[label][kind] = res
            if progress is not None:
                progress(f"probes ({label})", kinds.index(kind) + 1, len(kinds))
    timings["probes"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    rng = random.Random(cfg.seed)
    examples = rng.sample(rows, min(cfg.n_examples, len(rows)))
    keep = ("model", "prompt_id", "position", "token", "labels", "fve_nrm", "explanation")
    return {"kind": "infogain", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "hardware": hardware(),
            "models": [{"name": n, "spec": t.spec} for n, t in targets], "target": {"spec": targets[0][1].spec, "name": targets[0][1].name},
            "nla": {"source": nla.source, "layer": nla.layer, "parse_rate": part["parse_rate"],
                    "mean_explanation_tokens": part["mean_explanation_tokens"]},
            "n_prompts": len(prompts), "positions": kinds, "label_rates": label_rates, "label_patterns": {"denies": DENIES.pattern},
            "results": results,
            "examples": [{k: r[k] for k in keep} | {"answer": r["answer"][:300]} for r in examples],
            "answers": [{"model": r["model"], "prompt_id": r["prompt_id"], "answer": r["answer"], "labels": r["labels"]}
                        for r in rows if r["position"] == "last_prompt"],
            "rows": [{k: r[k] for k in ("model", "prompt", "position", "token", "labels", "fve_nrm", "cos", "explanation")} for r in rows],
            "runtime_s": {k: round(v, 3) for k, v in timings.items()}}
