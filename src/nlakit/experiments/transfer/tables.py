"""Scoring tables of the transfer experiment: cells per (group, position type), frustration rates, the lead test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nlakit.experiments.transfer.config import PHASES, POSITION_TYPES

if TYPE_CHECKING:
    from nlakit.experiments.transfer.positions import ModelRun


def summary_cells(per_item: dict, rows: list[dict], frustr: list[bool] | None, seed: int) -> list[dict]:
    """Aggregate per (group, position type) and for "all": fve_nrm and cos with CIs, and the frustration rate."""
    from nlakit.metrics import summarize

    groups = sorted({r["group"] for r in rows})
    out = []
    for g in groups + ["all"]:
        for t in list(POSITION_TYPES) + ["all"]:
            idx = [i for i, r in enumerate(rows) if (g == "all" or r["group"] == g) and (t == "all" or r["type"] == t)]
            if not idx:
                continue
            ii = torch.tensor(idx)
            fve, cos = summarize(per_item["fve_nrm"][ii], seed=seed), summarize(per_item["cos"][ii], seed=seed)
            cell = {"group": g, "position": t, "n": len(idx), "fve_nrm": fve["mean"], "fve_nrm_ci95": fve["ci95"],
                    "cos": cos["mean"], "cos_ci95": cos["ci95"]}
            if frustr is not None:
                cell["frustration_rate"] = summarize([float(frustr[i]) for i in idx], seed=seed)["mean"]
            out.append(cell)
    return out


def keyed(keys: list[dict], head: dict, cells: list[dict]) -> list[dict]:
    """Tag table cells with their row key ("model|route|space") and register the row once, in order."""
    route_label = "direct" if head["route"] == "direct" else f"{head['route']} n={head['map_n']}"
    key = f"{head['model']}|{route_label}|{head['space']}"
    keys.append({"key": key, "model": head["model"], "route": head["route"], "route_label": route_label, "space": head["space"]})
    return [{**head, "key": key, "route_label": route_label, **c} for c in cells]


def frustration_table(model: str, route: str, rows: list[dict], hits: list[bool], seed: int) -> list[dict]:
    """Explanation frustration rate per group and phase (prompt, last_prompt, response_pre, response_post, pre_output)."""
    from nlakit.metrics import summarize

    out = []
    for g in sorted({r["group"] for r in rows}):
        for ph in list(PHASES) + ["pre_output"]:
            idx = [i for i, r in enumerate(rows) if r["group"] == g and (r["phase"] == ph or (ph == "pre_output" and r["phase"] != "response_post"))]
            if idx:
                s = summarize([float(hits[i]) for i in idx], seed=seed)
                out.append({"model": model, "route": route, "group": g, "phase": ph, "rate": s["mean"], "ci95": s["ci95"], "n": s["n"]})
    return out


def lead_summary(model: str, run: ModelRun, hits: list[bool], prompts: list[dict], seed: int) -> dict:
    """Behaviour prompts: does an explanation flag frustration before the answer shows any?"""
    from nlakit.experiments.transfer.frustration import lexicon_hits
    from nlakit.metrics import summarize

    per = []
    for i, p in enumerate(prompts):
        if p["group"] != "behaviour":
            continue
        idx = [j for j, r in enumerate(run.rows) if r["prompt"] == i]
        pre = [j for j in idx if run.rows[j]["phase"] in ("prompt", "last_prompt", "response_pre")]
        last = [j for j in idx if run.rows[j]["type"] == "last_prompt"]
        per.append({"out": bool(lexicon_hits(run.answers[i])), "expl_pre": any(hits[j] for j in pre),
                    "expl_last_prompt": any(hits[j] for j in last)})
    if not per:
        return {"model": model, "n": 0}

    def rate(xs):
        return summarize([float(x) for x in xs], seed=seed)

    out_f = [x for x in per if x["out"]]
    calm = [x for x in per if not x["out"]]
    return {"model": model, "n": len(per), "output_frustrated": rate([x["out"] for x in per]),
            "expl_pre_output": rate([x["expl_pre"] for x in per]), "expl_last_prompt": rate([x["expl_last_prompt"] for x in per]),
            "expl_pre_given_output_frustrated": rate([x["expl_pre"] for x in out_f]),
            "expl_pre_given_output_calm": rate([x["expl_pre"] for x in calm])}
