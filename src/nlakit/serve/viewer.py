"""What the viewer computes, with no web in it: tokens, one token's explanation, quote checks, line salience, heatmaps.

`Viewer` holds already-loaded NLAs (each with the target it reads) under short names ("a", "b") and answers in
plain dicts; `nlakit.serve.app` puts HTTP around it. Every score goes through the library: `explain_text` (explanation,
fve_nrm and cosine beside the baselines), `score_vectors` / `metrics.score` (heatmap, line salience) and
`nlakit.engine.generate` (the heatmap's one batched AV run).
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nlakit.activations import extract
from nlakit.errors import NlakitError
from nlakit.evaluate import EvalConfig, explain_text, score_vectors
from nlakit.metrics import cosine, score

# The baselines the viewer prints beside every explanation: mean, token-embedding ridges (the maps a bundle ships),
# and context echo. The oracle echoes need training text and are left to `nlakit eval`.
VIEW_BASELINES = ("mean", "ridge_token", "ridge_token_bag8", "echo_ar8", "echo_ar32")

APPROX_RATIO = 0.8  # a quote whose best window in the context matches at least this well is "approx"
APPROX_MIN_CHARS = 10  # shorter quotes are found (up to case) or missing


@dataclass(frozen=True)
class Limits:
    """Request sizes the server accepts (bigger ones get HTTP 413) and how many requests may wait per model."""

    max_chars: int = 4000  # characters of text (or of all chat messages together)
    max_positions: int = 256  # tokens explained in one heatmap or export
    max_messages: int = 64  # chat messages
    queue: int = 8  # requests waiting for a busy model before new ones get HTTP 503
    max_new_tokens: int = 150  # AV generation cap
    cache: int = 256  # explained tokens remembered (least recently used go first)
    jobs: int = 16  # finished heatmap jobs remembered


class TooLarge(NlakitError):
    """A request over one of the `Limits` (HTTP 413)."""


# ---------------------------------------------------------------------------------------------------------------
# Pure text helpers
# ---------------------------------------------------------------------------------------------------------------
_QUOTE_RE = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')
_ELLIPSIS = "…"


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def quote_fragments(explanation: str) -> list[dict]:
    """Every quoted fragment of an explanation: [{"quote", "start", "end"}] (char span of the fragment in it).

    Double quotes and curly quotes count; " / " (the AV's line-break sign) splits a quote into fragments, and a
    leading/trailing ellipsis is dropped and noted (``cut_start`` / ``cut_end``: the fragment may start or end
    inside a word).
    """
    out = []
    for m in _QUOTE_RE.finditer(explanation):
        g = 1 if m.group(1) is not None else 2
        start = m.start(g)
        for part in re.split(r"( / )", m.group(g)):
            core, cut_start, cut_end = part.strip(), False, False
            for mark in (_ELLIPSIS, "..."):
                cut_start |= core.startswith(mark)
                cut_end |= core.endswith(mark)
                core = core.removeprefix(mark).removesuffix(mark).strip()
            if core and part != " / ":
                s = start + part.index(core)
                out.append({"quote": core, "start": s, "end": s + len(core), "cut_start": cut_start, "cut_end": cut_end})
            start += len(part)
    return out


def find_quote(quote: str, context: str, cut_start: bool = False, cut_end: bool = False) -> dict:
    """Where `quote` occurs in `context`: {"status": found|approx|missing, "ratio", "span": [s, e] or None}.

    found: verbatim (whitespace runs compared as one space), starting and ending at word boundaries unless the
    quote was cut there (an ellipsis); approx: the same ignoring case, or, for quotes of APPROX_MIN_CHARS or more,
    a window of the context matching with a difflib ratio >= APPROX_RATIO; missing: neither (the AV made it up).
    """
    q = _norm(quote)
    if not q:
        return {"status": "missing", "ratio": 0.0, "span": None}
    pattern = r"\s+".join(re.escape(w) for w in q.split(" "))
    if not cut_start and re.match(r"\w", q):
        pattern = r"(?<!\w)" + pattern
    if not cut_end and re.search(r"\w$", q):
        pattern += r"(?!\w)"
    m = re.search(pattern, context)
    if m:
        return {"status": "found", "ratio": 1.0, "span": [m.start(), m.end()]}
    m = re.search(pattern, context, flags=re.IGNORECASE)
    if m:
        return {"status": "approx", "ratio": 1.0, "span": [m.start(), m.end()]}
    if len(q) < APPROX_MIN_CHARS:  # a short quote is there or not: one changed letter is another word
        return {"status": "missing", "ratio": 0.0, "span": None}
    # the longest common block anchors the best window of the quote's length
    low_q, low_c = q.lower(), context.lower()
    sm = difflib.SequenceMatcher(None, low_q, low_c, autojunk=False)
    a, b, size = sm.find_longest_match(0, len(low_q), 0, len(low_c))
    if size == 0:
        return {"status": "missing", "ratio": 0.0, "span": None}
    s = max(0, b - a)
    e = min(len(context), s + len(q))
    ratio = difflib.SequenceMatcher(None, low_q, low_c[s:e], autojunk=False).ratio()
    if ratio >= APPROX_RATIO:
        return {"status": "approx", "ratio": round(ratio, 3), "span": [s, e]}
    return {"status": "missing", "ratio": round(ratio, 3), "span": None}


def check_quotes(explanation: str, context: str) -> list[dict]:
    """Each quoted fragment of `explanation` checked against `context` (the text the activation could see)."""
    return [{**f, **find_quote(f["quote"], context, f["cut_start"], f["cut_end"])} for f in quote_fragments(explanation)]


def split_lines(explanation: str) -> list[str]:
    """The explanation's lines, each cut into sentences (never inside a quote). Empty pieces are dropped."""
    out = []
    for line in explanation.splitlines():
        buf, in_quote = "", False
        for i, ch in enumerate(line):
            buf += ch
            if ch in '"“”':
                in_quote = not in_quote if ch == '"' else ch == "“"
            if ch in ".!?" and not in_quote and (i + 1 == len(line) or line[i + 1].isspace()):
                if buf.strip():
                    out.append(buf.strip())
                buf = ""
        if buf.strip():
            out.append(buf.strip())
    return out


# ---------------------------------------------------------------------------------------------------------------
# The viewer
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Model:
    """One loaded NLA and the target whose activations it reads."""

    nla: object
    target: object
    label: str = ""

    def info(self, name: str) -> dict:
        return {"name": name, "label": self.label or name, "nla": self.nla.source, "target": self.target.name,
                "target_spec": self.target.spec, "layer": self.nla.layer, "d_model": self.nla.d_model,
                "chat": bool(getattr(self.target.tokenizer, "chat_template", None)),
                "baselines": list(VIEW_BASELINES)}


@dataclass
class Viewer:
    """Loaded models by name plus the viewer's computations. Callers serialise access per model (the server's queue)."""

    models: dict[str, Model]
    limits: Limits = field(default_factory=Limits)
    seed: int = 0

    def __post_init__(self):
        if not self.models:
            raise NlakitError("the viewer got no model", "pass at least one NLA")
        self._cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise NlakitError(f"unknown model {name!r}", f"use one of {sorted(self.models)}")
        return self.models[name]

    def _cfg(self) -> EvalConfig:
        return EvalConfig(n_positions=1, seed=self.seed, max_new_tokens=self.limits.max_new_tokens, baselines=VIEW_BASELINES)

    # ---- text ---------------------------------------------------------------------------------------------
    def check_text(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise NlakitError("text is empty", "type some text")
        if len(text) > self.limits.max_chars:
            raise TooLarge(f"text has {len(text)} characters; this server takes at most {self.limits.max_chars}",
                           "send a shorter text")
        return text

    def check_positions(self, name: str, text: str) -> str:
        """`check_text`, and at most `max_positions` tokens (the tokenizer alone: no model runs)."""
        n = len(self.model(name).target.encode([self.check_text(text)]).offsets[0])
        if n > self.limits.max_positions:
            raise TooLarge(f"the text has {n} tokens; a heatmap takes at most {self.limits.max_positions}", "send a shorter text")
        return text

    def render_chat(self, name: str, messages: list[dict]) -> str:
        """A chat as the text the target reads (its chat template, no generation prompt)."""
        if len(messages) > self.limits.max_messages:
            raise TooLarge(f"{len(messages)} messages; this server takes at most {self.limits.max_messages}", "send fewer messages")
        total = sum(len(m.get("content", "")) for m in messages)
        if total > self.limits.max_chars:
            raise TooLarge(f"messages have {total} characters; this server takes at most {self.limits.max_chars}",
                           "send shorter messages")
        return self.model(name).target.chat_text(messages, add_generation_prompt=False)

    def tokens(self, name: str, text: str) -> dict:
        """{"text", "tokens": [{i, text, start, end, sink}]}: sinks (position 0, BOS, huge norms) cannot be explained."""
        m = self.model(name)
        (doc,) = extract(m.target, [self.check_text(text)], m.nla.layer, "all", batch_size=1, include_sinks=True)
        toks = [{"i": i, "text": doc.text[s:e], "start": s, "end": e, "sink": bool(doc.is_sink[i])}
                for i, (s, e) in enumerate(doc.offsets)]
        return {"text": doc.text, "tokens": toks}

    def token_at(self, name: str, text: str, end: int) -> int:
        """The token of model `name` covering character `end - 1` of `text` (to show another model the same token)."""
        offsets = self.model(name).target.encode([text]).offsets[0]
        return next((i for i, (s, e) in enumerate(offsets) if s < end <= e), len(offsets) - 1)

    # ---- one token ---------------------------------------------------------------------------------------
    def explain(self, name: str, text: str, pos: int) -> dict:
        """One token: explanation, scores beside the baselines, quote checks and line salience (cached)."""
        text = self.check_text(text)
        key = (name, text, pos)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        m = self.model(name)
        res = explain_text(m.nla, m.target, text, [pos], cfg=self._cfg())
        row = res["rows"][0]
        tok = res["tokens"][row["pos"]]
        context = text[: tok["end"]]
        (doc,) = extract(m.target, [text], m.nla.layer, [row["pos"]], batch_size=1, include_sinks=True)
        out = {"model": name, "pos": row["pos"], "token": tok, "explanation": row["explanation"], "ok": row["ok"],
               "n_tokens": row["n_tokens"], "fve_nrm": row["fve_nrm"], "cos": row["cos"], "baselines": row["baselines"],
               "skipped_baselines": res["skipped_baselines"], "quotes": check_quotes(row["explanation"], context),
               "lines": self.line_salience(name, doc.vectors, row["explanation"]), "layer": m.nla.layer}
        with self._cache_lock:
            self._cache[key] = out
            while len(self._cache) > self.limits.cache:
                self._cache.popitem(last=False)
        return out

    def line_salience(self, name: str, vector: torch.Tensor, explanation: str) -> list[dict]:
        """Each line (sentence) of an explanation with Δfve_nrm = fve_nrm(all lines) − fve_nrm(that line removed).

        One AR batch: the whole explanation plus one copy without each line. Positive Δ: the line carries
        information the reconstruction uses.
        """
        m = self.model(name)
        lines = split_lines(explanation)
        if not lines:
            return []
        texts = [" ".join(lines)] + [" ".join(lines[:i] + lines[i + 1 :]) for i in range(len(lines))]
        pred = m.nla.reconstruct(texts, batch_size=len(texts))
        fve = score(pred, vector.expand(len(texts), -1), m.nla.require_reference(), direction_only=True)["fve_nrm"]
        full = float(fve[0])
        return [{"i": i, "line": line, "fve_without": float(fve[i + 1]), "delta": full - float(fve[i + 1])}
                for i, line in enumerate(lines)]

    # ---- every token ---------------------------------------------------------------------------------------
    def heatmap(self, name: str, text: str, progress: Callable[[int, int], None] | None = None) -> dict:
        """Every explainable token in one batched AV run (the engine): explanation, fve_nrm, cos, drift per token.

        drift: 1 − cosine between the AR's reconstructions of this token's and the previous token's explanations
        (how far the explanation's meaning moved); None for the first token.
        """
        from nlakit import engine

        m = self.model(name)
        text = self.check_text(text)
        (doc,) = extract(m.target, [text], m.nla.layer, "all", batch_size=1)
        n = len(doc.positions)
        if n > self.limits.max_positions:
            raise TooLarge(f"the text has {n} explainable tokens; a heatmap takes at most {self.limits.max_positions}",
                           "send a shorter text")
        if n == 0:
            raise NlakitError("no explainable token in the text (position 0 and BOS are attention sinks)", "type a longer text")
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if progress is not None:
                progress(done[0], n)

        if progress is not None:
            progress(0, n)
        rows = engine.generate(m.nla.av, doc.vectors, max_new_tokens=self.limits.max_new_tokens, seed=self.seed,
                               batch_size=min(n, 64), progress=tick)
        expl = m.nla.av.decode(rows)
        scored = score_vectors(m.nla, doc.vectors, expl, cfg=self._cfg())
        pred = scored["pred"]
        drift = [None] + (1.0 - cosine(pred[1:], pred[:-1])).clamp_min(0.0).tolist()
        out = []
        for j, p in enumerate(doc.positions):
            s, e = doc.offsets[p]
            r = scored["rows"][j]
            out.append({"pos": p, "token": doc.text[s:e], "start": s, "end": e, "explanation": r["explanation"], "ok": r["ok"],
                        "fve_nrm": r["fve_nrm"], "cos": r["cos"], "drift": drift[j]})
        return {"model": name, "text": doc.text, "rows": out, "aggregate": scored["aggregate"], "parse_rate": scored["parse_rate"]}

    # ---- export --------------------------------------------------------------------------------------------
    def export(self, name: str, text: str, positions: list[int]) -> dict:
        """The on-screen tokens as an `explain` results JSON (`nlakit report` renders it); rows also carry their quotes."""
        text = self.check_text(text)
        if not positions:
            raise NlakitError("no position to export", "explain a token first")
        if len(positions) > self.limits.max_positions:
            raise TooLarge(f"{len(positions)} positions; an export takes at most {self.limits.max_positions}", "export fewer tokens")
        m = self.model(name)
        res = explain_text(m.nla, m.target, text, sorted(set(positions)), cfg=self._cfg())
        for row in res["rows"]:
            row["quotes"] = check_quotes(row["explanation"], text[: res["tokens"][row["pos"]]["end"]])
        res["viewer"] = {"model": name, "label": m.label or name}
        return res
