"""`nlakit experiment positions`: explain every token of a span and see how much the position matters.

    nlakit experiment positions --target smollm2 --nla default --n-prompts 6 --generate 16 --out docs/experiments/positions
    nlakit experiment positions --prompts my.jsonl --span user,header      # rows {"prompt": ...} or {"text": ...}

Wraps `nlakit.experiments.positions.run.run`: draws the progress bar, prints the headline tables and writes
positions.json + positions.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import run_and_report, console, err_console, fmt, score_table
from nlakit.experiments.positions.run import DEFAULT_BASELINES
from nlakit.experiments.positions.tokens import SPANS


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("positions")
    def positions_cmd(
        out: Path = typer.Option(Path("runs/positions"), "--out", help="Output folder for positions.json and positions.html."),
        target: str = typer.Option("smollm2", "--target", help="Target model: smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama."),
        nla: str = typer.Option("default", "--nla", help="NLA bundle dir, released AV dir, or 'default'."),
        prompts: Path | None = typer.Option(None, "--prompts", help="JSONL: {\"prompt\": ...} (chat) or {\"text\": ...} (plain) per row. "
                                             "Default: impossible-maths prompts from the shipped behaviour dataset."),
        n_prompts: int = typer.Option(6, "--n-prompts", min=1, help="Texts read (the first N rows of --prompts)."),
        span: str = typer.Option("all", "--span", help="Comma-separated: " + ", ".join(SPANS)),
        generate: int = typer.Option(16, "--generate", min=0, help="Append the target's first N greedy tokens to each chat prompt."),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", min=1, help="Explanation length cap."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Explanations decoded together."),
        baselines: str = typer.Option(",".join(DEFAULT_BASELINES), "--baselines", help="Comma-separated baseline names."),
        embedder: str = typer.Option("minilm", "--embedder", help="minilm (offline all-MiniLM-L6-v2; TF-IDF fallback) or tfidf."),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    ) -> None:
        """Explain every token of a span: fve_nrm/cos per position beside the baselines, per token class and chat
        region with 95% intervals, explanation drift between neighbours, and the worst-reconstructed tokens."""
        from nlakit.experiments.positions.run import PositionsConfig, run

        cfg = PositionsConfig(target=target, nla=nla, prompts=str(prompts) if prompts else None, n_prompts=n_prompts,
                              span=tuple(s.strip() for s in span.split(",") if s.strip()), generate=generate,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, embedder=embedder, seed=seed,
                              baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()), device=device, dtype=dtype)
        results, json_path, html_path = run_and_report("positions", run, cfg, out)
        console.print(score_table(results["aggregate"], title=f"positions: {results['n_positions']} tokens of {results['n_texts']} texts"))
        _print_groups(results)
        if results["embedder"]["note"]:
            err_console.print(f"[yellow]note:[/] {results['embedder']['note']}")
        console.print(f"wrote {json_path} and {html_path}")


def _print_groups(results: dict) -> None:
    from rich.table import Table

    for key in ("by_class", "by_region"):
        table = Table(title=key.replace("_", " "), title_justify="left")
        for col in ("group", "n", "nla fve_nrm", "95% CI", "ridge_token", "nla − ridge_token"):
            table.add_column(col, justify="left" if col == "group" else "right")
        for g, row in results[key].items():
            d = row.get("nla_minus_ridge_token") or {}
            table.add_row(g, str(row["n"]), fmt(row["nla"]["fve_nrm"]), f"{fmt(row['nla']['fve_nrm_ci95'][0])}…{fmt(row['nla']['fve_nrm_ci95'][1])}",
                          fmt((row.get("ridge_token") or {}).get("fve_nrm")), fmt(d.get("mean")))
        console.print(table)
    d = results["drift"]
    console.print(f"drift (adjacent positions, {results['embedder']['name']}): embedding cos {fmt(d['adjacent']['emb_cos'])} "
                  f"(random pair {fmt(d['random_pair']['emb_cos'])}), Jaccard {fmt(d['adjacent']['jaccard'])}, "
                  f"claim survival {fmt(d['adjacent']['claim_survival'])}")
