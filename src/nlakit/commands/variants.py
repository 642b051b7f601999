"""`nlakit variants …`: behaviour datasets, fine-tuned variants of a target, and their behaviour scores.

Two behaviours (``--kind``): ``frustration`` at impossible maths (SFT and DPO variants, `nlakit.experiments.transfer`)
and ``language-switch`` (English prompts with native-language cues answered in that language, one SFT variant,
`nlakit.experiments.language_switch`).

    nlakit variants dataset --out impossible_math.jsonl.gz
    nlakit variants build --target smollm2 --out runs/variants --kinds sft,dpo
    nlakit variants score --models smollm2,runs/variants/sft,runs/variants/dpo --out runs/variants/score.json

    nlakit variants dataset --kind language-switch --out language_switch.jsonl.gz
    nlakit variants build --kind language-switch --target smollm2 --out runs/variants      # -> runs/variants/language-switch
    nlakit variants score-language --models smollm2,runs/variants/language-switch --out runs/variants/language_score.json
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from nlakit.errors import NlakitError
from nlakit.experiments.common import LORA_MODULES

_OUT_DIR = Path("runs/variants")
_SCORE_JSON = Path("runs/variants/score.json")
_HELDOUT = Path("/work/shared/corpus/heldout.jsonl.gz")
_TRAIN = Path("/work/shared/corpus/train.jsonl.gz")
_MULTILINGUAL = Path("/work/shared/corpus/multilingual.jsonl.gz")
_LANGUAGE_SCORE_JSON = Path("runs/variants/language_score.json")
KINDS = ("frustration", "language-switch")

variants_app = typer.Typer(help="Fine-tuned variants of a target (frustration: SFT/DPO; language-switch: SFT) and their "
                                "behaviour scores.", no_args_is_help=True)


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise NlakitError(f"unknown --kind {kind!r}", f"use --kind {' or --kind '.join(KINDS)}")
    return kind


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
    kind: str = typer.Option("frustration", help="Which behaviour: " + " or ".join(KINDS) + "."),
    n: int | None = typer.Option(None, help="Number of examples (frustration; default 800). language-switch uses every usable "
                                            "PUD sentence once."),
    heldout_frac: float | None = typer.Option(None, help="Held-out fraction: per template (frustration, default 0.2) or of the "
                                                         "PUD sentence groups (language-switch, default 0.15)."),
    corpus: Path = typer.Option(_MULTILINGUAL, help="language-switch: the corpus's multilingual.jsonl.gz (parallel PUD sentences)."),
    languages: str = typer.Option("fr,de,es,it,pt", help="language-switch: the cue languages (comma-separated)."),
    seed: int = typer.Option(0, help="Generation seed (0 reproduces the shipped file)."),
) -> None:
    """Regenerate a behaviour dataset: impossible maths (prompt, frustrated, calm) or language switch (cue prompt, answer)."""
    from rich.console import Console

    if _kind(kind) == "language-switch":
        from nlakit.experiments.language_switch.dataset import LanguageSwitchConfig, generate_dataset, write_dataset

        if n is not None:
            raise NlakitError("--n applies to --kind frustration", "leave --n out: the language-switch set has one example per "
                              "PUD sentence (pass --heldout-frac to change the split)")
        cfg = LanguageSwitchConfig(languages=_split(languages), heldout_frac=0.15 if heldout_frac is None else heldout_frac, seed=seed)
        examples = generate_dataset(cfg, corpus)
        write_dataset(examples, out)
        Console().print(f"wrote {len(examples)} examples ({sum(e.split == 'heldout' for e in examples)} held out) to [bold]{out}[/] "
                        f"and its licence attribution to [bold]{Path(out).parent / 'ATTRIBUTION.md'}[/]")
        return
    from nlakit.experiments.transfer.behaviour import BehaviourConfig, generate_dataset, write_dataset

    examples = generate_dataset(BehaviourConfig(n_examples=800 if n is None else n, heldout_frac=0.2 if heldout_frac is None else heldout_frac,
                                                seed=seed))
    write_dataset(examples, out)
    n_held = sum(e.split == "heldout" for e in examples)
    Console().print(f"wrote {len(examples)} examples ({n_held} held out) to [bold]{out}[/]")


@variants_app.command("build")
def build_cmd(
    target: str = typer.Option("smollm2", help="Base (instruction-tuned) target: smollm2, an HF dir or a .gguf."),
    out: Path = typer.Option(_OUT_DIR, help="Output folder; variants go to OUT/sft, OUT/dpo or OUT/language-switch."),
    kind: str = typer.Option("frustration", help="Which behaviour: frustration (SFT/DPO, see --kinds) or language-switch (SFT)."),
    kinds: str = typer.Option("sft,dpo", help="frustration: which variants to build (comma-separated)."),
    dataset: Path | None = typer.Option(None, help="The kind's dataset JSONL(.gz); default: the shipped one."),
    n_train: int | None = typer.Option(None, help="Use only the first N train examples."),
    epochs: float = typer.Option(3.0),
    max_steps: int = typer.Option(-1, help="If > 0, stop after this many optimiser steps."),
    batch_size: int = typer.Option(16),
    sft_lr: float = typer.Option(2e-4, help="SFT learning rate (frustration SFT and language-switch)."),
    dpo_lr: float = typer.Option(1e-4),
    dpo_beta: float = typer.Option(0.1),
    lora_r: int = typer.Option(16),
    lora_alpha: int = typer.Option(32),
    lora_modules: str = typer.Option(",".join(LORA_MODULES), help="Comma-separated module names that get LoRA adapters."),
    max_length: int = typer.Option(384, help="Max tokens per example (prompt + response)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Build variants of a target with LoRA (TRL), merged and saved as HF directories: SFT and/or DPO (frustration) or
    the language-switch SFT variant."""
    from rich.console import Console

    shared = dict(target=target, out_dir=str(out), dataset=str(dataset) if dataset else None, n_train=n_train, epochs=epochs,
                  max_steps=max_steps, batch_size=batch_size, lora_r=lora_r, lora_alpha=lora_alpha, lora_modules=_split(lora_modules),
                  max_length=max_length, seed=seed, device=device)
    if _kind(kind) == "language-switch":
        from nlakit.experiments.language_switch.variant import SwitchVariantConfig, build_variant

        cfg = SwitchVariantConfig(**shared, lr=sft_lr)
        with _rich_progress() as progress:
            results = [build_variant(cfg, progress=progress)]
    else:
        from nlakit.experiments.transfer.variants import VariantConfig, build_variants

        cfg = VariantConfig(**shared, sft_lr=sft_lr, dpo_lr=dpo_lr, dpo_beta=dpo_beta)
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


@variants_app.command("score-language")
def score_language_cmd(
    models: str = typer.Option(..., help="Comma-separated model specs: the base first, then variant dirs."),
    out: Path = typer.Option(_LANGUAGE_SCORE_JSON, help="Results JSON."),
    dataset: Path | None = typer.Option(None, help="Language-switch dataset; default: the shipped one."),
    n_per_language: int = typer.Option(20, min=1, help="Held-out prompts per cue language, and controls."),
    max_new_tokens: int = typer.Option(64, min=1),
    batch_size: int = typer.Option(16, min=1),
    low_accuracy: bool = typer.Option(False, help="lingua's low-accuracy mode (47 MB instead of ~200 MB; worse on short answers)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
) -> None:
    """Generate answers to held-out language-switch prompts with each model; lingua names the answer's language:
    accuracy per language (before vs after) and the controls' false-switch rate."""
    from rich.console import Console
    from rich.table import Table

    from nlakit.experiments.language_switch.score import LanguageScoreConfig, score_models
    from nlakit.io import write_json

    cfg = LanguageScoreConfig(models=_split(models), dataset=str(dataset) if dataset else None, n_per_language=n_per_language,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, low_accuracy=low_accuracy, seed=seed, device=device)
    with _rich_progress() as progress:
        results = score_models(cfg, progress=progress)
    write_json(out, results)
    table = Table(title="answer language (lingua): accuracy per cue language [95% CI]; controls: false-switch rate")
    table.add_column("model")
    for lang, n in results["n_prompts"].items():
        table.add_column(f"{lang} (n={n})" + (" false switch" if lang == "en" else ""), justify="right")
    for m in results["models"]:
        cells = []
        for lang in results["n_prompts"]:
            s = m["languages"][lang]["false_switch" if lang == "en" else "accuracy"]
            cells.append(f"{s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]")
        table.add_row(f"{m['name']} ({m['kind']})", *cells)
    console = Console()
    console.print(table)
    console.print(f"results: [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(variants_app, name="variants")
