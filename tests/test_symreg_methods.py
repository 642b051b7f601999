"""symreg scorer and baseline fits (linear, polynomial, exhaustive search, pyoperon)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nlakit.experiments.symreg import methods as M
from nlakit.experiments.symreg import tasks as T

x0, x1 = sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)


def make_task(tree) -> T.Task:
    rng = np.random.default_rng(0)
    xt = np.round(rng.uniform(-2, 2, size=(24, 2)), 4)
    xh = rng.uniform(-2, 2, size=(200, 2))
    return T.Task(id="t", source="generated", truth=sp.sstr(T.to_sympy(tree)), n_nodes=T.n_nodes(tree), x_table=xt,
                  y_table=np.round(T.evaluate(tree, xt), 6), x_heldout=xh, y_heldout=T.evaluate(tree, xh), tree=tree)


COS_TASK = ("sub", ("mul", ("c", 2.5), ("cos", ("x1",))), ("x0",))  # 2.5 cos(x1) - x0
LIN_TASK = ("sub", ("mul", ("c", 3.0), ("x0",)), ("x1",))  # 3 x0 - x1
POLY_TASK = ("mul", ("pow2", ("x0",)), ("x1",))  # x0^2 x1


def test_score_exact_equivalent_wrong_and_missing():
    task = make_task(COS_TASK)
    same = M.score(sp.Rational(5, 2) * sp.cos(x1) - x0, task)
    assert same["recovered"] and same["exact_sympy"] and same["exact_numeric"] and same["fits_table"]
    assert same["r2_heldout"] == pytest.approx(1.0) and same["form"] == {"cos": True, "power": False, "division": False, "linear": False}
    # an equivalent but differently written form is still exact (sympy proves it)
    equiv = M.score(5 * sp.cos(x1) / 2 - x0 + sp.sin(x1) ** 2 + sp.cos(x1) ** 2 - 1, task)
    assert equiv["recovered"] and equiv["exact_sympy"]
    # close but not equal: high R², not recovered
    near = M.score(sp.Float(2.49) * sp.cos(x1) - x0, task)
    assert not near["recovered"] and near["r2_heldout"] > 0.99 and not near["exact_sympy"]
    wrong = M.score(x0 + x1, task)
    assert not wrong["recovered"] and wrong["r2_heldout"] < 0.5
    missing = M.score(None, task)
    assert missing["parsed"] is False and missing["recovered"] is False and missing["r2_heldout"] is None


def test_score_pole_gives_no_r2():
    task = make_task(LIN_TASK)
    s = M.score(1 / (x0 - task.x_heldout[0, 0]), task)  # undefined at one held-out point
    assert s["r2_heldout"] is None or not np.isfinite(s["r2_heldout"]) or s["recovered"] is False
    assert s["recovered"] is False


def test_reference_task_is_scored_on_the_table_only():
    ref = T.reference_task()
    s = M.score(x0**2 + x1, ref)
    assert s["recovered"] is None and s["r2_heldout"] is None and s["r2_table"] is not None and not s["fits_table"]


def test_r2_score():
    y = np.array([1.0, 2.0, 3.0])
    assert M.r2_score(y, y) == 1.0
    assert M.r2_score(np.full(3, 2.0), y) == pytest.approx(0.0)
    assert M.r2_score(np.array([1.0, np.nan, 3.0]), y) is None


def test_snap_constants_all_or_nothing():
    task = make_task(COS_TASK)
    noisy = sp.Float(2.5000004) * sp.cos(sp.Float(1.0000001) * x1) - sp.Float(0.9999997) * x0 + sp.Float(3e-7)
    snapped = M.snap_constants(noisy, task.x_table, task.y_table)
    assert sp.simplify(snapped - (sp.Rational(5, 2) * sp.cos(x1) - x0)) == 0 and not snapped.atoms(sp.Float)
    bad = sp.Float(2.3) * sp.cos(x1) - x0  # does not fit the table: left alone
    assert M.snap_constants(bad, task.x_table, task.y_table) == bad


def test_linear_fit_recovers_a_linear_equation_only():
    lin = make_task(LIN_TASK)
    f = M.fit_linear(lin.x_table, lin.y_table)
    assert M.score(f.expr, lin)["recovered"]
    cos = make_task(COS_TASK)
    assert not M.score(M.fit_linear(cos.x_table, cos.y_table).expr, cos)["recovered"]


def test_poly5_recovers_a_polynomial_not_a_cosine():
    poly = make_task(POLY_TASK)
    f = M.fit_poly(poly.x_table, poly.y_table, degree=5)
    assert M.score(f.expr, poly)["recovered"]
    cos = make_task(COS_TASK)
    s = M.score(M.fit_poly(cos.x_table, cos.y_table).expr, cos)
    assert not s["recovered"] and s["r2_table"] > 0.99  # it fits the table but does not generalise exactly


def test_search_recovers_small_equations_and_the_reference_fits():
    for tree in (COS_TASK, POLY_TASK):
        task = make_task(tree)
        f = M.fit_search(task.x_table, task.y_table, max_size=5, time_budget_s=10)
        assert M.score(f.expr, task)["recovered"], f.expr
    ref = T.reference_task()
    f = M.fit_search(ref.x_table, ref.y_table, max_size=4, time_budget_s=10)
    assert M.score(f.expr, ref)["fits_table"], f.expr


def test_search_returns_a_best_fit_when_nothing_is_exact():
    task = make_task(("div", ("cos", ("mul", ("x0",), ("x1",))), ("add", ("x1",), ("c", 3.0))))
    f = M.fit_search(task.x_table, task.y_table, max_size=2, time_budget_s=5)
    assert f.expr is not None and "best least-squares" in f.note


@pytest.mark.skipif(not M.pyoperon_available(), reason="pyoperon not installed (optional extra)")
def test_pyoperon_finds_a_simple_equation():
    task = make_task(LIN_TASK)
    f = M.fit_pyoperon(task.x_table, task.y_table, schedule_s=(1, 2))
    s = M.score(f.expr, task)
    assert f.expr is not None and s["r2_heldout"] > 0.99


def test_pyoperon_missing_is_reported(monkeypatch):
    monkeypatch.setattr(M, "pyoperon_available", lambda: False)
    f = M.fit_pyoperon(np.zeros((3, 2)), np.zeros(3))
    assert f.expr is None and "pip install" in f.error
