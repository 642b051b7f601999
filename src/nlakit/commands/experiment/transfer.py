"""`nlakit experiment transfer`: the base model's NLA on its SFT/DPO variants, directly and through ridge maps.

    nlakit experiment transfer --nla runs/nla --base smollm2 --variants runs/variants/sft,runs/variants/dpo --out runs/transfer

Wraps `nlakit.experiments.transfer.run.run_transfer`: draws the progress bar, prints the headline table and writes
transfer.json + transfer.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import run_and_report, console
from nlakit.errors import NlakitError
from nlakit.experiments.transfer.config import DEFAULT_BASELINES, POSITION_TYPES, TransferConfig

_OUT_DIR = Path("runs/transfer")
_HELDOUT = Path(TransferConfig.corpus)
_TRAIN = Path(TransferConfig.map_corpus)


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("transfer")
    def transfer(
        variants: str = typer.Option(..., "--variants", help="Comma-separated variant dirs (from `nlakit variants build`)."),
        out: Path = typer.Option(_OUT_DIR, "--out", help="Folder for transfer.json and transfer.html."),
        nla: str = typer.Option("default", "--nla", help="The base model's NLA bundle (or 'default')."),
        base: str = typer.Option("smollm2", "--base", help="The base (IT) target the NLA was trained on."),
        dataset: Path = typer.Option(None, "--dataset", help="Behaviour dataset (default: the shipped one)."),
        corpus: Path = typer.Option(_HELDOUT, "--corpus", help="Held-out corpus for ordinary prompts."),
        map_corpus: Path = typer.Option(_TRAIN, "--map-corpus", help="Other texts for the ridge maps."),
        n_neutral: int = typer.Option(600, "--n-neutral", min=0, help="Ordinary replies from --map-corpus added to the classifier's calm class."),
        n_behaviour: int = typer.Option(40, "--n-behaviour", min=0),
        n_corpus: int = typer.Option(40, "--n-corpus", min=0),
        prompt_positions: int = typer.Option(2, "--prompt-positions", min=0),
        response_positions: int = typer.Option(4, "--response-positions", min=0),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Answer length."),
        map_sizes: str = typer.Option("100,300,1000,3000,5000", "--map-sizes", help="Paired positions for the ridge maps (sweep)."),
        map_kinds: str = typer.Option("ridge,residual", "--map-kinds", help="ridge (shrinks to zero) and/or residual (to the identity)."),
        baselines: str = typer.Option(",".join(DEFAULT_BASELINES), "--baselines"),
        explain_max_new_tokens: int = typer.Option(150, "--explain-max-new-tokens", min=1),
        n_examples: int = typer.Option(4, "--n-examples", min=0),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("auto", "--device"),
        batch_size: int = typer.Option(16, "--batch-size", min=1),
        explain_batch_size: int = typer.Option(64, "--explain-batch-size", min=1),
    ):
        """Apply the base model's NLA to SFT/DPO variants, directly and through ridge maps; read frustration in explanations."""
        from nlakit.experiments.transfer.run import run_transfer

        try:
            sizes = tuple(int(x) for x in map_sizes.split(",") if x.strip())
        except ValueError as e:
            raise NlakitError(f"--map-sizes {map_sizes!r} is not a list of integers", "write e.g. --map-sizes 100,1000,5000") from e
        cfg = TransferConfig(nla=nla, base=base, variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
                             dataset=str(dataset) if dataset else None, corpus=str(corpus), map_corpus=str(map_corpus), n_neutral=n_neutral,
                             n_behaviour=n_behaviour, n_corpus=n_corpus, prompt_positions=prompt_positions,
                             response_positions=response_positions, max_new_tokens=max_new_tokens, map_sizes=sizes,
                             map_kinds=tuple(k.strip() for k in map_kinds.split(",") if k.strip()),
                             baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
                             explain_max_new_tokens=explain_max_new_tokens, n_examples=n_examples, seed=seed, device=device,
                             batch_size=batch_size, explain_batch_size=explain_batch_size)
        results, js, html = run_and_report("transfer", run_transfer, cfg, out)
        _print_headline(results)
        console.print(f"wrote {js} and {html}")


def _print_headline(r: dict) -> None:
    from rich.table import Table

    table = Table(title="fve_nrm of the base NLA (all prompts), by position type", title_justify="left")
    for col in ("model", "route", *POSITION_TYPES, "all"):
        table.add_column(col, justify="left" if col in ("model", "route") else "right")
    for k in r["table_keys"]:
        cells = {d["position"]: d for d in r["degradation"] if d["key"] == k["key"] and d["group"] == "all"}
        table.add_row(k["model"], k["route_label"], *[f"{cells[t]['fve_nrm']:.3f}" if t in cells and cells[t]["fve_nrm"] is not None
                                                      else "—" for t in (*POSITION_TYPES, "all")])
    console.print(table)
