"""`nlakit experiment infogain`: do NLA explanations say more about what the model does later than its outputs?

    nlakit experiment infogain --target smollm2 --nla default --labels denies,frustrated --n-prompts 160 --out docs/experiments/infogain
    nlakit experiment infogain --labels checkpoint --variants sft=runs/variants/sft,dpo=runs/variants/dpo

Wraps `nlakit.experiments.infogain.run.run`: draws the progress bar, prints the headline table and writes
infogain.json + infogain.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import run_and_report, console, err_console, fmt
from nlakit.experiments.infogain.run import LABELS


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("infogain")
    def infogain_cmd(
        out: Path = typer.Option(Path("runs/infogain"), "--out", help="Output folder for infogain.json and infogain.html."),
        target: str = typer.Option("smollm2", "--target", help="The base target (named 'it'): smollm2, an HF dir, a .gguf, tiny:llama."),
        nla: str = typer.Option("default", "--nla", help="The base target's NLA (bundle dir, released AV dir, or 'default')."),
        labels: str = typer.Option("denies", "--labels", help="Comma-separated: " + ", ".join(LABELS)),
        variants: str = typer.Option("", "--variants", help="Comma-separated name=path (or path) of other checkpoints of the target."),
        prompts: Path | None = typer.Option(None, "--prompts", help="JSONL with a 'prompt' per row (default: the shipped impossible-maths prompts)."),
        n_prompts: int = typer.Option(160, "--n-prompts", min=4),
        response_tokens: int = typer.Option(48, "--response-tokens", min=1, help="Answer length the label is read from."),
        response_positions: str = typer.Option("0,2", "--response-positions", help="Response tokens read (0-based), besides the last prompt token."),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", min=1, help="Explanation length cap."),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        n_folds: int = typer.Option(5, "--folds", min=2),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    ) -> None:
        """Labels decided by what the model does later, read before it does it: cross-validated logistic regression on
        the output so far, the NLA explanation, both, and the raw activation, beside a shuffled-label control."""
        from nlakit.experiments.infogain.run import InfogainConfig, run

        cfg = InfogainConfig(target=target, nla=nla, labels=tuple(x.strip() for x in labels.split(",") if x.strip()),
                             variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
                             prompts=str(prompts) if prompts else None, n_prompts=n_prompts, response_tokens=response_tokens,
                             response_positions=tuple(int(x) for x in response_positions.split(",") if x.strip()),
                             max_new_tokens=max_new_tokens, batch_size=batch_size, n_folds=n_folds, seed=seed, device=device, dtype=dtype)
        results, json_path, html_path = run_and_report("infogain", run, cfg, out)
        _print_summary(results)
        console.print(f"wrote {json_path} and {html_path}")


def _print_summary(results: dict) -> None:
    from rich.table import Table

    for label, per in results["results"].items():
        table = Table(title=f"infogain: {label} ({results['n_prompts']} prompts)", title_justify="left")
        for col in ("position", "n", "classes", "output", "explanation", "both", "activation", "shuffled", "both − output"):
            table.add_column(col, justify="left" if col in ("position", "classes") else "right")
        for kind, res in per.items():
            counts = ", ".join(f"{k} {v}" for k, v in res["class_counts"].items())
            if res.get("degenerate"):
                table.add_row(kind, str(res["n"]), counts, *(["—"] * 6))
                continue
            f = res["features"]
            g = res["gain_both_over_output"]
            table.add_row(kind, str(res["n"]), counts, *(fmt(f[k]["auroc"]) for k in ("output", "explanation", "both", "activation", "shuffled")),
                          f"{fmt(g['auroc'])} [{fmt(g['auroc_ci95'][0])}, {fmt(g['auroc_ci95'][1])}]")
        console.print(table)
    err_console.print("AUROC, out-of-fold (grouped by prompt); accuracy and intervals are in the JSON and the HTML.")
