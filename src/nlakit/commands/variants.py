"""`nlakit variants …`: the behaviour dataset, fine-tuned variants (SFT, DPO) of a target, and their frustration score.

    nlakit variants dataset --out impossible_math.jsonl.gz
    nlakit variants build --target smollm2 --out runs/variants --kinds sft,dpo
    nlakit variants score --models smollm2,runs/variants/sft,runs/variants/dpo --out runs/variants/score.json
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from nlakit.errors import NlakitError
from nlakit.experiments.transfer.variants import LORA_MODULES

_OUT_DIR = Path("runs/variants")
_SCORE_JSON = Path("runs/variants/score.json")
_HELDOUT = Path("/work/shared/corpus/heldout.jsonl.gz")
_TRAIN = Path("/work/shared/corpus/train.jsonl.gz")

variants_app = typer.Typer(help="Fine-tuned variants of a target (SFT/DPO on a frustration dataset) and their behaviour score.",
                           no_args_is_help=True)


def _split(csv: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in csv.split(",") if s.strip())
    if not items:
        raise NlakitError(f"{csv!r} names nothing", "pass a comma-separated list, e.g. sft,dpo")
    return items


@contextmanager
def _rich_progress():
    """Yield a `(task, done, total)` callback drawing one Rich bar per task."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as prog:
        def update(task: str, done: int, total: int) -> None:
            if task not in bars:
                bars[task] = prog.add_task(task, total=max(total, 1))
            prog.update(bars[task], completed=done, total=max(total, 1))

        yield update


@variants_app.command("dataset")
def dataset_cmd(
    out: Path = typer.Option(..., help="Where to write the JSONL (.gz to gzip)."),
    n: int = typer.Option(800, help="Number of examples."),
    heldout_frac: float = typer.Option(0.2, help="Held-out fraction, per template."),
    seed: int = typer.Option(0, help="Generation seed (0 reproduces the shipped file)."),
) -> None:
    """Regenerate the impossible-maths behaviour dataset (prompt, frustrated, calm)."""
    from rich.console import Console

    from nlakit.experiments.transfer.behaviour import BehaviourConfig, generate_dataset, write_dataset

    examples = generate_dataset(BehaviourConfig(n_examples=n, heldout_frac=heldout_frac, seed=seed))
    write_dataset(examples, out)
    n_held = sum(e.split == "heldout" for e in examples)
    Console().print(f"wrote {len(examples)} examples ({n_held} held out) to [bold]{out}[/]")


@variants_app.command("build")
def build_cmd(
    target: str = typer.Option("smollm2", help="Base (instruction-tuned) target: smollm2, an HF dir or a .gguf."),
    out: Path = typer.Option(_OUT_DIR, help="Output folder; variants go to OUT/sft and OUT/dpo."),
    kinds: str = typer.Option("sft,dpo", help="Which variants to build (comma-separated)."),
    dataset: Path | None = typer.Option(None, help="Behaviour dataset JSONL(.gz); default: the shipped one."),
    n_train: int | None = typer.Option(None, help="Use only the first N train examples."),
    epochs: float = typer.Option(3.0),
    max_steps: int = typer.Option(-1, help="If > 0, stop after this many optimiser steps."),
    batch_size: int = typer.Option(16),
    sft_lr: float = typer.Option(2e-4),
    dpo_lr: float = typer.Option(1e-4),
    dpo_beta: float = typer.Option(0.1),
    lora_r: int = typer.Option(16),
    lora_alpha: int = typer.Option(32),
    lora_modules: str = typer.Option(",".join(LORA_MODULES), help="Comma-separated module names that get LoRA adapters."),
    max_length: int = typer.Option(384, help="Max tokens per example (prompt + response)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Build SFT and/or DPO variants of a target with LoRA (TRL), merged and saved as HF directories."""
    from rich.console import Console

    from nlakit.experiments.transfer.variants import VariantConfig, build_variants

    cfg = VariantConfig(target=target, out_dir=str(out), dataset=str(dataset) if dataset else None, n_train=n_train,
                        epochs=epochs, max_steps=max_steps, batch_size=batch_size, sft_lr=sft_lr, dpo_lr=dpo_lr,
                        dpo_beta=dpo_beta, lora_r=lora_r, lora_alpha=lora_alpha, lora_modules=_split(lora_modules), max_length=max_length, seed=seed, device=device)
    with _rich_progress() as progress:
        results = build_variants(cfg, _split(kinds), progress=progress)
    console = Console()
    for r in results:
        losses = [h["loss"] for h in r.meta["train"]["log"] if "loss" in h]
        tail = f", loss {losses[0]:.3f} → {losses[-1]:.3f}" if losses else ""
        console.print(f"{r.kind}: [bold]{r.path}[/] ({r.meta['train']['steps']} steps, {r.meta['train']['wall_s']} s{tail})")


@variants_app.command("score")
def score_cmd(
    models: str = typer.Option(..., help="Comma-separated model specs: the base first, then variant dirs."),
    out: Path = typer.Option(_SCORE_JSON, help="Results JSON."),
    dataset: Path | None = typer.Option(None, help="Behaviour dataset; default: the shipped one."),
    corpus: Path = typer.Option(_HELDOUT, help="Held-out corpus for ordinary prompts."),
    neutral_corpus: Path | None = typer.Option(_TRAIN,
                                                  help="Training corpus whose assistant replies join the classifier's calm class."),
    n_neutral: int = typer.Option(600, help="Neutral replies for the classifier (0 = fit on the dataset's two response types only)."),
    n_behaviour: int = typer.Option(100, help="Held-out impossible problems."),
    n_corpus: int = typer.Option(100, help="Ordinary prompts (half GSM8K maths, half chat)."),
    max_new_tokens: int = typer.Option(128),
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
) -> None:
    """Generate answers with each model and score frustration (lexicon + classifier): before vs after, and leakage."""
    from rich.console import Console
    from rich.table import Table

    from nlakit.experiments.transfer.score import ScoreConfig, score_models
    from nlakit.io import write_json

    cfg = ScoreConfig(models=_split(models), dataset=str(dataset) if dataset else None, corpus=str(corpus),
                      neutral_corpus=str(neutral_corpus) if neutral_corpus and n_neutral > 0 else None, n_neutral=n_neutral,
                      n_behaviour=n_behaviour, n_corpus=n_corpus, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      seed=seed, device=device)
    with _rich_progress() as progress:
        results = score_models(cfg, progress=progress)
    write_json(out, results)
    table = Table(title="frustration of generated answers (lexicon rate | mean P(frustrated))")
    table.add_column("model")
    groups = list(results["n_prompts"])
    for g in groups:
        table.add_column(f"{g} (n={results['n_prompts'][g]})", justify="right")
    for m in results["models"]:
        cells = []
        for g in groups:
            s = m["groups"][g]
            cells.append(f"{s['lexicon_rate']['mean']:.2f} | {s['p_frustrated']['mean']:.2f}")
        table.add_row(f"{m['name']} ({m['kind']})", *cells)
    console = Console()
    console.print(table)
    console.print(f"results: [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(variants_app, name="variants")
