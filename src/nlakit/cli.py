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


# verbs that split their work over the processes torchrun starts (docs/DISTRIBUTED.md); the others run as one process
DISTRIBUTED_VERBS = ("datagen", "train", "extract", "eval", "explain")


@app.callback()
def _options(ctx: typer.Context,
             verbose: bool = typer.Option(False, "--verbose", help="Show third-party warnings, logs and progress bars "
                                                                   "(transformers, PEFT, hub), hidden by default."),
             distributed: bool = typer.Option(False, "--distributed", help="Require a torchrun launch (datagen, train, extract, "
                                                                           "eval, explain); under torchrun it is on anyway.")) -> None:
    """Natural Language Autoencoders: explain a model's activations in words, and check them."""
    quiet_third_party(verbose)
    from nlakit import distributed as dist

    if (distributed or dist.launched()) and ctx.invoked_subcommand not in DISTRIBUTED_VERBS:
        raise NlakitError(f"`nlakit {ctx.invoked_subcommand}` does not run distributed",
                          f"run it as one process, without torchrun (distributed verbs: {', '.join(DISTRIBUTED_VERBS)})")
    dist.init(required=distributed)
    if not dist.is_main():  # every rank hits the same warnings: rank 0 says them once
        logging.getLogger("nlakit").setLevel(logging.ERROR)


def quiet_third_party(verbose: bool = False) -> None:
    """Keep transformers/PEFT/hub warnings, logs and progress bars out of the CLI's output unless `verbose`.

    nlakit's own warnings (e.g. a text truncated to the context window) still show."""
    import warnings

    if verbose:
        logging.getLogger().setLevel(logging.INFO)
        return
    # process state only, never os.environ: a child process (a test, a training subprocess) keeps its own choice
    for module in ("transformers", "peft", "accelerate", "huggingface_hub", "datasets", "torch", "trl"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
        logging.getLogger(module).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()


_register_commands()


def main() -> None:
    """Entry point: run the app, turning `NlakitError` into one red line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from nlakit import distributed

    try:
        app()
    except NlakitError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
