"""Where each token sits (region of a chat text) and what kind of token it is (class).

Regions of a chat text: ``template`` (system prompt, role markers and end-of-turn tokens), ``user`` (the user's
words), ``header`` (the assistant header the generation prompt adds), ``generated`` (the target's own greedy
continuation). A plain text is all ``text``.

Classes, the first rule that applies: ``special`` (a special token id, or markup like <|im_start|> / <|im_end|>),
``whitespace`` (only spaces/newlines), ``digits`` (digits, maybe with . or ,), ``punctuation`` (no letter or digit),
``word_start`` (starts with a letter and begins a word: text start, or after a space / non-alphanumeric), ``subword``
(starts with a letter and continues a word), ``other`` (mixed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REGIONS = ("template", "user", "header", "generated", "text")
CLASSES = ("special", "whitespace", "digits", "punctuation", "word_start", "subword", "other")
SPANS = ("all",) + REGIONS

_DIGITS = re.compile(r"^\s*[0-9][0-9.,]*\s*$")
_MARKUP = re.compile(r"^<[^<>\s]+>$")  # <|im_start|>, <start_of_turn>: special even where the tokenizer does not flag them


@dataclass(frozen=True)
class Layout:
    """Character boundaries of one text's regions: [user_start, user_end) is the user turn, [header_start, prompt_end)
    the assistant header, [prompt_end, len) the generated part. A plain text has ``chat`` False."""

    chat: bool
    user_start: int = 0
    user_end: int = 0
    header_start: int = 0
    prompt_end: int = 0

    def region(self, start: int) -> str:
        if not self.chat:
            return "text"
        if start >= self.prompt_end:
            return "generated"
        if start >= self.header_start:
            return "header"
        if self.user_start <= start < self.user_end:
            return "user"
        return "template"


def chat_layout(prefix: str, without_header: str, prompt: str) -> Layout:
    """The layout of ``prefix`` (the chat text with the generation prompt) given the same chat without it."""
    start = prefix.rindex(prompt)
    header = len(without_header) if prefix.startswith(without_header) else start + len(prompt)
    return Layout(chat=True, user_start=start, user_end=start + len(prompt), header_start=header, prompt_end=len(prefix))


def token_class(text: str, offsets: Sequence[tuple[int, int]], i: int, token_id: int, special_ids: set[int]) -> str:
    """The class of token i of `text` (see the module docstring)."""
    s, e = offsets[i]
    piece = text[s:e]
    if token_id in special_ids or _MARKUP.match(piece):
        return "special"
    if not piece.strip():
        return "whitespace"
    if _DIGITS.match(piece):
        return "digits"
    core = piece.lstrip()
    if not any(ch.isalnum() for ch in core):
        return "punctuation"
    if core[0].isalpha():
        before = text[s - 1] if s > 0 else " "
        return "word_start" if piece[0].isspace() or not before.isalnum() else "subword"
    return "other"
