"""Paired "other text" positions and the linear maps variant → base fitted on them (ridge, residual)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from nlakit.errors import NlakitError

if TYPE_CHECKING:
    from nlakit.experiments.transfer.config import TransferConfig


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


def fit_map(x: torch.Tensor, y: torch.Tensor):
    """Ridge x → n(y) (`nlakit.baselines.fit_ridge`: standardised inputs, RidgeCV over alphas); shrinks towards zero."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    model = fit_ridge(x, normalize(y))
    return lambda z: torch.from_numpy(np.asarray(model.predict(z.double().numpy()))).float()


def fit_residual_map(x: torch.Tensor, y: torch.Tensor):
    """n(x) + ridge(n(x) → n(y) − n(x)): strong regularisation leaves the identity plus a mean shift, the right prior
    for a fine-tune whose activations barely moved (a plain ridge shrinks towards zero instead)."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    xn = normalize(x)
    model = fit_ridge(xn, normalize(y) - xn)  # (N, D) residuals at the sqrt(d) scale, not renormalised

    def apply(z: torch.Tensor) -> torch.Tensor:
        zn = normalize(z)
        return zn + torch.from_numpy(np.asarray(model.predict(zn.double().numpy()))).float()

    return apply


MAP_FITTERS = {"ridge": fit_map, "residual": fit_residual_map}
