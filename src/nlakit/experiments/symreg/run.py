"""Can a small LM find the equation behind a 24-row table, and does its NLA explanation foretell the answer's form?

    nlakit experiment symreg --target smollm2 --n-tasks 20 --out docs/experiments/symreg
    nlakit experiment symreg --nla runs/nla --train-data train.jsonl.gz   # part 4 with a trained NLA

1. Tasks (`tasks`): random equations in x0, x1 from a small grammar (3-9 nodes), a 24-row table and
   200 held-out points each, plus the built-in reference table of the issue (equation unknown).
2. The target answers the exact prompt of the issue (chat template, greedy), and a variant with the bare
   table and no instructions. Answers are parsed by `parse` (the last `y =` that parses).
3. Every method is scored (`methods.score`) by held-out R² and exact recovery: the model (two
   prompts), pyoperon (optional dependency), an exhaustive search over the grammar, a degree-5 polynomial
   least-squares fit and a linear fit. The reference table is scored by table R² and table fit only.
4. NLA decode at the final prompt token and a few earlier positions (`nla`): explanation, fve_nrm/cos
   beside the baselines, and whether the explanation foretells the form of the model's answer and of the true
   equation, against a shuffled pairing. Skipped, with a note, when no NLA is available.
5. Results JSON (`symreg.json`), rendered to `symreg.html` by `nlakit.report` (template `symreg.html.j2`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress, hardware
from nlakit.experiments.symreg import methods as M
from nlakit.experiments.symreg import tasks as T

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_METHODS = ("model", "model_bare")
FIT_METHODS = ("pyoperon", "search", "poly5", "linear")
ALL_METHODS = MODEL_METHODS + FIT_METHODS
DEFAULT_BASELINES = ("mean", "ridge_token", "echo_ar8", "echo_ar32")

@dataclass(frozen=True)
class SymregConfig:
    """Every knob of a symreg run (saved in the results JSON)."""

    target: str = "smollm2"
    n_tasks: int = 20
    seed: int = 0
    include_reference: bool = True
    methods: tuple[str, ...] = ALL_METHODS
    max_new_tokens: int = 64
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    nla: str | None = "default"  # None: skip part 4
    train_data: str | None = None  # training text for the ridge baselines of part 4
    n_train_positions: int = 500
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    nla_max_new_tokens: int = 150
    n_shuffles: int = 1000
    pyoperon_schedule_s: tuple[int, ...] = (2, 5, 15)
    search_max_size: int = 7
    search_time_s: float = 20.0

    def __post_init__(self):
        problems = []
        if self.n_tasks < 0:
            problems.append("n_tasks must be >= 0")
        if self.n_tasks == 0 and not self.include_reference:
            problems.append("no tasks: n_tasks is 0 and the reference table is off")
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            problems.append(f"unknown methods {unknown} (known: {list(ALL_METHODS)})")
        if not self.methods:
            problems.append("no methods")
        for name in ("max_new_tokens", "batch_size", "nla_max_new_tokens", "n_shuffles", "search_max_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not self.pyoperon_schedule_s or min(self.pyoperon_schedule_s) < 1:
            problems.append("pyoperon_schedule_s needs at least one run of >= 1 s")
        if self.train_data is not None and not Path(self.train_data).exists():
            problems.append(f"train_data {self.train_data} does not exist")
        if problems:
            raise NlakitError("bad symreg settings: " + "; ".join(problems), "fix the options named above")

    @property
    def needs_target(self) -> bool:
        return any(m in MODEL_METHODS for m in self.methods) or self.nla is not None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SymregConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**kw)


# ---------------------------------------------------------------------------------------------------- helpers
def _fit(method: str, task: T.Task, cfg: SymregConfig) -> M.Fit:
    x, y = task.x_table, task.y_table
    if method == "linear":
        return M.fit_linear(x, y)
    if method == "poly5":
        return M.fit_poly(x, y, degree=5)
    if method == "pyoperon":
        return M.fit_pyoperon(x, y, schedule_s=cfg.pyoperon_schedule_s, seed=cfg.seed)
    if method == "search":
        return M.fit_search(x, y, max_size=cfg.search_max_size, time_budget_s=cfg.search_time_s)
    raise AssertionError(method)


def _answer_fit(method: str, answer: str) -> M.Fit:
    from nlakit.experiments.symreg.parse import parse_answer

    p = parse_answer(answer)
    return M.Fit(method, p.expr, error=p.error, raw=answer, note=None if p.ok else "unparseable")


def _clip_r2(v: float | None) -> float:
    return M.R2_FLOOR if v is None or not np.isfinite(v) else max(M.R2_FLOOR, float(v))


def summarize_methods(tasks: list[dict], methods: tuple[str, ...]) -> dict[str, dict]:
    """Per method over the generated tasks: recovery rate (95% CI), median held-out R² (clipped at R2_FLOOR; an
    unparseable answer counts as the floor), parse rate, table-fit rate, total runtime; plus the reference result."""
    from nlakit.metrics import summarize

    out = {}
    gen = [t for t in tasks if t["source"] == "generated"]
    ref = next((t for t in tasks if t["source"] == "reference"), None)
    for m in methods:
        rows = [t["methods"][m] for t in gen if m in t["methods"]]
        rec = summarize([float(bool(r["recovered"])) for r in rows]) if rows else {"mean": None, "ci95": [None, None], "n": 0}
        r2 = [_clip_r2(r["r2_heldout"]) for r in rows]
        entry = {"n": len(rows), "recovery_rate": rec["mean"], "recovery_ci95": rec["ci95"],
                 "median_r2": float(np.median(r2)) if r2 else None, "mean_r2_clipped": float(np.mean(r2)) if r2 else None,
                 "parse_rate": float(np.mean([r["parsed"] for r in rows])) if rows else None,
                 "fits_table_rate": float(np.mean([r["fits_table"] for r in rows])) if rows else None,
                 "runtime_s": float(sum(r["runtime_s"] for r in rows))}
        if ref is not None and m in ref["methods"]:
            rr = ref["methods"][m]
            entry["reference"] = {"expr": rr["expr"], "r2_table": rr["r2_table"], "fits_table": rr["fits_table"],
                                  "table_max_err": rr["table_max_err"]}
        out[m] = entry
    return out


def _form_prediction(tasks: list[dict], nla_rows: list[dict], cfg: SymregConfig) -> dict[str, dict]:
    """Per position: agreement of the explanation's form flags with the model answer's and with the truth's."""
    from nlakit.experiments.symreg.nla import POSITIONS, agreement

    out: dict[str, dict] = {}
    for name in POSITIONS:
        rows = [r for r in nla_rows if r["position"] == name]
        if not rows:
            continue
        pred = [r["mentioned"] for r in rows]
        answer = [tasks[r["task"]]["methods"].get("model", {}).get("form") for r in rows]
        truth = [tasks[r["task"]]["truth_form"] for r in rows]
        out[name] = {"model_answer": agreement(pred, answer, n_shuffles=cfg.n_shuffles, seed=cfg.seed),
                     "true_equation": agreement(pred, truth, n_shuffles=cfg.n_shuffles, seed=cfg.seed)}
    return out


# ---------------------------------------------------------------------------------------------------- run
def run(cfg: SymregConfig, *, target=None, nla=None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the experiment; returns the results JSON (a dict). `target`/`nla` may be passed pre-loaded (tests).

    Returns:
        {"kind": "symreg", "config", "hardware", "target", "tasks": [{id, source, truth, truth_form, n_nodes, table,
         methods: {method: {expr, parsed, r2_heldout, r2_table, table_max_err, fits_table, exact_sympy, exact_numeric,
         recovered, form, raw, error, note, runtime_s}}}], "summary": {method: {...}}, "nla": {...}, "runtime_s"}
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    tasks = ([T.reference_task()] if cfg.include_reference else []) + T.generate_tasks(cfg.n_tasks, cfg.seed)
    methods = tuple(m for m in ALL_METHODS if m in cfg.methods)
    notes: list[str] = []
    if "pyoperon" in methods and not M.pyoperon_available():
        notes.append("pyoperon is not installed: its column is empty (pip install 'nlakit[symreg]').")

    # 1-2. the target's answers (chat template, greedy)
    answers: dict[str, list[str]] = {}
    if cfg.needs_target and target is None:
        from nlakit.targets import load_target

        t0 = time.perf_counter()
        target = load_target(cfg.target, device=cfg.device, dtype=cfg.dtype)
        timings["load_target"] = time.perf_counter() - t0
    for m, prompts in (("model", [t.prompt for t in tasks]), ("model_bare", [t.bare_prompt for t in tasks])):
        if m not in methods:
            continue
        t0 = time.perf_counter()
        answers[m] = []
        for s in range(0, len(prompts), cfg.batch_size):
            answers[m] += target.generate(prompts[s : s + cfg.batch_size], chat=True, max_new_tokens=cfg.max_new_tokens,
                                          temperature=0.0, seed=cfg.seed, batch_size=cfg.batch_size)
            if progress is not None:
                progress(f"generate ({m})", len(answers[m]), len(prompts))
        timings[f"generate_{m}"] = time.perf_counter() - t0
        for i, a in enumerate(answers[m]):
            log.debug("%s %s: %r", m, tasks[i].id, a)

    # 3. every method on every table, scored
    records: list[dict] = []
    for k, task in enumerate(tasks):
        fits = {m: _answer_fit(m, answers[m][k]) if m in MODEL_METHODS else _fit(m, task, cfg) for m in methods}
        records.append(_record(task, fits))
        for m, fit in fits.items():
            timings[f"fit_{m}"] = timings.get(f"fit_{m}", 0.0) + fit.runtime_s
        if progress is not None:
            progress("methods", k + 1, len(tasks))

    # 4. NLA decode (optional)
    nla_part = _run_nla(cfg, tasks, records, target, nla, progress, timings)

    summary = summarize_methods(records, methods)
    timings["total"] = time.perf_counter() - t_start
    return {"kind": "symreg", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "hardware": hardware(),
            "target": {"spec": getattr(target, "spec", cfg.target), "name": getattr(target, "name", None)} if target else None,
            "methods": list(methods), "prompt_example": tasks[0].prompt if tasks else None,
            "constants": {"table_atol": M.TABLE_ATOL, "exact_tol": M.EXACT_TOL, "r2_floor": M.R2_FLOOR},
            "tasks": records, "summary": summary, "nla": nla_part, "notes": notes,
            "runtime_s": {k: round(v, 3) for k, v in timings.items()}}


def _record(task: T.Task, fits: dict[str, M.Fit]) -> dict:
    """One task's entry of the results JSON: the equation and every method's scored fit."""
    import sympy as sp

    truth_form = T.expression_form(sp.sympify(task.truth, locals=_symbols())) if task.truth else None
    rec = {"id": task.id, "source": task.source, "truth": task.truth, "truth_form": truth_form, "n_nodes": task.n_nodes,
           "table": task.table_text, "methods": {}}
    for m, fit in fits.items():
        rec["methods"][m] = {**M.score(fit.expr, task), "raw": fit.raw, "error": fit.error, "note": fit.note,
                             "runtime_s": round(fit.runtime_s, 4)}
    return rec


def rescore(results: dict) -> dict:
    """Re-derive every score of a results JSON from its stored raw outputs, with the current parser, scorer and form
    patterns; no model runs. Model answers are re-parsed, fitted expressions re-scored, NLA explanations re-read for
    form flags (fve/cos are kept). Tasks are regenerated from the saved seed and must match the saved equations."""
    import sympy as sp

    from nlakit.experiments.symreg import nla as N

    if results.get("kind") != "symreg":
        raise NlakitError("the JSON is not a symreg results file", "pass the symreg.json written by nlakit experiment symreg")
    saved = results["config"]
    cfg = SymregConfig.from_dict({**saved, "train_data": None})  # the training file may live elsewhere by now
    tasks = ([T.reference_task()] if cfg.include_reference else []) + T.generate_tasks(cfg.n_tasks, cfg.seed)
    if [(t.id, t.truth) for t in tasks] != [(r["id"], r["truth"]) for r in results["tasks"]]:
        raise NlakitError("the results JSON does not match the tasks its seed generates (made by another nlakit version?)",
                          "re-run nlakit experiment symreg instead of rescoring")
    methods = tuple(results["methods"])
    records = []
    for task, old in zip(tasks, results["tasks"]):
        fits = {}
        for m in methods:
            o = old["methods"][m]
            if m in MODEL_METHODS:
                fits[m] = _answer_fit(m, o["raw"] or "")
            else:
                expr = sp.sympify(o["expr"], locals=_symbols()) if o["expr"] else None
                fits[m] = M.Fit(m, expr, error=o["error"], runtime_s=o["runtime_s"], raw=o["raw"], note=o["note"])
        records.append(_record(task, fits))
    out = {**results, "tasks": records, "summary": summarize_methods(records, methods),
           "rescored": {"note": "scores re-derived from the stored outputs by symreg.rescore (no model was run)"}}
    if results["nla"].get("available"):
        nla = dict(results["nla"])
        nla["rows"] = [{**r, "mentioned": N.mentioned_form(r["explanation"])} for r in nla["rows"]]
        nla["form_prediction"] = _form_prediction(records, nla["rows"], cfg)
        nla["form_patterns"] = N.FORM_PATTERNS
        out["nla"] = nla
    return out


def _symbols() -> dict:
    import sympy as sp

    return {"x0": sp.Symbol("x0", real=True), "x1": sp.Symbol("x1", real=True)}


def _run_nla(cfg: SymregConfig, tasks: list[T.Task], records: list[dict], target, nla, progress, timings) -> dict:
    from nlakit.experiments.symreg import nla as N

    if cfg.nla is None and nla is None:
        return {"available": False, "note": "NLA decode not requested (--no-nla)."}
    t0 = time.perf_counter()
    if nla is None:
        from nlakit.bundle import load_nla

        try:
            nla = load_nla(cfg.nla, device=cfg.device, dtype=cfg.dtype, target=target)
        except NlakitError as e:
            log.warning("NLA decode skipped: %s", e)
            return {"available": False, "note": f"NLA decode skipped: {e}"}
    if nla.d_model != target.d_model:
        return {"available": False, "note": f"NLA decode skipped: the NLA has d_model {nla.d_model}, the target {target.d_model}."}
    train_texts = None
    if cfg.train_data:
        from nlakit.io import read_jsonl

        train_texts = [r["text"] for r in read_jsonl(cfg.train_data, limit=4 * cfg.n_train_positions) if isinstance(r.get("text"), str)]
    chat = [target.chat_text([{"role": "user", "content": t.prompt}]) for t in tasks]
    part = N.decode(nla, target, chat, [t.prompt for t in tasks], baselines=cfg.baselines, train_texts=train_texts,
                    n_train_positions=cfg.n_train_positions, max_new_tokens=cfg.nla_max_new_tokens, batch_size=cfg.batch_size,
                    seed=cfg.seed, progress=progress)
    for r in part["rows"]:
        r["task_id"] = records[r["task"]]["id"]
    part["form_prediction"] = _form_prediction(records, part["rows"], cfg)
    part["positions"] = list(N.POSITIONS)
    part["form_patterns"] = N.FORM_PATTERNS
    timings["nla"] = time.perf_counter() - t0
    return {"available": True, "note": None, **part}
