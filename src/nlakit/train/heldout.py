"""Held-out evaluation used inside training: AV (greedy) -> explanation -> AR -> fve_nrm, on fixed held-out positions."""

from __future__ import annotations

import logging
import os

import torch

from nlakit.baselines import Samples
from nlakit.metrics import Reference, by_position, score, summarize
from nlakit.reconstructor import Reconstructor
from nlakit.verbalizer import Explanation, Verbalizer

log = logging.getLogger(__name__)


def generate(av: Verbalizer, vectors: torch.Tensor, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 256, engine: str = "auto", first_row: int = 0) -> list[list[int]]:
    """Token rows from the AV via `nlakit.engine.generate` (EOS excluded; trailing -1 = hit the cap).

    ``NLAKIT_ENGINE=hf`` in the environment forces plain HF generate. If the fast path fails during training, the
    call falls back to HF generate with a warning rather than losing the run (unless ``engine="fast"`` was asked for).
    """
    from nlakit import engine as fast

    engine = os.environ.get("NLAKIT_ENGINE", engine)
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size)
    try:
        return fast.generate(av, vectors, engine=engine, seed=seed, first_row=first_row, **kw)
    except Exception as e:
        if engine != "auto":
            raise
        log.warning("fast engine failed (%s: %s); falling back to HF generate", type(e).__name__, e)
        return fast.generate_hf(av, vectors, seed=seed + first_row, **kw)


def ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def copy_rate(explanation: str, context: str, n: int = 4) -> float:
    """Fraction of the explanation's word n-grams that also occur in the context (the AV never sees the context)."""
    e = ngrams(explanation, n)
    return len(e & ngrams(context, n)) / len(e) if e else 0.0


def by_kind(values: torch.Tensor, rows: list[dict]) -> dict[str, dict]:
    """`summarize` of per-position values grouped by the rows' document kind (prose, fiction, chat, ...)."""
    kinds = sorted({r.get("kind", "text") for r in rows})
    return {k: summarize(values[[i for i, r in enumerate(rows) if r.get("kind", "text") == k]]) for k in kinds}


@torch.no_grad()
def evaluate_heldout(av: Verbalizer, ar: Reconstructor, eval_pairs, ref: Reference, *, max_new_tokens: int = 96,
                     dtype=None, n: int | None = None, n_examples: int = 20, seed: int = 0) -> dict:
    """Score the NLA on held-out pairs; failed parses score as the AR reading the raw text (reported separately)."""
    vectors = eval_pairs.vectors[:n] if n else eval_pairs.vectors
    rows_meta = eval_pairs.rows[: vectors.shape[0]]
    was_training = av.model.training
    av.model.eval()
    with torch.autocast(device_type=av.device.type, dtype=dtype, enabled=dtype is not None):
        rows = generate(av, vectors, max_new_tokens=max_new_tokens)
    exps: list[Explanation] = av.decode(rows)
    pred = ar.reconstruct([e.text for e in exps], dtype=dtype)
    m = score(pred, vectors, ref, direction_only=True)
    fve, cos = m["fve_nrm"], m["cos"]
    copies = [copy_rate(e.text, r.get("text", "")) for e, r in zip(exps, rows_meta)]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(exps), generator=g)[:n_examples].tolist()
    if was_training:
        av.model.train()
    return {
        "n": len(exps),
        "fve_nrm": summarize(fve),
        "fve_nrm_by_position": by_position(fve),  # in eval_pairs' order
        "fve_raw": summarize(m["fve_raw"]),
        "cos": summarize(cos),
        "by_kind": by_kind(fve, rows_meta),
        "parse_rate": sum(e.ok for e in exps) / max(1, len(exps)),
        "truncated_rate": sum(e.truncated for e in exps) / max(1, len(exps)),
        "mean_tokens": sum(e.n_tokens for e in exps) / max(1, len(exps)),
        "copy_rate_4gram": sum(copies) / max(1, len(copies)),
        "examples": [{"context_tail": rows_meta[i].get("text", "")[-160:], "token": rows_meta[i].get("token"),
                      "kind": rows_meta[i].get("kind"), "explanation": exps[i].text, "fve_nrm": float(fve[i]),
                      "cos": float(cos[i])} for i in pick],
    }


def pair_samples(pairs) -> Samples:
    """The pairs as baseline `Samples`: each row's stored token window (``window_ids``, current token last)."""
    windows = [r["window_ids"] for r in pairs.rows]
    return Samples(doc=list(range(len(windows))), pos=[len(w) - 1 for w in windows], vectors=pairs.vectors,
                   token_ids=windows, texts=[""] * len(windows), offsets=[[(0, 0)] * len(w) for w in windows])


def baseline_rows(target, layer: int, ref: Reference, train_pairs, eval_pairs, names: tuple[str, ...], *, ar=None,
                  batch_size: int = 256, ar_dtype: torch.dtype | None = None) -> list[dict]:
    """Every named baseline scored on exactly the held-out pairs, fitted on `train_pairs`, through `metrics.score`.

    Returns the table rows: {name, fve_nrm, fve_nrm_ci95, fve_raw, cos, n, by_kind}.
    """
    from nlakit import baselines as B

    train, test = pair_samples(train_pairs), pair_samples(eval_pairs)
    preds = B.compute(names, target=target, ar=ar, layer=layer, ref=ref, train=train, test=test, batch_size=batch_size,
                      ar_dtype=ar_dtype)
    rows = []
    for name in names:
        if name not in preds:
            continue
        m = score(preds[name].vectors, test.vectors, ref, direction_only=preds[name].direction_only)
        f = summarize(m["fve_nrm"])
        rows.append({"name": name, "fve_nrm": f["mean"], "fve_nrm_ci95": f["ci95"], "fve_raw": summarize(m["fve_raw"])["mean"],
                     "cos": summarize(m["cos"])["mean"], "n": f["n"], "by_kind": by_kind(m["fve_nrm"], eval_pairs.rows)})
    return rows
