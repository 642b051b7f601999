"""`nlakit experiment positions`: how much does the token position matter to an NLA's explanation?

    nlakit experiment positions --target smollm2 --nla default --n-prompts 6 --generate 16 --out docs/experiments/positions

1. Inputs: chat prompts or plain texts (JSONL rows with ``prompt`` or ``text``; default: impossible-maths prompts
   from the shipped behaviour dataset), optionally followed by the target's own greedy continuation
   (``--generate N`` tokens).
2. Every token of the chosen span (``all``, or regions ``template``, ``user``, ``header``, ``generated``, ``text``;
   attention sinks — position 0 and tokens whose norm is SINK_NORM_RATIO× the text's median — are skipped; special-id
   tokens such as <|im_start|> are kept unless ``include_special`` is off) is explained through the engine, reconstructed by the AR and scored (fve_nrm, cos)
   beside the baselines (`nlakit.baselines`; fitted ones use the maps the bundle carries).
3. Drift between adjacent explained positions (`drift`): sentence-embedding cosine, word Jaccard, claim survival;
   with a lag curve (positions k apart in one text) and a random-pair reference (positions of different texts).
4. Tables per token class and per region with 95% intervals (NLA, each baseline, NLA − ridge_token paired), the
   worst-reconstructed tokens of each text, and a few windows of adjacent explanations.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlakit.activations import SINK_NORM_RATIO
from nlakit.errors import NlakitError
from nlakit.experiments.common import BEHAVIOUR_DATASET, Progress, chat_prefix, hardware
from nlakit.experiments.positions import drift as D
from nlakit.experiments.positions.tokens import CLASSES, REGIONS, SPANS, Layout, chat_layout, token_class

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_BASELINES = ("mean", "ridge_token", "echo_ar8")
MAX_LAG = 8


@dataclass(frozen=True)
class PositionsConfig:
    """Every knob of a positions run (saved in the results JSON)."""

    target: str = "smollm2"
    nla: str = "default"
    prompts: str | None = None  # JSONL with "prompt" (chat) or "text" (plain) per row; None: the shipped maths prompts
    n_prompts: int = 6
    seed: int = 0
    span: tuple[str, ...] = ("all",)
    generate: int = 16  # first N tokens of the target's greedy continuation (chat prompts only; 0 = none)
    max_new_tokens: int = 150  # AV explanation cap
    batch_size: int = 64
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    embedder: str = "minilm"  # minilm (offline; TF-IDF fallback, labelled) or tfidf
    claim_threshold: float = 0.8
    n_worst: int = 5
    include_special: bool = True  # explain special-id tokens (<|im_start|>…) unless they are sinks by norm; False: skip them
    n_windows: int = 3
    window: int = 4
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        problems = []
        bad = [s for s in self.span if s not in SPANS]
        if bad or not self.span:
            problems.append(f"unknown span {bad or '(empty)'} (known: {list(SPANS)})")
        for name in ("n_prompts", "max_new_tokens", "batch_size", "window"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.generate < 0 or self.n_worst < 0 or self.n_windows < 0:
            problems.append("generate, n_worst and n_windows must be >= 0")
        if self.embedder not in ("minilm", "tfidf"):
            problems.append(f"unknown embedder {self.embedder!r} (minilm or tfidf)")
        if not 0.0 < self.claim_threshold <= 1.0:
            problems.append("claim_threshold must be in (0, 1]")
        if self.prompts is not None and not Path(self.prompts).exists():
            problems.append(f"prompts file {self.prompts} does not exist")
        if problems:
            raise NlakitError("bad positions settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_inputs(cfg: PositionsConfig) -> list[dict]:
    """``[{"id", "prompt"} | {"id", "text"}]``: the JSONL rows, or `n_prompts` seeded maths prompts (one per template)."""
    from nlakit.io import read_jsonl

    if cfg.prompts is not None:
        rows = [r for r in read_jsonl(cfg.prompts) if isinstance(r.get("prompt") or r.get("text"), str)]
        if not rows:
            raise NlakitError(f"{cfg.prompts} has no row with a 'prompt' or 'text' string", "write one JSON object per line")
        return [{"id": str(r.get("id", i)), **({"prompt": r["prompt"]} if r.get("prompt") else {"text": r["text"]})}
                for i, r in enumerate(rows[: cfg.n_prompts])]
    rows = list(read_jsonl(BEHAVIOUR_DATASET))
    random.Random(cfg.seed).shuffle(rows)
    seen, out = set(), []
    for r in rows:  # one prompt per template, so the texts differ
        if r["template"] not in seen:
            seen.add(r["template"])
            out.append({"id": r["id"], "prompt": r["prompt"]})
        if len(out) == cfg.n_prompts:
            break
    return out


def build_texts(target, inputs: list[dict], cfg: PositionsConfig, progress: Progress | None = None) -> list[dict]:
    """Each input as the text that is read: ``{"id", "text", "layout", "generated"}`` (chat prompt + continuation)."""
    out = []
    chats = [i for i in inputs if "prompt" in i]
    answers: dict[str, str] = {}
    if chats and cfg.generate:
        gen = target.generate([c["prompt"] for c in chats], chat=True, max_new_tokens=cfg.generate, temperature=0.0,
                              seed=cfg.seed, batch_size=cfg.batch_size)
        answers = {c["id"]: a for c, a in zip(chats, gen)}
        if progress is not None:
            progress("generate", len(chats), len(chats))
    for item in inputs:
        if "text" in item:
            out.append({"id": item["id"], "text": item["text"], "layout": Layout(chat=False), "generated": None})
            continue
        prefix = chat_prefix(target, item["prompt"])
        without = target.chat_text([{"role": "user", "content": item["prompt"]}], add_generation_prompt=False)
        bos = getattr(target.tokenizer, "bos_token", None)
        if bos and without.startswith(bos) and not prefix.startswith(bos):
            without = without[len(bos) :]
        ans = answers.get(item["id"], "")
        out.append({"id": item["id"], "text": prefix + ans, "layout": chat_layout(prefix, without, item["prompt"]), "generated": ans})
    return out


def _summ(x: torch.Tensor | np.ndarray, seed: int) -> dict:
    from nlakit.metrics import summarize

    return summarize(x, seed=seed)


def _table(groups: dict[str, list[int]], per: dict[str, dict[str, torch.Tensor]], seed: int) -> dict[str, dict]:
    """Per group: n, and per predictor fve_nrm (mean, ci95) and cos; plus NLA − ridge_token (paired, ci95)."""
    out = {}
    for g, idx in groups.items():
        if not idx:
            continue
        ix = torch.tensor(idx, dtype=torch.long)
        row: dict[str, Any] = {"n": len(idx)}
        for name, m in per.items():
            s = _summ(m["fve_nrm"][ix], seed)
            row[name] = {"fve_nrm": s["mean"], "fve_nrm_ci95": s["ci95"], "cos": float(m["cos"][ix].mean())}
        if "ridge_token" in per:
            s = _summ(per["nla"]["fve_nrm"][ix] - per["ridge_token"]["fve_nrm"][ix], seed)
            row["nla_minus_ridge_token"] = {"mean": s["mean"], "ci95": s["ci95"]}
        out[g] = row
    return out


def _drift(emb: D.Embedder, texts: list[dict], cfg: PositionsConfig) -> dict:
    """Adjacent-pair stats per text, the lag curve, and a random-pair reference (explanations of different texts)."""
    by_text = [{t["pos"]: t["explanation"] for t in tx["tokens"] if t["explained"]} for tx in texts]
    lag_pairs: dict[int, list[tuple[str, str]]] = {k: [] for k in range(1, MAX_LAG + 1)}
    adjacent_keys = []  # (text index, pos)
    for ti, ex in enumerate(by_text):
        for p in sorted(ex):
            for k in range(1, MAX_LAG + 1):
                if p + k in ex:
                    lag_pairs[k].append((ex[p], ex[p + k]))
                    if k == 1:
                        adjacent_keys.append((ti, p))
    rng = random.Random(cfg.seed)
    flat = [(ti, e) for ti, ex in enumerate(by_text) for e in ex.values()]
    rand_pairs = []
    if len(by_text) > 1 and flat:
        for _ in range(min(400, len(flat) * 2)):
            (ta, a), (tb, b) = rng.choice(flat), rng.choice(flat)
            if ta != tb:
                rand_pairs.append((a, b))
    emb.fit([e for _, e in flat])
    lag_stats = {k: D.pair_stats(emb, v, threshold=cfg.claim_threshold) for k, v in lag_pairs.items()}
    rand_stats = D.pair_stats(emb, rand_pairs, threshold=cfg.claim_threshold)

    def agg(stats: list[dict]) -> dict:
        out = {"n": len(stats)}
        for key in ("emb_cos", "jaccard", "claim_survival"):
            vals = [s[key] for s in stats if s[key] is not None]
            s = _summ(np.array(vals, dtype=float), cfg.seed) if vals else {"mean": None, "ci95": [None, None]}
            out[key], out[key + "_ci95"] = s["mean"], s["ci95"]
        return out

    for (ti, p), s in zip(adjacent_keys, lag_stats[1]):  # the per-token drift shown in each text's curve
        tok = next(t for t in texts[ti]["tokens"] if t["pos"] == p)
        tok["drift_next"] = s
    return {"adjacent": agg(lag_stats[1]), "random_pair": agg(rand_stats),
            "by_lag": [{"lag": k, **agg(v)} for k, v in lag_stats.items() if v], "threshold": cfg.claim_threshold}


def _windows(texts: list[dict], cfg: PositionsConfig) -> list[dict]:
    """Per text (up to n_windows texts): the `window` adjacent explained positions around its sharpest drop."""
    out = []
    for ti, tx in enumerate(texts):
        if len(out) >= cfg.n_windows:
            break
        toks = [t for t in tx["tokens"] if t["explained"]]
        drops = [(t["drift_next"]["emb_cos"], j) for j, t in enumerate(toks) if t.get("drift_next")]
        if not drops:
            continue
        _, j = min(drops)
        a = max(0, min(j - cfg.window // 2 + 1, len(toks) - cfg.window))
        out.append({"text": ti, "id": tx["id"], "cells": [{k: t[k] for k in ("pos", "token", "region", "cls", "fve_nrm", "explanation")}
                                                          | {"drift_next": (t.get("drift_next") or {}).get("emb_cos")}
                                                          for t in toks[a : a + cfg.window]]})
    return out


def run(cfg: PositionsConfig, *, target=None, nla=None, embedder: D.Embedder | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run the experiment; returns the results JSON (a dict). `target`/`nla`/`embedder` may be passed pre-loaded (tests).

    Returns:
        {"kind": "positions", "config", "hardware", "target", "nla", "embedder", "aggregate": [rows NLA first],
         "by_class", "by_region", "drift": {adjacent, random_pair, by_lag}, "texts": [{id, text, tokens: [{pos, token,
         region, cls, explained, fve_nrm, cos, baselines, explanation, drift_next}], worst}], "windows", "runtime_s"}
    """
    from nlakit import baselines as B
    from nlakit.activations import extract
    from nlakit.evaluate import EvalConfig, aggregate_row, score_vectors
    from nlakit.metrics import score

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if target is None:
        from nlakit.targets import load_target

        target = load_target(cfg.target, device=cfg.device, dtype=cfg.dtype)
    if nla is None:
        from nlakit.bundle import load_nla

        nla = load_nla(cfg.nla, device=cfg.device, dtype=cfg.dtype, target=target)
    if nla.d_model != target.d_model:
        raise NlakitError(f"the NLA has d_model {nla.d_model}, the target {target.d_model}", "pass the NLA's own target")
    timings["load"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    items = build_texts(target, load_inputs(cfg), cfg, progress)
    timings["generate"] = time.perf_counter() - t0
    special = set(getattr(target.tokenizer, "all_special_ids", []) or [])
    spans = set(REGIONS) if "all" in cfg.span else set(cfg.span)
    docs = extract(target, [it["text"] for it in items], nla.layer, "all", batch_size=8, include_sinks=True)
    keep_docs, meta = [], []
    for it, d in zip(items, docs):
        regions = [it["layout"].region(s) for s, _ in d.offsets]
        classes = [token_class(d.text, d.offsets, i, d.token_ids[i], special) for i in range(len(d.offsets))]
        norms = d.vectors.norm(dim=-1)
        high = norms > SINK_NORM_RATIO * norms.median().clamp_min(1e-6)  # the attention sinks proper: position 0, huge norm
        sink = [p == 0 or bool(high[j]) or (d.is_sink[j] and not cfg.include_special) for j, p in enumerate(d.positions)]
        pick = [j for j, p in enumerate(d.positions) if not sink[j] and regions[p] in spans]
        d = type(d)(text=d.text, layer=d.layer, token_ids=d.token_ids, offsets=d.offsets, positions=[d.positions[j] for j in pick],
                    vectors=d.vectors[pick], is_sink=[False] * len(pick))
        keep_docs.append(d)
        meta.append((regions, classes))
    test = B.Samples.from_docs(keep_docs)
    if len(test) == 0:
        raise NlakitError(f"no explainable token in span {list(cfg.span)}", "pick another --span (or --generate N for 'generated')")

    t0 = time.perf_counter()
    ecfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, explain_batch_size=cfg.batch_size, seed=cfg.seed, baselines=cfg.baselines,
                      n_positions=max(1, len(test)), min_position=0, max_tokens=4096)
    ref = nla.require_reference()
    part = score_vectors(nla, test.vectors, reference=ref, cfg=ecfg, progress=progress)
    timings["explain_and_reconstruct"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = B.compute(tuple(cfg.baselines), target=target, ar=nla.ar, layer=nla.layer, ref=ref, train=None, test=test,
                      batch_size=cfg.batch_size, stored=getattr(nla, "baselines", None))
    per = {"nla": part["per_item"]} | {k: score(p.vectors, test.vectors, ref, direction_only=p.direction_only) for k, p in preds.items()}
    timings["baselines"] = time.perf_counter() - t0

    texts: list[dict] = []
    for ti, (it, d, (regions, classes)) in enumerate(zip(items, keep_docs, meta)):
        texts.append({"id": it["id"], "text": d.text, "generated": it["generated"], "chat": it["layout"].chat, "tokens": []})
        row_of = {}
        for i, (doc_i, p) in enumerate(zip(test.doc, test.pos)):
            if doc_i == ti:
                row_of[p] = i
        for p, (s, e) in enumerate(d.offsets):
            tok = {"pos": p, "token": d.text[s:e], "region": regions[p], "cls": classes[p], "explained": p in row_of}
            if p in row_of:
                i = row_of[p]
                r = part["rows"][i]
                tok |= {"row": i, "fve_nrm": r["fve_nrm"], "cos": r["cos"], "ok": r["ok"], "explanation": r["explanation"],
                        "baselines": {k: {"fve_nrm": float(m["fve_nrm"][i]), "cos": float(m["cos"][i])} for k, m in per.items() if k != "nla"}}
            texts[-1]["tokens"].append(tok)
        scored = sorted((t for t in texts[-1]["tokens"] if t["explained"]), key=lambda t: t["fve_nrm"])
        texts[-1]["worst"] = [{k: t[k] for k in ("pos", "token", "region", "cls", "fve_nrm", "cos", "explanation")}
                              | {"ridge_token": t["baselines"].get("ridge_token", {}).get("fve_nrm")} for t in scored[: cfg.n_worst]]

    row_cls = [meta[doc_i][1][p] for doc_i, p in zip(test.doc, test.pos)]
    row_reg = [meta[doc_i][0][p] for doc_i, p in zip(test.doc, test.pos)]
    by_class = _table({c: [i for i, x in enumerate(row_cls) if x == c] for c in CLASSES}, per, cfg.seed)
    by_region = _table({g: [i for i, x in enumerate(row_reg) if x == g] for g in REGIONS}, per, cfg.seed)

    t0 = time.perf_counter()
    emb = embedder or D.load_embedder(cfg.embedder)
    drift = _drift(emb, texts, cfg)
    timings["drift"] = time.perf_counter() - t0
    for tx in texts:  # the row index was only needed to join; keep the JSON lean
        for t in tx["tokens"]:
            t.pop("row", None)
    timings["total"] = time.perf_counter() - t_start
    return {"kind": "positions", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "hardware": hardware(),
            "target": {"spec": target.spec, "name": target.name},
            "nla": {"source": nla.source, "layer": nla.layer, "parse_rate": part["parse_rate"],
                    "mean_explanation_tokens": part["mean_explanation_tokens"]},
            "embedder": {"name": emb.name, "note": emb.note}, "n_texts": len(texts), "n_positions": len(test),
            "aggregate": [aggregate_row(k, m, cfg.seed) for k, m in per.items()],
            "skipped_baselines": [b for b in cfg.baselines if b not in preds],
            "by_class": by_class, "by_region": by_region, "drift": drift, "texts": texts, "windows": _windows(texts, cfg),
            "classes": list(CLASSES), "regions": list(REGIONS), "runtime_s": {k: round(v, 3) for k, v in timings.items()}}
