"""Parse a model's free-text answer into a sympy expression in x0, x1 — robustly, and never silently.

The answer is the expression after the **last** `y =` that parses (scanning lines and `y =` occurrences from
the end). Accepted: implicit multiplication (`1.5x0`, `2cos(x1)`, `x0x1`, `(x0+1)(x1-1)`), `^` or `**` for
powers, unicode minus/dashes/×/·/÷, superscripts (`x0²`, `x0⁻¹`), subscripts (`x₀`), markdown and LaTeX
wrappers (`**…**`, backticks, `$…$`, `\\(…\\)`, `\\frac{a}{b}`, `\\cdot`, `x_{0}`, `\\cos`), `y(x0, x1) =`,
`≈` for `=`, `np.`/`math.` prefixes, `pow(a, b)` / `np.power(a, b)`, and trailing prose after a complete
expression (a comma, an English word, `I'm …`: `y=x0*x1+2 I'm fairly confident`).

Rejected (unparseable, with the reason): unknown symbols or free constants (`a*x0 + b`, `C`, `x2`, bare
`x`), a missing `y =`, dangling operators, anything that is not a finite expression. A prefix that parses
is never accepted in place of the whole expression: text is only cut at prose boundaries.

Functions accepted beyond the prompt's `cos`: sin, tan, exp, log/ln, sqrt, abs; constants pi and e (only
as `e^…`). ``1/2x0`` reads as ``(1/2)*x0`` (left to right, like ``*``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_FUNCTIONS = ("cos", "sin", "tan", "exp", "log", "ln", "sqrt", "abs")
_NAMES = ("x0", "x1", "pi", "e") + _FUNCTIONS
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺⁽⁾", "0123456789-+()")
_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_CHAR_MAP = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2010": "-", "\u2011": "-", "\ufe63": "-", "\uff0d": "-",
    "\u00d7": "*", "\u00b7": "*", "\u22c5": "*", "\u2219": "*", "\u2217": "*", "\u2022": "*", "\u00f7": "/", "\u2215": "/",
    "\u2248": "=", "\u2243": "=", "\u2245": "=", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
    "\u00bd": "(1/2)", "\u00bc": "(1/4)", "\u00be": "(3/4)", "\u03c0": "pi",
}
_Y_EQ = re.compile(r"(?<![A-Za-z0-9_])[yY]\s*(?:\(\s*x_?0\s*,\s*x_?1\s*\))?\s*=")
_PROSE = re.compile(r"\s+\(?([A-Za-z]+'[A-Za-z]+|[A-Za-z](?=\s+[A-Za-z]{2,})|[A-Za-z]{3,})")  # I'm, I am, where
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_IDENT_PART = re.compile(r"x[01]|X[01]|cos|sin|tan|exp|log|ln|sqrt|abs|pi|e")


class ParseError(ValueError):
    pass


@dataclass
class ParsedAnswer:
    """The parsed expression (sympy) or the reason there is none."""

    expr: Any | None  # sympy.Expr in the real symbols x0, x1
    text: str | None  # the expression text that parsed
    error: str | None  # why nothing parsed

    @property
    def ok(self) -> bool:
        return self.expr is not None


def symbols():
    import sympy as sp

    return sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)


# ---------------------------------------------------------------------------------------------------- normalise
def _match_brace(s: str, i: int) -> int:
    """Index of the '}' closing the '{' at s[i]."""
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return j
    raise ParseError("unbalanced braces")


def _latex(s: str) -> str:
    for a, b in (("\\left", ""), ("\\right", ""), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\,", " "),
                 ("\\;", " "), ("\\!", ""), ("\\ ", " "), ("\\pi", "pi"), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                 ("\\(", " "), ("\\)", " "), ("\\[", " "), ("\\]", " "), ("$", " ")):
        s = s.replace(a, b)
    while "\\frac" in s:  # \frac{a}{b} -> ((a)/(b)), innermost last so nesting works
        i = s.index("\\frac")
        j = i + len("\\frac")
        while j < len(s) and s[j] == " ":
            j += 1
        if j >= len(s) or s[j] != "{":
            raise ParseError("\\frac without braces")
        k = _match_brace(s, j)
        m = k + 1
        while m < len(s) and s[m] == " ":
            m += 1
        if m >= len(s) or s[m] != "{":
            raise ParseError("\\frac needs two braced arguments")
        n = _match_brace(s, m)
        s = s[:i] + f"(({s[j + 1:k]})/({s[m + 1:n]}))" + s[n + 1 :]
    s = re.sub(r"\\sqrt\s*\{", "sqrt{", s)
    s = re.sub(r"\\(cos|sin|tan|exp|log|ln)\b", r"\1", s)
    s = re.sub(r"\\operatorname\{(\w+)\}", r"\1", s)
    s = re.sub(r"\b([xX])_\{?([01])\}?", r"\1\2", s)  # x_0, x_{0}
    return s.replace("{", "(").replace("}", ")")


def normalise(text: str) -> str:
    """Map unicode, LaTeX and markdown spellings onto a plain ASCII expression language (line structure kept)."""
    s = "".join(_CHAR_MAP.get(c, c) for c in text)
    s = re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺⁽⁾]+", lambda m: "^(" + m.group(0).translate(_SUPERSCRIPTS) + ")", s)
    s = s.translate(_SUBSCRIPTS)
    s = s.replace("`", " ")
    s = re.sub(r"\b(?:np|numpy|math|sp|sympy|torch)\.", "", s)
    return _pow_calls(s)


def _pow_calls(s: str) -> str:
    """pow(a, b) / power(a, b) -> ((a)^(b)), innermost first; a call without exactly two arguments is left to fail."""
    for m in reversed(list(re.finditer(r"\b(?:pow|power)\s*\(", s))):
        depth, commas, j = 0, [], m.end() - 1
        for j in range(m.end() - 1, len(s)):
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            if depth == 1 and s[j] == ",":
                commas.append(j)
            if depth == 0:
                break
        if depth == 0 and len(commas) == 1:
            s = s[: m.start()] + f"(({s[m.end():commas[0]]})^({s[commas[0] + 1:j]}))" + s[j + 1 :]
    return s


# ---------------------------------------------------------------------------------------------------- tokens
def tokenize(s: str) -> list[tuple[str, str]]:
    """Tokens as (kind, text): num, name, op. Identifiers are split into known names (x0x1 -> x0 x1) or rejected."""
    s = s.replace("**", "^")
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c.isspace():
            i += 1
            continue
        m = _NUMBER.match(s, i)
        if m:
            out.append(("num", m.group(0)))
            i = m.end()
            continue
        m = _IDENT.match(s, i)
        if m:
            word = m.group(0)
            parts = _split_identifier(word)
            out += [("name", p) for p in parts]
            i = m.end()
            continue
        if c in "+-*/^()[]|":
            out.append(("op", c))
            i += 1
            continue
        raise ParseError(f"unexpected character {c!r}")
    return out


def _split_identifier(word: str) -> list[str]:
    """Split a run of letters/digits into known names, e.g. 'x0x1' -> ['x0', 'x1'], 'cosx1' -> ['cos', 'x1']."""
    if word.lower() in _FUNCTIONS:
        return [word.lower()]
    parts, i = [], 0
    while i < len(word):
        m = _IDENT_PART.match(word, i)
        if not m:
            raise ParseError(f"unknown symbol {word!r} (free constants and other variables are not allowed)")
        parts.append(m.group(0).lower())
        i = m.end()
    if "e" in parts and len(parts) > 1:  # 'ex0' etc. is not Euler's number
        raise ParseError(f"unknown symbol {word!r}")
    return parts


# ---------------------------------------------------------------------------------------------------- grammar
class _Parser:
    """expr := term (± term)* ; term := unary ((*|/|juxtaposition) unary)* ; unary := ± unary | power ;
    power := primary (^ unary)? ; primary := number | x0 | x1 | pi | e^… | func(expr) | func^k(expr) | func power | (expr) | |expr|"""

    def __init__(self, tokens: list[tuple[str, str]]):
        import sympy as sp

        self.sp = sp
        self.toks = tokens
        self.i = 0
        self.x0, self.x1 = symbols()

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "")

    def take(self, text: str | None = None):
        tok = self.peek()
        if text is not None and tok[1] != text:
            raise ParseError(f"expected {text!r}, got {tok[1] or 'end of expression'!r}")
        self.i += 1
        return tok

    def parse(self):
        if not self.toks:
            raise ParseError("empty expression")
        e = self.expr()
        if self.peek()[0] != "end":
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return e

    def expr(self):
        e = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            e = e + rhs if op == "+" else e - rhs
        return e

    def _starts_primary(self) -> bool:
        kind, text = self.peek()
        return kind in ("num", "name") or text in ("(", "[")

    def term(self):
        e = self.unary()
        while True:
            kind, text = self.peek()
            if text in ("*", "/"):
                self.take()
                rhs = self.unary()
                e = e * rhs if text == "*" else e / rhs
            elif self._starts_primary():  # implicit multiplication: 1.5x0, 2cos(x1), (a)(b)
                if kind == "num" and self.toks[self.i - 1][0] == "num":
                    raise ParseError("two numbers in a row")
                e = e * self.power()
            else:
                return e

    def unary(self):
        if self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            e = self.unary()
            return -e if op == "-" else e
        return self.power()

    def power(self):
        base = self.primary()
        if self.peek()[1] == "^":
            self.take()
            return base ** self.unary()  # right-associative: a^b^c = a^(b^c); x^-1 works
        return base

    def primary(self):
        sp = self.sp
        kind, text = self.take()
        if kind == "num":
            return sp.Rational(text)
        if kind == "name":
            if text == "x0":
                return self.x0
            if text == "x1":
                return self.x1
            if text == "pi":
                return sp.pi
            if text == "e":
                if self.peek()[1] != "^":
                    raise ParseError("unknown symbol 'e' (write exp(...) or e^...)")
                return sp.E
            return self._function(text)
        if text in ("(", "["):
            e = self.expr()
            self.take(")" if text == "(" else "]")
            return e
        if text == "|":
            e = self.expr()
            self.take("|")
            return sp.Abs(e)
        raise ParseError(f"unexpected {text or 'end of expression'!r}")

    def _function(self, name: str):
        sp = self.sp
        fn = {"cos": sp.cos, "sin": sp.sin, "tan": sp.tan, "exp": sp.exp, "log": sp.log, "ln": sp.log, "sqrt": sp.sqrt,
              "abs": sp.Abs}[name]
        exponent = None
        if self.peek()[1] == "^":  # cos^2(x) = cos(x)^2
            self.take()
            exponent = self.unary() if self.peek()[1] == "(" else self.primary()
        if self.peek()[1] in ("(", "["):
            arg = self.primary()
        elif self._starts_primary():  # cos x1, cos 2x0 -> argument is the next power
            arg = self.power()
        else:
            raise ParseError(f"{name} without an argument")
        out = fn(arg)
        return out**exponent if exponent is not None else out


def parse_expression(text: str):
    """Parse one expression (no `y =`) into sympy; raises ParseError."""
    import sympy as sp

    s = normalise(text).strip()
    s = _latex(s)
    s = s.strip().strip("*").strip()
    s = s.rstrip(".;:, ").strip()
    expr = _Parser(tokenize(s)).parse()
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ParseError("the expression is not finite (division by zero?)")
    extra = expr.free_symbols - set(symbols())
    if extra:  # pragma: no cover - the tokenizer already rejects unknown names
        raise ParseError(f"unknown symbols {sorted(map(str, extra))}")
    return expr


def _candidates(rhs: str) -> list[str]:
    """The RHS, then the RHS cut at prose boundaries (never mid-expression)."""
    base = rhs.split("=")[0]  # chained: y = 2x0 = 2*x0 -> the first expression only
    out = [rhs, base]
    for sep in (",", ";", " where", " for ", " with ", " if ", ". "):
        j = base.find(sep)
        if j > 0:
            out.append(base[:j])
    for m in _PROSE.finditer(base):
        if m.group(1).lower() not in _NAMES:
            out.append(base[: m.start()])
            break
    seen, uniq = set(), []
    for c in out:
        if c.strip() and c not in seen:
            seen.add(c)
            uniq.append(c)
    return uniq


def parse_answer(text: str) -> ParsedAnswer:
    """The expression after the last `y =` in `text` that parses, or the reason none does."""
    if not text or not text.strip():
        return ParsedAnswer(None, None, "empty answer")
    lines = normalise(text).splitlines()
    first_error = None
    for line in reversed(lines):
        starts = [m.end() for m in _Y_EQ.finditer(line)]
        for start in reversed(starts):
            for cand in _candidates(line[start:]):
                try:
                    return ParsedAnswer(parse_expression(cand), cand.strip(), None)
                except ParseError as e:
                    first_error = first_error or f"{e} in {cand.strip()[:80]!r}"
                except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as e:  # sympy edge cases
                    first_error = first_error or f"{type(e).__name__}: {e}"[:120]
    return ParsedAnswer(None, None, first_error or "no 'y =' line")
