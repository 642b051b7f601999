"""The symreg answer parser: tricky spellings parse to the right expression; anything doubtful is unparseable."""

from __future__ import annotations

import pytest
import sympy as sp

from nlakit.experiments.symreg.parse import ParseError, parse_answer, parse_expression

x0, x1 = sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)
R = sp.Rational

PARSES = [
    ("y = 1.5x0 + 2", R(3, 2) * x0 + 2),  # implicit multiplication after a decimal
    ("y = 2cos(x1)", 2 * sp.cos(x1)),
    ("y = 2x0x1", 2 * x0 * x1),  # glued variables
    ("y = (x0+1)(x1-1)", (x0 + 1) * (x1 - 1)),
    ("y = x0(x1 + 1)", x0 * (x1 + 1)),
    ("y = x₀² + 2.5·cos(x₁) − 0.5", x0**2 + R(5, 2) * sp.cos(x1) - R(1, 2)),  # subscripts, superscripts, unicode minus, middle dot
    ("y = x0⁻¹ + x1³", 1 / x0 + x1**3),
    ("y = x0^2 - x1^3", x0**2 - x1**3),
    ("y = x0**2 - x1", x0**2 - x1),
    ("y = -x0^2", -(x0**2)),  # unary minus binds looser than ^
    ("y = x0^-1", 1 / x0),
    ("y = 2^x0", 2**x0),
    ("**y = x0^2 + 1**", x0**2 + 1),  # markdown bold
    ("`y = x0*x1`", x0 * x1),  # inline code
    ("The answer is:\n```\ny = x0**2 - x1\n```", x0**2 - x1),  # code fence
    ("$y = x_0^{2} + \\frac{5}{2}\\cos(x_1) - \\frac{1}{2}$", x0**2 + R(5, 2) * sp.cos(x1) - R(1, 2)),  # LaTeX
    ("\\( y = 2 x_{0} \\cdot x_{1} \\)", 2 * x0 * x1),
    ("\\[ y = \\frac{x_0}{x_1^2 + 1} \\]", x0 / (x1**2 + 1)),
    ("y = \\left( x_0 + 1 \\right)^{2}", (x0 + 1) ** 2),
    ("y ≈ 3x0 − x1", 3 * x0 - x1),  # approx sign
    ("Y = 2X0", 2 * x0),  # capitals
    ("y(x0, x1) = x0 - x1", x0 - x1),
    ("y = x0 ÷ 2 × x1", x0 * x1 / 2),
    ("y = x0 – x1", x0 - x1),  # en dash
    ("y = cos^2(x1)", sp.cos(x1) ** 2),
    ("y = cos x1 + x0", sp.cos(x1) + x0),  # function without parentheses
    ("y = np.cos(x0) + math.cos(x1)", sp.cos(x0) + sp.cos(x1)),
    ("y = 2.5e-1 * x0", x0 / 4),
    ("y = ½x0", x0 / 2),
    ("y = 1/2x0", x0 / 2),  # left to right, like *
    ("y = [x0 + 1] * x1", (x0 + 1) * x1),
    ("y = e^x0", sp.exp(x0)),
    ("y = x0 + x1, where x0 is the first column", x0 + x1),  # trailing prose after a comma
    ("y = 3x0 - x1 (approximately)", 3 * x0 - x1),
    ("y = x0 + 1.\nThis fits the data.", x0 + 1),
    ("y = 2 * x0 = 2x0", 2 * x0),  # chained equality
    ("I think y = x0 + 1 but actually y = x0 - 1", x0 - 1),  # last y = wins
    ("y = x0\nSo the equation is: y = x0^2 + x1", x0**2 + x1),  # last line wins
    ("y = x0 + 1\ny = <expression using x0 and x1>", x0 + 1),  # echoed template: the last line that parses
    ("y = x0 + 1\ny = x0 + const", x0 + 1),
    ("y = |x0| + 1", sp.Abs(x0) + 1),
    ("y = \\sqrt{x0^2 + 1}", sp.sqrt(x0**2 + 1)),
    ("y = 7", sp.Integer(7)),
    ("y = np.cos(x0) + pow(x1, 2)", sp.cos(x0) + x1**2),  # pow -> power (issue 13)
    ("y = np.power(x0 + 1, 3) - x1", (x0 + 1) ** 3 - x1),
    ("y=x0*x1+2 I'm fairly confident", x0 * x1 + 2),  # trailing prose after a complete expression is dropped
    ("y = 2x0 I think", 2 * x0),
]

FAILS = [
    ("y = a*x0 + b", "unknown symbol 'a'"),  # free constants
    ("y = 2x0 + c", "unknown symbol 'c'"),
    ("y = C1 * cos(x1)", "unknown symbol"),
    ("y = x0 + x2", "unknown symbol 'x2'"),  # other variables
    ("y = x", "unknown symbol 'x'"),
    ("y = 2*x0 + b, where b = 3", "unknown symbol 'b'"),  # the constant is never silently dropped
    ("y = x0 + k x1", "unknown symbol 'k'"),
    ("y = <expression using x0 and x1>", "unexpected character"),
    ("y = x0 +", "end of expression"),
    ("y = (x0 + 1", "expected ')'"),
    ("y = 1/0", "not finite"),
    ("y = 2 3", "two numbers"),
    ("y = ex0", "unknown symbol"),
    ("y = cos()", "unexpected"),
    ("y = x0 ∈ R", "unexpected character"),
    ("y = \\frac{x0}", "two braced arguments"),
    ("no equation here", "no 'y ='"),
    ("", "empty"),
    ("x0 + x1", "no 'y ='"),  # no y = line at all
    ("y = x0 @ x1", "unexpected character"),
    ("y = x0 + a I'm sure", "unknown symbol 'a'"),  # unknown symbols inside the expression stay an error
    ("y = x0 + C I think", "unknown symbol 'C'"),
    ("y = pow(x0, 2, 3)", "unknown symbol 'pow'"),  # pow needs exactly two arguments
]


@pytest.mark.parametrize("answer,expected", PARSES, ids=[a[:40] for a, _ in PARSES])
def test_tricky_answers_parse(answer, expected):
    p = parse_answer(answer)
    assert p.ok, p.error
    assert p.error is None and p.text
    assert sp.simplify(p.expr - expected) == 0, (p.expr, expected)
    assert p.expr.free_symbols <= {x0, x1}


@pytest.mark.parametrize("answer,reason", FAILS, ids=[a[:40] or "empty" for a, _ in FAILS])
def test_doubtful_answers_are_unparseable(answer, reason):
    p = parse_answer(answer)
    assert not p.ok and p.expr is None
    assert reason in p.error


def test_there_are_at_least_25_tricky_cases():
    assert len(PARSES) + len(FAILS) >= 25


def test_parse_expression_raises_parse_error():
    with pytest.raises(ParseError):
        parse_expression("x0 + q")
    assert parse_expression("((-1.5) * cos((2.0 * x1)))") == -R(3, 2) * sp.cos(2 * x1)  # Operon's infix


def test_numbers_are_exact_rationals():
    assert parse_expression("0.1 + 0.2") == R(3, 10)
