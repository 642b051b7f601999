"""`nlakit explain TEXT --at POSITIONS`: explanation, cosine and FVE per position, beside the baselines.

Wraps `nlakit.evaluate.explain_text`. `--out` saves the results JSON, `--html` renders the explain report. Under
torchrun the positions' generations are dealt to the ranks and rank 0 prints and writes (docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nlakit.commands._common import (
    ArOpt,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    NlaOpt,
    TargetOpt,
    console,
    fmt,
    open_nla,
    progress_bar,
    LiteralOpt,
    read_doc_file,
    read_one_text,
    score_table,
)


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        text: str = typer.Argument(..., help="The text to read (raw, no chat template), or a file holding it."),
        literal: bool = LiteralOpt,
        at: str = typer.Option("last", "--at", help="Positions: last, all, 3,5,-1, span:START-END or match:WORD."),
        nla: str = NlaOpt,
        ar: str | None = ArOpt,
        target: str | None = TargetOpt,
        train_data: str | None = typer.Option(None, "--train-data", help="Training JSONL: adds the fitted baselines (ridge, oracle echo)."),
        n_train_positions: int = typer.Option(2000, "--n-train-positions", min=2, help="Training positions for the ridge fits."),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", min=1),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
        engine: str = typer.Option("auto", "--engine", help="AV generation: auto (fast engine), fast, or hf (plain HF generate)."),
        seed: int = typer.Option(0, "--seed"),
        explain_batch_size: int = typer.Option(64, "--explain-batch-size", min=1, help="AV generations at once (under "
                                                                                     "torchrun the unit dealt to each process)."),
        as_json: bool = typer.Option(False, "--json", help="Print the results JSON instead of tables."),
        out: Path | None = typer.Option(None, "--out", help="Write the results JSON here."),
        html: Path | None = typer.Option(None, "--html", help="Write the self-contained HTML report here."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
        batch_size: int = BatchOpt,
    ):
        """Explain the activation at chosen positions of TEXT and check each explanation by reconstruction."""
        from nlakit import distributed
        from nlakit.evaluate import EvalConfig, explain_text

        cfg = EvalConfig(n_positions=1, n_train_positions=n_train_positions, seed=seed, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, temperature=temperature, engine=engine, explain_batch_size=explain_batch_size)
        text = read_one_text(text, "nlakit explain", literal=literal)
        train_texts = read_doc_file(train_data, "--train-data") if train_data else None
        model, tgt = open_nla(nla, target, device, dtype, ar)
        with progress_bar(not as_json and distributed.is_main()) as progress:
            results = explain_text(model, tgt, text, at, train_texts, cfg, progress=progress)
        if not distributed.is_main():
            return
        _save(results, out, html)
        if as_json:
            typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
            return
        _print(results)


def _save(results: dict, out: Path | None, html: Path | None) -> None:
    from nlakit.io import write_json

    if out is not None:
        write_json(out, results)
    if html is not None:
        from nlakit.commands.report import render_results

        render_results(results, html)


def _print(results: dict) -> None:
    from rich.table import Table

    table = Table(title=f"layer {results['nla']['layer']} of {results['nla']['target_name']}", title_justify="left")
    for col, kw in (("pos", {"justify": "right"}), ("token", {}), ("explanation", {"overflow": "fold", "ratio": 1}),
                    ("ok", {}), ("cos", {"justify": "right"}), ("fve_nrm", {"justify": "right"})):
        table.add_column(col, **kw)
    for r in results["rows"]:
        table.add_row(str(r["pos"]), repr(r["token"]), r["explanation"] or "[dim](empty)[/]", "yes" if r["ok"] else "[red]no[/]",
                      fmt(r["cos"]), fmt(r["fve_nrm"]))
    console.print(table)
    console.print(score_table(results["aggregate"], "mean over these positions, beside the baselines"))
    if results["skipped_baselines"]:
        console.print(f"[dim]not computed (need --train-data): {', '.join(results['skipped_baselines'])}[/]")
