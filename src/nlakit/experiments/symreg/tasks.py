"""Symbolic-regression tasks for `nlakit experiment symreg`: the grammar, the generator, the prompt.

A task is a hidden equation y = f(x0, x1), a 24-row table the model sees and 200 held-out points it
never sees. Equations come from a small grammar:

    leaves   x0, x1, a constant from CONSTANTS (small integers or simple decimals)
    unary    cos(a), a^2, a^3                    (the integer power is part of the operator: one node)
    binary   a + b, a - b, a * b, a / b

with 3-9 nodes. Inputs are uniform in [-2, 2]; every denominator stays at least `MIN_DENOMINATOR` away
from zero on a dense grid over the whole square, so no table or held-out point sits near a pole.
Table inputs are rounded to the 4 decimals printed and y is computed from the rounded inputs, so the
table is exact to its printed precision. The built-in reference table (`REFERENCE_TABLE`, from the
issue) has an unknown equation and no held-out points.

Heavy imports (sympy) happen inside functions: every experiment module is imported when the CLI starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from nlakit.errors import NlakitError

CONSTANTS = (1.0, 2.0, 3.0, 4.0, 5.0, 0.5, 1.5, 2.5)
UNARY = ("cos", "pow2", "pow3")
BINARY = ("add", "sub", "mul", "div")
VARIABLES = ("x0", "x1")
X_RANGE = (-2.0, 2.0)
N_TABLE = 24
N_HELDOUT = 200
MIN_NODES, MAX_NODES = 3, 9
MIN_DENOMINATOR = 0.25  # |denominator| >= this everywhere on the grid
MAX_ABS_Y = 50.0
MAX_UNARY_CHILD = 3  # cos(.) and powers take at most 3 nodes: cos(2 * x0), (x0 + 1)^2
_GRID = 81  # points per axis of the pole / range check grid

PROMPT_HEAD = ("A hidden equation generated these noiseless samples. Variables are x0 and x1.\n"
               "Infer the simplest symbolic equation for y. Use operators +, -, *, /, powers, and cos if useful.")
PROMPT_TAIL = "Answer with exactly one line in this format:\ny = <expression using x0 and x1>"

# The reference table from the issue (x0, x1 -> y), rows separated by ';', unicode minus. Its equation is not given.
REFERENCE_TABLE = (
    "+0.7294,−1.7847→−0.498694; −1.1186,−1.2625→+1.509737; −1.2964,+1.2484→+1.972745; +1.6934,−0.8937→+3.933863; "
    "+1.2790,+1.5596→+1.163951; +0.0519,−1.0201→+0.810805; +1.2970,−1.1449→+2.214855; +0.9659,+0.5198→+2.602746; "
    "+1.7096,−1.0724→+3.617947; +1.1965,+0.0727→+3.425017; −1.0738,−1.3364→+1.233677; −0.0088,+0.3309→+1.864455; "
    "−1.2626,−1.9404→+0.191118; −0.1155,+0.9130→+1.041822; +1.6744,+0.5021→+4.495013; +1.6685,+1.4588→+2.563363; "
    "−1.1274,+1.4645→+1.036312; +0.9230,−0.8885→+1.928310; +1.1882,+1.4609→+1.185979; −0.8022,+0.1082→+2.628991; "
    "−1.7141,+0.3330→+4.800680; −1.0484,+1.0599→+1.821586; −1.3055,−0.7490→+3.035134; −1.9421,−1.8698→+2.535358"
)

# An expression tree: ("x0",) | ("x1",) | ("c", value) | (unary, child) | (binary, left, right)
Tree = tuple


@dataclass
class Task:
    """One hidden equation with its table (what the model sees) and held-out points (what scoring uses)."""

    id: str
    source: str  # "generated" | "reference"
    truth: str | None  # sympy string of the equation; None for the reference table
    n_nodes: int | None
    x_table: np.ndarray  # (24, 2) as printed (4 decimals)
    y_table: np.ndarray  # (24,) as printed (6 decimals)
    x_heldout: np.ndarray | None = None  # (200, 2) full precision
    y_heldout: np.ndarray | None = None  # (200,)
    tree: Tree | None = field(default=None, repr=False)

    @property
    def table_text(self) -> str:
        return format_table(self.x_table, self.y_table)

    @property
    def prompt(self) -> str:
        return build_prompt(self.x_table, self.y_table)

    @property
    def bare_prompt(self) -> str:
        """The variant with the bare table and no instructions."""
        return self.table_text


# ---------------------------------------------------------------------------------------------------- prompt
def format_row(x0: float, x1: float, y: float) -> str:
    return f"{x0:+.4f}, {x1:+.4f} \u2192 {y:+.6f}"


def format_table(x: np.ndarray, y: np.ndarray) -> str:
    return "\n".join(format_row(float(a), float(b), float(c)) for (a, b), c in zip(x, y))


def build_prompt(x: np.ndarray, y: np.ndarray) -> str:
    """The exact prompt of the issue: two lines, blank, table, blank, two lines, no trailing newline."""
    return f"{PROMPT_HEAD}\n\n{format_table(x, y)}\n\n{PROMPT_TAIL}"


def parse_compact_table(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse 'x0,x1→y; x0,x1→y; ...' (unicode or ASCII minus, '->' also accepted) into (x (n,2), y (n,))."""
    rows = []
    for i, chunk in enumerate(c for c in text.replace("\n", ";").split(";") if c.strip()):
        s = chunk.replace("\u2212", "-").replace("->", "\u2192").strip()
        try:
            lhs, rhs = s.split("\u2192")
            a, b = lhs.split(",")
            rows.append((float(a), float(b), float(rhs)))
        except ValueError as e:
            raise NlakitError(f"table row {i + 1} ({chunk.strip()!r}) is not 'x0,x1→y'", "write each row as +0.1234,-0.5678→+1.234567") from e
    if not rows:
        raise NlakitError("the table has no rows", "pass rows like +0.1234,-0.5678→+1.234567 separated by ';'")
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, :2], arr[:, 2]


def reference_task() -> Task:
    x, y = parse_compact_table(REFERENCE_TABLE)
    return Task(id="reference", source="reference", truth=None, n_nodes=None, x_table=x, y_table=y)


# ---------------------------------------------------------------------------------------------------- trees
def n_nodes(t: Tree) -> int:
    if t[0] in VARIABLES or t[0] == "c":
        return 1
    return 1 + sum(n_nodes(c) for c in t[1:])


def has_variable(t: Tree) -> bool:
    if t[0] in VARIABLES:
        return True
    return t[0] != "c" and any(has_variable(c) for c in t[1:])


def evaluate(t: Tree, x: np.ndarray) -> np.ndarray:
    """Evaluate a tree on inputs x (n, 2) -> (n,)."""
    op = t[0]
    if op == "x0":
        return x[:, 0]
    if op == "x1":
        return x[:, 1]
    if op == "c":
        return np.full(len(x), t[1])
    a = evaluate(t[1], x)
    with np.errstate(all="ignore"):  # inf/nan are filtered by the callers
        if op == "cos":
            return np.cos(a)
        if op == "pow2":
            return a * a
        if op == "pow3":
            return a * a * a
        b = evaluate(t[2], x)
        return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op]


def denominators(t: Tree) -> list[Tree]:
    if t[0] in VARIABLES or t[0] == "c":
        return []
    out = [t[2]] if t[0] == "div" else []
    for c in t[1:]:
        out += denominators(c)
    return out


def folds_constants(t: Tree) -> bool:
    """True if some operator acts on constants only (2 + 3, cos(2)) or multiplies/divides by 1: not the simplest form."""
    if t[0] in VARIABLES or t[0] == "c":
        return False
    if not has_variable(t):
        return True
    if t[0] in ("mul", "div") and any(c == ("c", 1.0) for c in t[1:]):
        return True
    return any(folds_constants(c) for c in t[1:])


def too_nested(t: Tree) -> bool:
    """Keep equations readable: cos and powers apply to at most 3 nodes, never to themselves (cos(cos(.)), (a^2)^3)."""
    if t[0] in VARIABLES or t[0] == "c":
        return False
    if t[0] in UNARY:
        child = t[1]
        if n_nodes(child) > MAX_UNARY_CHILD or child[0] == t[0] or (t[0] != "cos" and child[0] in ("pow2", "pow3")):
            return True
    return any(too_nested(c) for c in t[1:])


def to_sympy(t: Tree):
    import sympy as sp

    op = t[0]
    if op in VARIABLES:
        return sp.Symbol(op, real=True)
    if op == "c":
        return sp.Rational(str(t[1]))
    a = to_sympy(t[1])
    if op == "cos":
        return sp.cos(a)
    if op == "pow2":
        return a**2
    if op == "pow3":
        return a**3
    b = to_sympy(t[2])
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op]


def to_infix(t: Tree) -> str:
    """Fully parenthesised infix with ^ (readable, and parseable by `parse`)."""
    op = t[0]
    if op in VARIABLES:
        return op
    if op == "c":
        return f"{t[1]:g}"
    if op == "cos":
        return f"cos({to_infix(t[1])})"
    if op in ("pow2", "pow3"):
        return f"({to_infix(t[1])})^{op[-1]}"
    sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
    return f"({to_infix(t[1])} {sym} {to_infix(t[2])})"


def random_tree(rng: random.Random, size: int) -> Tree:
    """A uniformly shaped random tree with exactly `size` nodes."""
    if size == 1:
        if rng.random() < 0.65:
            return (rng.choice(VARIABLES),)
        return ("c", rng.choice(CONSTANTS))
    if size == 2 or rng.random() < 0.25:
        return (rng.choices(UNARY, weights=(0.5, 0.3, 0.2))[0], random_tree(rng, size - 1))
    left = rng.randint(1, size - 2)
    return (rng.choices(BINARY, weights=(0.3, 0.25, 0.25, 0.2))[0], random_tree(rng, left), random_tree(rng, size - 1 - left))


_GRID_X = None


def _grid() -> np.ndarray:
    global _GRID_X
    if _GRID_X is None:
        g = np.linspace(*X_RANGE, _GRID)
        a, b = np.meshgrid(g, g)
        _GRID_X = np.stack([a.ravel(), b.ravel()], axis=1)
    return _GRID_X


def _subtrees(t: Tree) -> list[Tree]:
    if t[0] in VARIABLES or t[0] == "c":
        return [t]
    return [t] + [s for c in t[1:] for s in _subtrees(c)]


def acceptable(t: Tree) -> bool:
    """Grammar-level checks: a variable, no constant folding, no pole near the domain, a bounded non-flat y,
    and no sub-expression that cancels to a constant (x1 - x1, x0 / x0)."""
    if not has_variable(t) or folds_constants(t) or too_nested(t) or not MIN_NODES <= n_nodes(t) <= MAX_NODES:
        return False
    g = _grid()
    for d in denominators(t):
        if np.nanmin(np.abs(evaluate(d, g))) < MIN_DENOMINATOR:
            return False
    for s in _subtrees(t):
        if has_variable(s) and s[0] not in VARIABLES and np.nanstd(evaluate(s, g)) < 1e-9:
            return False
    y = evaluate(t, g)
    return bool(np.all(np.isfinite(y)) and np.abs(y).max() <= MAX_ABS_Y and y.std() >= 0.05)


def sympy_nodes(expr) -> int:
    """Node count of a sympy expression in the grammar's terms (x^2 and x^3 one operator node, a/b one node, -a one node)."""
    import sympy as sp

    if expr.is_Symbol or expr.is_Number:
        return 1
    if isinstance(expr, sp.Pow):
        extra = 0 if expr.exp in (2, 3, -1) else 1
        return 1 + extra + sympy_nodes(expr.base)
    if isinstance(expr, (sp.Add, sp.Mul)):
        args = list(expr.args)
        if isinstance(expr, sp.Mul) and args[0] == -1:
            return 1 + sympy_nodes(sp.Mul(*args[1:]))
        return sum(sympy_nodes(a) for a in args) + len(args) - 1
    return 1 + sum(sympy_nodes(a) for a in expr.args)


def generate_tasks(n_tasks: int, seed: int = 0) -> list[Task]:
    """`n_tasks` distinct random equations with tables and held-out points (deterministic in `seed`)."""
    import sympy as sp

    if n_tasks < 0:
        raise NlakitError(f"n_tasks is {n_tasks}", "pass --n-tasks 0 or more")
    rng = random.Random(seed)
    seen: set[bytes] = set()
    probe = np.random.default_rng(12345).uniform(*X_RANGE, size=(16, 2))  # distinctness signature points
    tasks: list[Task] = []
    tries = 0
    while len(tasks) < n_tasks:
        tries += 1
        if tries > 200_000:  # pragma: no cover - the grammar is far from exhausted at these sizes
            raise NlakitError(f"could not find {n_tasks} distinct equations", "ask for fewer tasks")
        size = MIN_NODES + len(tasks) % (MAX_NODES - MIN_NODES + 1)  # cycle through sizes so every size appears
        tree = random_tree(rng, size)
        if not acceptable(tree):
            continue
        expr = to_sympy(tree)
        if not expr.free_symbols or expr.is_Symbol or sympy_nodes(expr) < size - 2:  # cancelled: not the simplest form
            continue
        if any(isinstance(a, sp.cos) and a.is_number for a in expr.atoms(sp.cos)):
            continue
        sig = np.round(evaluate(tree, probe), 6).tobytes()
        if sig in seen:
            continue
        seen.add(sig)
        i = len(tasks)
        xr = np.random.default_rng([seed, i])
        x_table = np.round(xr.uniform(*X_RANGE, size=(N_TABLE, 2)), 4)
        y_table = np.round(evaluate(tree, x_table), 6)
        x_held = xr.uniform(*X_RANGE, size=(N_HELDOUT, 2))
        tasks.append(Task(id=f"t{i:02d}", source="generated", truth=sp.sstr(expr), n_nodes=n_nodes(tree), x_table=x_table,
                          y_table=y_table, x_heldout=x_held, y_heldout=evaluate(tree, x_held), tree=tree))
    return tasks


# ---------------------------------------------------------------------------------------------------- forms
FORMS = ("cos", "power", "division", "linear")


def expression_form(expr) -> dict[str, bool]:
    """Which operators a sympy expression uses: cos, integer powers >= 2, division by a non-constant, and whether it
    is linear (affine in x0, x1 with at least one of them: a bare constant has none of the four flags)."""
    import sympy as sp

    pows = list(expr.atoms(sp.Pow))
    has_cos = expr.has(sp.cos)
    power = any(p.exp.is_number and p.exp > 1 for p in pows)
    division = any(p.exp.is_number and p.exp < 0 for p in pows)
    linear = False
    if not has_cos and not division and not any(isinstance(a, sp.Function) for a in expr.atoms(sp.Function)):
        try:
            linear = bool(expr.free_symbols) and sp.Poly(expr, *sorted(expr.free_symbols, key=str)).total_degree() <= 1
        except sp.PolynomialError:
            linear = False
    return {"cos": bool(has_cos), "power": bool(power), "division": bool(division), "linear": bool(linear)}
