"""Reading a language off texts and tokens: lingua on outputs and quotes, a lexicon on explanations, token sets for the lens.

- `Identifier`: the `lingua-language-detector` detector (PyPI; it ships its n-gram models, nothing downloads), built
  from the languages a run needs only. Measured on the 2-core CPU: English + 5 cue languages take ~200 MB and ~1 s
  to load in high-accuracy mode (0.998 accuracy on 3,000 PUD sentences of those languages, 0.94 on their first 4
  words), 47 MB and 0.5 s in low-accuracy mode (0.989 / 0.86). Models load lazily (no preloading).
- `explanation_hits`: does an explanation name the language (a lexicon of language names, demonyms and country
  words per language), or quote a fragment in it (lingua on each quoted fragment)? Plus a generic "non-English"
  class (foreign, translation, accent …) for an NLA that cannot name the language.
- `output_onset`: the first generated word from which the model's own output is in the language (lingua).
- `language_token_ids`: the tokens the logit lens counts as the language's: frequent in its text, rare in English
  and in the other languages.
- `smooth` and `onset`: the per-position detection curve and the position from which it stays on.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from nlakit.errors import NlakitError

# Language names (English and native), demonyms and country words. Matched case-insensitively on whole words. The
# prompts never contain any of these (a test checks), so a hit is the explanation's inference, not an echo.
LEXICON: dict[str, str] = {
    "fr": r"french|fran[cç]ais(?:e|es)?|francophones?|france|frenchm[ae]n|frenchwom[ae]n|gallic|qu[ée]b[ée]c(?:ois|oise)?",
    "de": r"germans?|germany|germanic|deutsch(?:e|en|er|land)?|austrians?|austria|[öo]sterreich\w*|swiss[- ]german",
    "es": r"spanish|spaniards?|espa[nñ]ol(?:a|es)?|spain|espa[nñ]a|castilian|castellano|hispanic|hispanophone|latin[oa]s?",
    "it": r"italians?|italiano|italiana|italy|italia|sicilian",
    "pt": r"portuguese|portugu[eê]s|portuguesa|portugal|brazil(?:ian|ians)?|brasil(?:eir[oa])?|lusophone",
}
# An NLA that cannot name the language may still say that the text is not English.
FOREIGN = (r"non-english|not english|foreign(?:er|ers)?|another language|other languages?|different language|"
           r"translat\w+|multilingual|bilingual|romance language|european language|accent(?:ed)?|second language|"
           r"native (?:speaker|language)|mother tongue|non-native|l2 speaker|esl")
_LEX = {lang: re.compile(rf"\b(?:{rx})\b", re.IGNORECASE) for lang, rx in LEXICON.items()}
_FOREIGN = re.compile(rf"\b(?:{FOREIGN})\b", re.IGNORECASE)
_QUOTE = re.compile(r'"([^"\n]{2,}?)"|“([^”\n]{2,}?)”|«\s*([^»\n]{2,}?)\s*»|„([^“”\n]{2,}?)[“”]')


def lexicon_languages(text: str, languages: tuple[str, ...] | None = None) -> list[str]:
    """The languages whose lexicon matches `text`, in `LEXICON` order."""
    return [lang for lang, rx in _LEX.items() if (languages is None or lang in languages) and rx.search(text)]


def says_foreign(text: str) -> bool:
    """The generic "not English" class: foreign, translation, accent, another language …"""
    return bool(_FOREIGN.search(text))


def quoted_fragments(text: str) -> list[str]:
    """Fragments between straight or curly double quotes, guillemets or „low quotes“."""
    return [next(g for g in m.groups() if g) for m in _QUOTE.finditer(text)]


@dataclass
class Identifier:
    """lingua's detector over `languages` (ISO 639-1 codes, English among them)."""

    languages: tuple[str, ...]
    low_accuracy: bool = False
    _detector: object = field(default=None, repr=False)
    _lang: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        try:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
        except ImportError as e:
            raise NlakitError("lingua-language-detector is not installed", "pip install lingua-language-detector") from e
        try:
            codes = {c: IsoCode639_1.from_str(c) for c in self.languages}
        except ValueError as e:
            raise NlakitError(f"lingua does not know one of the languages {list(self.languages)}", "use ISO 639-1 codes such as fr, de") from e
        if len(codes) < 2:
            raise NlakitError("a language identifier needs at least two languages", "include English and a cue language")
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes.values())
        self._detector = (builder.with_low_accuracy_mode() if self.low_accuracy else builder).build()
        self._lang = {Language.from_iso_code_639_1(v): c for c, v in codes.items()}

    def detect(self, text: str) -> tuple[str | None, float]:
        """(language code, confidence) of the most likely language, or (None, 0.0) when lingua cannot tell."""
        if not text or not re.search(r"\w", text):
            return None, 0.0
        values = self._detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0.0:
            return None, 0.0
        return self._lang[values[0].language], float(values[0].value)

    def confidence(self, text: str, lang: str) -> float:
        """lingua's confidence that `text` is in `lang` (0 for a language the detector was not built with)."""
        from lingua import IsoCode639_1, Language

        if lang not in self.languages:
            return 0.0
        return float(self._detector.compute_language_confidence(text, Language.from_iso_code_639_1(IsoCode639_1.from_str(lang))))

    def is_language(self, text: str, lang: str, min_confidence: float = 0.5) -> bool:
        got, conf = self.detect(text)
        return got == lang and conf >= min_confidence


def explanation_hits(text: str, ident: Identifier, languages: tuple[str, ...], *, context: str = "",
                     min_quote_chars: int = 8, min_confidence: float = 0.5) -> dict:
    """What an explanation says about the language: ``{"lexicon": [langs], "quote": [langs], "quote_echo": [langs],
    "foreign": bool}``. A quoted fragment counts when it has `min_quote_chars`+ characters and lingua puts it in a
    cue language; ``quote_echo`` lists those whose fragment is also in `context` (the text so far: the AV quoting it)."""
    quotes = []
    for q in quoted_fragments(text):
        if len(q.strip()) < min_quote_chars:
            continue
        got, conf = ident.detect(q)
        if got in languages and conf >= min_confidence:
            quotes.append((got, q))
    low = context.lower()
    return {"lexicon": lexicon_languages(text, languages), "quote": sorted({g for g, _ in quotes}),
            "quote_echo": sorted({g for g, q in quotes if _bare(q) in low}), "foreign": says_foreign(text)}


def _bare(quote: str) -> str:
    """A quote without the ellipses the AV puts where it cut the text, lower-cased."""
    return quote.strip().strip("…").strip(".").strip().lower()


_WORD = re.compile(r"\S+")


def output_onset(text: str, lang: str, ident: Identifier, window: int = 3, min_confidence: float = 0.5) -> int | None:
    """Character offset of the first word of `text` from which the output is in `lang`, or None.

    A word qualifies when lingua puts (a) the `window` words starting at it in `lang` (top language, `min_confidence`),
    (b) the whole rest of the text from it in `lang`, and (c) the word itself at least as much in `lang` as in
    English. (b) keeps one stray word ("Lyon") from making an English answer switch, (c) keeps the window from
    starting on the last English word before the switch ("is: le chat"); punctuation-only words are skipped, and
    the last words of a text, too few for a window, never start one."""
    words = [m for m in _WORD.finditer(text) if re.search(r"\w", m.group(0))]
    for i in range(len(words) - window + 1):
        win = text[words[i].start() : words[i + window - 1].end()]
        if not (ident.is_language(win, lang, min_confidence) and ident.is_language(text[words[i].start() :], lang, min_confidence)):
            continue
        if ident.confidence(words[i].group(0), lang) >= ident.confidence(words[i].group(0), "en"):
            return words[i].start()
    return None


def language_token_ids(tokenizer, texts: dict[str, list[str]], *, ratio: float = 4.0, min_count: int = 3,
                       against: str | None = None) -> dict[str, list[int]]:
    """Per language of `texts` (English included, as the reference): word-piece token ids (two or more letters) that
    are at least `ratio` times as frequent (per token of text) in that language as in any other — or, with
    `against`, as in that one language only (e.g. "en": the word pieces shared by French and Spanish count for
    both) — and occur `min_count`+ times in it. Single characters, bytes and punctuation never count."""
    counts: dict[str, Counter] = {}
    for lang, docs in texts.items():
        c: Counter = Counter()
        for d in docs:
            c.update(tokenizer(d, add_special_tokens=False)["input_ids"])
        counts[lang] = c
    totals = {lang: max(1, sum(c.values())) for lang, c in counts.items()}
    wordy: dict[int, bool] = {}
    out = {}
    for lang, c in counts.items():
        keep = []
        for t, n in c.items():
            if n < min_count:
                continue
            if t not in wordy:
                wordy[t] = sum(ch.isalpha() for ch in tokenizer.decode([t])) >= 2
            if not wordy[t]:
                continue
            p = n / totals[lang]
            others = [against] if against is not None and against != lang else [o for o in counts if o != lang]
            other = max((counts[o][t] / totals[o] for o in others), default=0.0)
            if p >= ratio * max(other, 0.5 / min(totals.values())):  # an unseen token elsewhere counts as half an occurrence
                keep.append(int(t))
        out[lang] = sorted(keep)
    return out


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` positions (odd; 1 = none), shrinking at the edges."""
    x = np.asarray(x, dtype=float)
    if window <= 1 or len(x) == 0:
        return x
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.maximum(np.arange(len(x)) - h, 0)
    hi = np.minimum(np.arange(len(x)) + h + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def onset(on: np.ndarray | list[bool], min_run: int = 1) -> int | None:
    """First index after which `on` stays true to the end, if that final run is `min_run`+ long (else None).

    `min_run` > 1 keeps a detection that only comes on at the very last positions (where a centred window is
    shrunk) from counting as an onset."""
    on = list(map(bool, on))
    if not on or not on[-1]:
        return None
    i = len(on)
    while i > 0 and on[i - 1]:
        i -= 1
    return i if len(on) - i >= min_run else None
