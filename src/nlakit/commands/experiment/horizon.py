"""`nlakit experiment horizon`: how far before the next sentence does each reader of an activation see it coming?

    nlakit experiment horizon --data heldout.jsonl.gz --train-data train.jsonl.gz --out docs/experiments/horizon

Wraps `nlakit.experiments.horizon.run`: draws the progress bar, prints the table at a few k and writes
horizon.json + horizon.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import run_and_report, console, fmt


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("horizon")
    def horizon_cmd(
        data: Path = typer.Option(..., "--data", help="Held-out JSONL(.gz): prompts are the starts of its documents."),
        out: Path = typer.Option(Path("runs/horizon"), "--out", help="Output folder for horizon.json and horizon.html."),
        target: str = typer.Option("smollm2", "--target", help="Target model: smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama."),
        nla: str = typer.Option("default", "--nla", help="NLA: 'default' (bundled), an nlakit bundle, or a released AV dir."),
        train_data: Path | None = typer.Option(None, "--train-data", help="Training JSONL(.gz) for the tuned-lens probe (skipped without it)."),
        n_prompts: int = typer.Option(24, "--n-prompts", min=1, help="Held-out documents used as prompts."),
        prompt_tokens: int = typer.Option(48, "--prompt-tokens", min=2, help="Tokens of each document the target reads first."),
        continuation_tokens: int = typer.Option(96, "--continuation-tokens", min=8, help="Greedy tokens the target adds."),
        continuation_temperature: float = typer.Option(0.0, "--continuation-temperature", min=0.0,
                                                       help="0 = greedy continuations; > 0 samples them (seeded), which repeat their context less."),
        ks: str = typer.Option("1,2,3,4,6,8,12,16,24,32", "--ks", help="Comma-separated distances (tokens before the next sentence)."),
        kinds: str = typer.Option("prose,fiction", "--kinds", help="Document kinds used as prompts ('' = all)."),
        top_k: int = typer.Option(10, "--top-k", min=1, help="Tokens each lens reader shows."),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1, help="Explanation length cap."),
        novel_max_recall: float = typer.Option(0.5, "--novel-max-recall", min=0.0, max=1.0,
                                               help="A next sentence is novel when at most this share of its content words came before."),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    ) -> None:
        """Compare the NLA, the logit lens, a tuned lens, the model's next-token distribution and its own greedy
        continuation with the actual next sentence, k = 1..32 tokens before it starts."""
        from nlakit.errors import NlakitError
        from nlakit.experiments.horizon import HorizonConfig, run

        try:
            k_list = tuple(int(x) for x in ks.split(",") if x.strip())
        except ValueError as e:
            raise NlakitError(f"--ks {ks!r} is not a comma-separated list of integers", "write it like --ks 1,4,16") from e
        cfg = HorizonConfig(data=str(data), target=target, nla=nla, train_data=str(train_data) if train_data else None,
                            n_prompts=n_prompts, prompt_tokens=prompt_tokens, continuation_tokens=continuation_tokens,
                            continuation_temperature=continuation_temperature, ks=k_list,
                            table_ks=tuple(k for k in (1, 4, 16) if k in k_list) or k_list[:3],
                            kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), top_k=top_k, max_new_tokens=max_new_tokens,
                            novel_max_recall=novel_max_recall, seed=seed, device=device, dtype=dtype)
        results, json_path, html_path = run_and_report("horizon", run, cfg, out)
        _print_table(results)
        console.print(f"wrote {json_path} and {html_path}")


def _print_table(results: dict) -> None:
    from rich.table import Table

    table = Table(title=f"horizon: {results['n_samples']} samples, {results['n_sentences']} next sentences", title_justify="left")
    for col in ("reader", "k", "embed cos", "shuffled", "recall", "shuffled", "F1"):
        table.add_column(col, justify="left" if col == "reader" else "right")
    for row in results["table"]:
        table.add_row(row["reader"], str(row["k"]), fmt(row["embed_cos"]), fmt(row["embed_cos_shuffled"]), fmt(row["recall"]),
                      fmt(row["recall_shuffled"]), fmt(row["f1"]))
    console.print(table)
    nov = results.get("novel")
    if nov:
        console.print(f"novel next sentences (≤ {nov['max_recall']:.2f} of their content words earlier): {nov['n_sentences']} "
                      f"of {results['n_sentences']}; their table is in the JSON and the HTML")
