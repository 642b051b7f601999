"""`nlakit experiment symreg`: the target model vs symbolic regression on 24-row tables, and what its NLA reads.

    nlakit experiment symreg --target smollm2 --n-tasks 20 --out docs/experiments/symreg
    nlakit experiment symreg --nla runs/nla --train-data train.jsonl.gz   # part 4 with a trained NLA

Wraps `nlakit.experiments.symreg.run.run` (and `rescore`): draws the progress bar, prints the summary table and
writes symreg.json + symreg.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import run_and_report, console, err_console, fmt
from nlakit.experiments.symreg.run import ALL_METHODS


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("symreg")
    def symreg_cmd(
        out: Path = typer.Option(Path("runs/symreg"), "--out", help="Output folder for symreg.json and symreg.html."),
        target: str = typer.Option("smollm2", "--target", help="Target model: smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama."),
        n_tasks: int = typer.Option(20, "--n-tasks", min=0, help="Generated equations (the reference table comes on top)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the task generator and of every fit."),
        methods: str = typer.Option(",".join(ALL_METHODS), "--methods", help="Comma-separated subset of: " + ", ".join(ALL_METHODS)),
        reference: bool = typer.Option(True, "--reference/--no-reference", help="Include the built-in reference table."),
        nla: str = typer.Option("default", "--nla", help="NLA for part 4 ('default' = the bundled one); skipped with a note if absent."),
        no_nla: bool = typer.Option(False, "--no-nla", help="Skip part 4 (NLA decode)."),
        train_data: Path | None = typer.Option(None, "--train-data", help="Training .jsonl(.gz) for the ridge baselines of part 4."),
        n_train_positions: int = typer.Option(500, "--n-train-positions", min=2, help="Training positions for the ridge baselines."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Answer length cap."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts per generation batch."),
        search_time: float = typer.Option(20.0, "--search-time", help="Time budget (s) of the exhaustive search per table."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
        rescore_json: Path | None = typer.Option(None, "--rescore", help="Re-score a saved symreg.json with the current "
                                                    "parser/scorer (no model runs; other options are ignored)."),
    ) -> None:
        """Find the equation behind a 24-row table: the target model vs symbolic regression vs polynomial/linear fits,
        and what the NLA reads at the last prompt token."""
        from nlakit.experiments.symreg.run import SymregConfig, rescore, run
        from nlakit.io import read_json, write_json
        from nlakit.report import write_report

        if rescore_json is not None:
            results = rescore(read_json(rescore_json))
            json_path = write_json(out / "symreg.json", results)
            html_path = write_report("symreg", json_path, out / "symreg.html")
            _print_summary(results)
            console.print(f"rescored {rescore_json}: wrote {json_path} and {html_path}")
            return
        cfg = SymregConfig(target=target, n_tasks=n_tasks, seed=seed, include_reference=reference,
                           methods=tuple(m.strip() for m in methods.split(",") if m.strip()), max_new_tokens=max_new_tokens,
                           batch_size=batch_size, device=device, dtype=dtype, nla=None if no_nla else nla,
                           train_data=str(train_data) if train_data else None, n_train_positions=n_train_positions,
                           search_time_s=search_time)
        results, json_path, html_path = run_and_report("symreg", run, cfg, out)
        _print_summary(results)
        if not results["nla"]["available"]:
            err_console.print(f"[yellow]note:[/] {results['nla']['note']}")
        console.print(f"wrote {json_path} and {html_path}")


def _print_summary(results: dict) -> None:
    from rich.table import Table

    n = next(iter(results["summary"].values()))["n"] if results["summary"] else 0
    table = Table(title=f"symreg: {n} generated tasks (+ the reference table)", title_justify="left")
    for col in ("method", "recovered", "median R²", "ref R²"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    table.add_column("reference table: found", no_wrap=True, overflow="ellipsis", max_width=34)
    for m, s in results["summary"].items():
        ref = s.get("reference") or {}
        table.add_row(m, fmt(s["recovery_rate"], 2), fmt(s["median_r2"]), fmt(ref.get("r2_table")), ref.get("expr") or "—")
    console.print(table)
