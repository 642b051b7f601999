"""`nlakit experiment <name>`: research experiments, one command each.

Each module in this package that defines `register(experiment_app)` adds its verb here; the experiment itself
is library code in `nlakit.experiments.<name>`, which takes a progress callback and returns results.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

experiment_app = typer.Typer(help="Research experiments, one command each (JSON + self-contained HTML report).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        hook = getattr(module, "register", None)
        if hook is not None:
            hook(experiment_app)
    app.add_typer(experiment_app, name="experiment")
