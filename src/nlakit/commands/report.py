"""`nlakit report results.json --out report.html`: render any results JSON as a self-contained HTML page.

The template is chosen by the JSON's ``kind`` (``eval``, ``explain``, or an experiment's kind). Figures for the
kinds defined here are drawn from the JSON alone; nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import console


def figures(kind: str, r: dict) -> dict[str, str]:
    """Inline SVG figures for `kind`, drawn from the results dict only."""
    if kind != "eval" or not r.get("rows"):
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nlakit.report import svg_figure

    nla = np.array([row["fve_nrm"] for row in r["rows"]], dtype=float)
    best = max((a for a in r["aggregate"][1:] if a["fve_nrm"] is not None and not a["name"].startswith("oracle")),
               key=lambda a: a["fve_nrm"], default=None)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    lo = min(-1.0, float(np.nanmin(nla)))
    bins = np.linspace(lo, 1.0, 41)
    ax.hist(nla, bins=bins, alpha=0.75, label="NLA", color="#3b5bdb")
    if best is not None:
        vals = np.array([row["baselines"][best["name"]]["fve_nrm"] for row in r["rows"]], dtype=float)
        ax.hist(vals, bins=bins, alpha=0.5, label=f"{best['name']} (best non-oracle baseline)", color="#f59f00")
    ax.axvline(0, color="#868e96", lw=0.8)
    ax.set_xlabel("fve_nrm per position")
    ax.set_ylabel("positions")
    ax.legend(frameon=False, fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    out = {"hist": svg_figure(fig)}
    lengths = [row.get("n_tokens", 0) for row in r["rows"]]
    if any(lengths):
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ok = np.array([row["ok"] for row in r["rows"]])
        ax.scatter(np.array(lengths)[ok], nla[ok], s=8, alpha=0.6, color="#3b5bdb", label="parsed")
        if (~ok).any():
            ax.scatter(np.array(lengths)[~ok], nla[~ok], s=8, alpha=0.6, color="#e03131", label="not parsed")
        ax.set_xlabel("explanation length (tokens)")
        ax.set_ylabel("fve_nrm")
        ax.legend(frameon=False, fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        out["length"] = svg_figure(fig)
    return out


def render_results(results: dict, out_html: Path, kind: str | None = None) -> Path:
    """Render a results dict (already loaded) to `out_html` with its kind's template."""
    from nlakit.errors import NlakitError
    from nlakit.io import write_text
    from nlakit.report import render

    kind = kind or results.get("kind")
    if not kind:
        raise NlakitError("the results JSON has no 'kind' field", "pass --kind eval|explain|…")
    import jinja2

    try:
        html = render(kind, results, figs=figures(kind, results))
    except (jinja2.UndefinedError, KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise NlakitError(f"the results JSON does not hold what the {kind!r} report needs ({type(e).__name__}: "
                          f"{str(e)[:100]})", "pass the JSON written by the nlakit command of that kind, or re-run it") from e
    return write_text(out_html, html)


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        results_json: Path = typer.Argument(..., help="A results JSON written by nlakit (eval, explain, an experiment)."),
        out: Path = typer.Option(..., "--out", help="HTML file to write."),
        kind: str | None = typer.Option(None, "--kind", help="Template to use (default: the JSON's 'kind' field)."),
    ):
        """Render a results JSON as a self-contained HTML report."""
        from nlakit.io import read_json

        render_results(read_json(results_json), out, kind)
        console.print(f"wrote {out}")
