"""The `nlakit` command line. Each verb is a thin wrapper over one library function.

Verbs live in `nlakit.commands.<name>`; every module there exposes `register(app)` and is picked up
here, so adding a verb never means editing this file.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import typer

from nlakit.errors import NlakitError

app = typer.Typer(
    name="nlakit",
    help="Natural Language Autoencoders: explain a model's activations in words, and check them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    import nlakit.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"nlakit.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app, turning `NlakitError` into one red line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except NlakitError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
