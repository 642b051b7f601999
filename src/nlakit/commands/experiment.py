"""`nlakit experiment <name>`: research experiments, one command each.

Each module in `nlakit.experiments` that defines `register_experiment(experiment_app)` adds its verb here.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

experiment_app = typer.Typer(help="Research experiments, one command each (JSON + self-contained HTML report).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    import nlakit.experiments as experiments

    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"nlakit.experiments.{info.name}")
        hook = getattr(module, "register_experiment", None)
        if hook is not None:
            hook(experiment_app)
    app.add_typer(experiment_app, name="experiment")
