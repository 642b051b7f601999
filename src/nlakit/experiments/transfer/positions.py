"""Prompts, the model's answers, the positions read in each chat text (``prompt``, ``last_prompt``, ``response``), and the
paired positions on other texts that the maps and the fitted baselines are fitted on."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress, chat_prefix

if TYPE_CHECKING:
    from nlakit.experiments.transfer.config import TransferConfig


def load_prompts(cfg: TransferConfig) -> list[dict]:
    """Held-out behaviour prompts then corpus prompts: ``[{"id", "group", "prompt"}]`` (seeded)."""
    from nlakit.experiments.transfer.score import behaviour_prompts, corpus_prompts

    prompts = behaviour_prompts(cfg.dataset, cfg.n_behaviour, cfg.seed) if cfg.n_behaviour else []
    if cfg.n_corpus:
        prompts += corpus_prompts(cfg.corpus, cfg.n_corpus, cfg.seed)
    return prompts


def pick_positions(text: str, prefix: str, prompt: str, offsets: Sequence[tuple[int, int]], *, n_prompt: int, n_response: int,
                   rng_key: str) -> list[dict]:
    """Positions of one chat text: ``[{"pos", "type", "r"}]`` (``r`` = index among answer tokens, -1 otherwise).

    Prompt positions are sampled from the tokens inside the user message with `rng_key`, so every model (same
    tokenizer, same prompt) gets the same ones.
    """
    start = prefix.find(prompt)
    end_prefix = len(prefix)
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    inside = [i for i, s, e in real if start >= 0 and s >= start and e <= start + len(prompt)]
    out = [{"pos": i, "type": "prompt", "r": -1} for i in sorted(random.Random(rng_key).sample(inside, min(n_prompt, len(inside))))]
    before = [i for i, s, e in real if s < end_prefix]
    if before:
        out.append({"pos": before[-1], "type": "last_prompt", "r": -1})
    answer = [i for i, s, e in real if s >= end_prefix]
    out += [{"pos": i, "type": "response", "r": r} for r, i in enumerate(answer[:n_response])]
    return [p for j, p in enumerate(out) if p["pos"] not in {q["pos"] for q in out[:j]}]  # a short prompt may repeat one


def answer_phase(text: str, prefix_len: int, offsets, p: dict) -> str:
    """``pre``/``post`` for an answer token: has the answer through this token any frustration-lexicon hit?"""
    from nlakit.experiments.transfer.frustration import lexicon_hits

    if p["type"] != "response":
        return p["type"]
    written = text[prefix_len : offsets[p["pos"]][1]]
    return "response_post" if lexicon_hits(written) else "response_pre"


@dataclass
class ModelRun:
    """One model's answers and its activations at the chosen positions (rows in prompt order)."""

    name: str
    spec: str
    kind: str
    answers: list[str]
    texts: list[str]
    rows: list[dict]  # {"prompt": i, "group", "type", "phase", "r", "pos", "token"}
    samples: object  # nlakit.baselines.Samples over `texts`
    vectors: torch.Tensor  # (N, d) = samples.vectors


def run_model(target, prompts: list[dict], layer: int, cfg: TransferConfig, progress: Progress | None = None,
              kind: str = "base") -> ModelRun:
    """Answer every prompt with `target`, then extract layer-`layer` activations at the chosen positions."""
    from nlakit.activations import extract
    from nlakit.baselines import Samples

    answers: list[str] = []
    for s in range(0, len(prompts), cfg.batch_size):
        answers += target.generate([p["prompt"] for p in prompts[s : s + cfg.batch_size]], max_new_tokens=cfg.max_new_tokens,
                                   batch_size=cfg.batch_size, seed=cfg.seed)
        if progress is not None:
            progress(f"answer {target.name}", len(answers), len(prompts))
    prefixes = [chat_prefix(target, p["prompt"]) for p in prompts]
    texts = [pre + a for pre, a in zip(prefixes, answers)]
    enc = target.encode(texts)
    chosen = [pick_positions(t, pre, p["prompt"], enc.offsets[i], n_prompt=cfg.prompt_positions, n_response=cfg.response_positions,
                             rng_key=f"{cfg.seed}:{p['id']}") for i, (t, pre, p) in enumerate(zip(texts, prefixes, prompts))]
    by_text = {t: [c["pos"] for c in ch] for t, ch in zip(texts, chosen)}
    docs = extract(target, texts, layer, lambda text, n: by_text[text], batch_size=cfg.batch_size, include_sinks=True)
    rows = []
    for i, (d, ch) in enumerate(zip(docs, chosen)):
        assert d.positions == [c["pos"] for c in ch]
        for c in ch:
            rows.append({"prompt": i, "group": prompts[i]["group"], "type": c["type"], "r": c["r"], "pos": c["pos"],
                         "phase": answer_phase(texts[i], len(prefixes[i]), enc.offsets[i], c), "token": d.token_text(c["pos"])})
    samples = Samples.from_docs(docs)
    return ModelRun(name=target.name, spec=target.spec, kind=kind, answers=answers, texts=texts, rows=rows, samples=samples,
                    vectors=samples.vectors)


# ---------------------------------------------------------------------------------------------------------------------
# Paired "other text" positions (ridge maps, fitted baselines)


def map_texts(cfg: TransferConfig) -> list[str]:
    """Training-corpus documents for the maps: enough for the largest map size, seeded order."""
    from nlakit.io import read_jsonl

    rows = [r for r in read_jsonl(cfg.map_corpus) if isinstance(r.get("text"), str) and r["text"].strip()]
    if not rows:
        raise NlakitError(f"{cfg.map_corpus} holds no documents with a 'text' field", "pass --map-corpus TRAIN.jsonl.gz")
    random.Random(cfg.seed + 1).shuffle(rows)
    need = -(-max(cfg.map_sizes) // cfg.map_positions_per_doc) * 2  # slack for short documents
    return [r["text"] for r in rows[:need]]


def map_positions(target, texts: list[str], layer: int, cfg: TransferConfig):
    """Seeded positions (depending only on the text, so identical across models) and their activations, sinks kept."""
    from nlakit.activations import extract
    from nlakit.evaluate import clip_text

    def pick(text: str, n_tokens: int) -> list[int]:
        cands = list(range(min(cfg.map_min_position, n_tokens - 1), n_tokens))
        return sorted(random.Random(f"{cfg.seed}:map:{text}").sample(cands, min(cfg.map_positions_per_doc, len(cands))))

    clipped = [clip_text(target, t, cfg.map_max_tokens) for t in texts]
    return extract(target, clipped, layer, pick, batch_size=cfg.batch_size, include_sinks=True)


def paired(base_docs, var_docs, n_max: int):
    """Aligned (variant, base) rows where neither is an attention sink, first `n_max`; plus each side as Samples."""
    from nlakit.activations import DocActivations
    from nlakit.baselines import Samples

    keep_b, keep_v = [], []
    n = 0
    for b, v in zip(base_docs, var_docs):
        if b.token_ids != v.token_ids:
            raise NlakitError("a variant tokenizes the map texts differently from the base",
                              "pass variants that share the base model's tokenizer (as `nlakit variants build` saves them)")
        ok = [j for j, (sb, sv) in enumerate(zip(b.is_sink, v.is_sink)) if not sb and not sv][: max(n_max - n, 0)]
        n += len(ok)
        for d, out in ((b, keep_b), (v, keep_v)):
            out.append(DocActivations(text=d.text, layer=d.layer, token_ids=d.token_ids, offsets=d.offsets,
                                      positions=[d.positions[j] for j in ok], vectors=d.vectors[ok], is_sink=[False] * len(ok)))
    sb, sv = Samples.from_docs(keep_b), Samples.from_docs(keep_v)
    return sv.vectors, sb.vectors, sb, sv
