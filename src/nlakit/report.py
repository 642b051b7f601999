"""Render self-contained HTML reports from results JSON — and from nothing else.

Stages and experiments write results JSON; this module only reads it. No training or experiment code
imports this module (the lesson of nanochat's report module). Templates live in
`nlakit/templates/<kind>.html.j2` and extend `base.html.j2`; plots are inline SVG strings made by
`svg_figure`, so a report is one file with no external assets.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import jinja2

from nlakit.errors import NlakitError
from nlakit.io import read_json, write_text

_TEMPLATES = Path(__file__).parent / "templates"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = lambda x, nd=3: "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))
    return env


def render(kind: str, results: dict[str, Any], **extra: Any) -> str:
    """Render `templates/<kind>.html.j2` with the results dict as `r`."""
    try:
        template = _env().get_template(f"{kind}.html.j2")
    except jinja2.TemplateNotFound as e:
        known = sorted(p.name.removesuffix(".html.j2") for p in _TEMPLATES.glob("*.html.j2") if p.name != "base.html.j2")
        raise NlakitError(f"no report template for kind {kind!r}", f"use one of {known}") from e
    return template.render(r=results, **extra)


def write_report(kind: str, results_json: str | Path, out_html: str | Path, **extra: Any) -> Path:
    """Read a results JSON and write its HTML report atomically."""
    return write_text(out_html, render(kind, read_json(results_json), **extra))


def svg_figure(fig) -> str:
    """A matplotlib figure as an inline <svg> string (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]
