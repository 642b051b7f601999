"""symreg task generator, prompt format and the reference table."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nlakit.errors import NlakitError
from nlakit.experiments.symreg import tasks as T


@pytest.fixture(scope="module")
def tasks():
    return T.generate_tasks(14, seed=3)


def test_generator_is_deterministic_and_seeded(tasks):
    again = T.generate_tasks(14, seed=3)
    assert [t.truth for t in again] == [t.truth for t in tasks]
    assert all(np.array_equal(a.x_table, b.x_table) and np.array_equal(a.y_heldout, b.y_heldout) for a, b in zip(again, tasks))
    other = T.generate_tasks(14, seed=4)
    assert [t.truth for t in other] != [t.truth for t in tasks]


def test_tasks_follow_the_grammar(tasks):
    x0, x1 = sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)
    assert len({t.truth for t in tasks}) == len(tasks)  # distinct equations
    for t in tasks:
        assert t.n_nodes == T.n_nodes(t.tree) and T.MIN_NODES <= t.n_nodes <= T.MAX_NODES
        assert t.x_table.shape == (T.N_TABLE, 2) and t.y_table.shape == (T.N_TABLE,)
        assert t.x_heldout.shape == (T.N_HELDOUT, 2) and t.y_heldout.shape == (T.N_HELDOUT,)
        assert np.all(np.abs(t.x_table) <= 2) and np.all(np.abs(t.x_heldout) <= 2)
        expr = sp.sympify(t.truth, locals={"x0": x0, "x1": x1})
        assert expr.free_symbols and expr.free_symbols <= {x0, x1}
        f = sp.lambdify((x0, x1), expr, "numpy")
        assert np.allclose(np.broadcast_to(f(t.x_heldout[:, 0], t.x_heldout[:, 1]), (T.N_HELDOUT,)), t.y_heldout)
        # the table is exact to its printed precision: y computed from the x as printed
        assert np.all(np.abs(T.evaluate(t.tree, t.x_table) - t.y_table) <= 5e-7)
        assert np.array_equal(t.x_table, np.round(t.x_table, 4))
        assert not T.folds_constants(t.tree) and not T.too_nested(t.tree)


def test_every_size_appears():
    sizes = {t.n_nodes for t in T.generate_tasks(7, seed=0)}
    assert sizes == set(range(T.MIN_NODES, T.MAX_NODES + 1))


def test_no_denominator_near_zero():
    # trees with a pole in the square are rejected; safe ones are kept
    assert not T.acceptable(("div", ("x0",), ("x1",)))
    assert not T.acceptable(("div", ("x0",), ("sub", ("x1",), ("c", 1.0))))
    assert T.acceptable(("div", ("x0",), ("add", ("pow2", ("x1",)), ("c", 1.0))))
    grid = np.random.default_rng(0).uniform(-2, 2, size=(5000, 2))
    for t in T.generate_tasks(20, seed=1):
        for d in T.denominators(t.tree):
            assert np.abs(T.evaluate(d, grid)).min() >= T.MIN_DENOMINATOR * 0.9


def test_degenerate_trees_are_rejected():
    assert not T.acceptable(("add", ("c", 2.0), ("c", 3.0)))  # no variable
    assert not T.acceptable(("add", ("x0",), ("cos", ("c", 2.0))))  # constant folding
    assert not T.acceptable(("mul", ("x0",), ("sub", ("x1",), ("x1",))))  # cancels to a constant
    assert not T.acceptable(("cos", ("cos", ("x0",))))  # too nested
    assert not T.acceptable(("mul", ("x0",), ("c", 1.0)))  # times one


def test_prompt_is_exactly_the_issue_format(tasks):
    t = tasks[0]
    lines = t.prompt.split("\n")
    assert lines[0] == "A hidden equation generated these noiseless samples. Variables are x0 and x1."
    assert lines[1] == "Infer the simplest symbolic equation for y. Use operators +, -, *, /, powers, and cos if useful."
    assert lines[2] == ""
    assert lines[3 : 3 + T.N_TABLE] == [f"{a:+.4f}, {b:+.4f} \u2192 {c:+.6f}" for (a, b), c in zip(t.x_table, t.y_table)]
    assert lines[3 + T.N_TABLE] == ""
    assert lines[4 + T.N_TABLE :] == ["Answer with exactly one line in this format:", "y = <expression using x0 and x1>"]
    assert not t.prompt.endswith("\n") and "\u2192" in t.prompt
    assert t.bare_prompt == "\n".join(lines[3 : 3 + T.N_TABLE])


def test_reference_table():
    ref = T.reference_task()
    assert ref.x_table.shape == (24, 2) and ref.truth is None and ref.x_heldout is None
    assert ref.prompt.split("\n")[3] == "+0.7294, -1.7847 \u2192 -0.498694"
    assert ref.prompt.split("\n")[26] == "-1.9421, -1.8698 \u2192 +2.535358"
    assert ref.y_table[5] == pytest.approx(0.810805)


def test_bad_input_raises_nlakit_error():
    with pytest.raises(NlakitError, match="n_tasks"):
        T.generate_tasks(-1)
    with pytest.raises(NlakitError, match="row 2"):
        T.parse_compact_table("+0.1,+0.2→+0.3; garbage")
    with pytest.raises(NlakitError, match="no rows"):
        T.parse_compact_table(" ; ")


def test_expression_form():
    x0, x1 = sp.symbols("x0 x1", real=True)
    assert T.expression_form(2 * x0 + x1 - 1) == {"cos": False, "power": False, "division": False, "linear": True}
    assert T.expression_form(x0**2 + sp.cos(x1)) == {"cos": True, "power": True, "division": False, "linear": False}
    assert T.expression_form(x0 / (x1**2 + 1))["division"] and not T.expression_form(x0 / 2)["division"]
    assert not T.expression_form(x0 * x1)["linear"]
    assert T.expression_form(sp.Rational(7, 5)) == dict.fromkeys(T.FORMS, False)  # a constant answer has no form
