"""`nlakit eval --nla DIR --data JSONL --out results.json`: held-out score table, NLA beside every baseline.

Wraps `nlakit.evaluate.evaluate`. `--html` also renders the report (same as `nlakit report results.json`). Under
torchrun the AV's generations are dealt to the ranks and rank 0 writes the results (docs/DISTRIBUTED.md).
"""

from __future__ import annotations

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
    open_nla,
    progress_bar,
    PerLineOpt,
    read_doc_file,
    score_table,
)


def register(app: typer.Typer) -> None:
    @app.command(name="eval")
    def eval_(
        data: str = typer.Option(..., "--data", help="Held-out documents (never trained on): JSONL(.gz) with {\"text\": …} per line, Parquet, plain text, or a folder."),
        out: Path = typer.Option(..., "--out", help="Results JSON to write."),
        nla: str = NlaOpt,
        ar: str | None = ArOpt,
        target: str | None = TargetOpt,
        train_data: str | None = typer.Option(None, "--train-data", help="Training documents (same formats as --data): fits the ridge baselines (without it, the ridge maps the NLA bundle carries are used; the other fitted baselines are skipped)."),
        n_positions: int = typer.Option(400, "--n-positions", min=1, help="Held-out positions to score."),
        positions_per_doc: int = typer.Option(2, "--positions-per-doc", min=1),
        n_train_positions: int = typer.Option(2000, "--n-train-positions", min=0, help="Training positions for the ridge fits."),
        min_position: int = typer.Option(33, "--min-position", min=0, help="Skip the first tokens of each document."),
        max_tokens: int = typer.Option(256, "--max-tokens", min=2, help="Cut documents to this many tokens."),
        baselines: str | None = typer.Option(None, "--baselines", help="Comma-separated subset of the baselines (default: all)."),
        text_key: str = typer.Option("text", "--text-key"),
        limit_docs: int | None = typer.Option(None, "--limit-docs", min=1, help="Read at most this many documents per file."),
        per_line: bool = PerLineOpt,
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", min=1),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0),
        engine: str = typer.Option("auto", "--engine", help="AV generation: auto (fast engine), fast, or hf (plain HF generate)."),
        seed: int = typer.Option(0, "--seed"),
        explain_batch_size: int = typer.Option(64, "--explain-batch-size", min=1, help="AV generations at once (under "
                                                                                     "torchrun the unit dealt to each process)."),
        html: Path | None = typer.Option(None, "--html", help="Also write the HTML report here."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
        batch_size: int = BatchOpt,
    ):
        """Score an NLA on held-out text, beside the baselines (mean, ridge, context echo, oracle echo)."""
        from nlakit import distributed
        from nlakit.baselines import ALL_BASELINES
        from nlakit.evaluate import EvalConfig, evaluate
        from nlakit.io import write_json

        cfg = EvalConfig(n_positions=n_positions, positions_per_doc=positions_per_doc, n_train_positions=n_train_positions,
                         min_position=min_position, max_tokens=max_tokens, seed=seed, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, temperature=temperature, engine=engine, explain_batch_size=explain_batch_size,
                         baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()) if baselines else ALL_BASELINES)
        texts = read_doc_file(data, "--data", text_key, limit_docs, per_line, key_fix=None)
        train_texts = read_doc_file(train_data, "--train-data", text_key, limit_docs, per_line, key_fix=None) if train_data else None
        model, tgt = open_nla(nla, target, device, dtype, ar)
        with progress_bar(distributed.is_main()) as progress:
            results = evaluate(model, tgt, texts, train_texts, cfg, progress=progress)
        if not distributed.is_main():
            return
        results["data"] = {"heldout": str(data), "train": str(train_data) if train_data else None}
        write_json(out, results)
        console.print(score_table(results["aggregate"], f"{results['nla']['target_name']} layer {results['nla']['layer']}: "
                                                        f"{results['n_positions']} held-out positions"))
        console.print(f"parse rate {results['parse_rate']:.1%}, mean explanation length {results['mean_explanation_tokens']:.1f} tokens")
        if results["skipped_baselines"]:
            console.print(f"[dim]not computed (need --train-data): {', '.join(results['skipped_baselines'])}[/]")
        console.print(f"wrote {out}")
        if html is not None:
            from nlakit.commands.report import render_results

            render_results(results, html)
            console.print(f"wrote {html}")
