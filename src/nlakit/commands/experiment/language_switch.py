"""`nlakit experiment language-switch`: how early do the NLA, the logit lens and a linear probe see a language switch?

    nlakit experiment language-switch --variant runs/variants/language-switch --target smollm2 --nla default \\
        --out docs/experiments/language_switch

Wraps `nlakit.experiments.language_switch.run.run`: draws the progress bar, prints the lead table and writes
language_switch.json + language_switch.html.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import console, fmt, run_and_report
from nlakit.experiments.language_switch.dataset import LANGUAGES


def register(experiment_app: typer.Typer) -> None:
    @experiment_app.command("language-switch")
    def language_switch_cmd(
        out: Path = typer.Option(Path("runs/language_switch"), "--out", help="Output folder for language_switch.json and .html."),
        target: str = typer.Option("smollm2", "--target", help="The model the NLA explains: smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama."),
        variant: str | None = typer.Option(None, "--variant", help="The model read (e.g. runs/variants/language-switch); default: --target itself."),
        nla: str = typer.Option("default", "--nla", help="NLA: 'default' (bundled), an nlakit bundle, or a released AV dir."),
        dataset: Path | None = typer.Option(None, "--dataset", help="Language-switch dataset; default: the shipped one."),
        languages: str = typer.Option(",".join(LANGUAGES), "--languages", help="Comma-separated cue languages."),
        n_per_language: int = typer.Option(4, "--n-per-language", min=1, help="Held-out cue prompts per language."),
        n_controls: int = typer.Option(8, "--n-controls", min=0, help="Held-out control prompts (answered in English)."),
        n_probe: int = typer.Option(24, "--n-probe", min=1, help="Training prompts per class for the probe and the lens thresholds."),
        generate: int = typer.Option(16, "--generate", min=1, help="Answer tokens explained."),
        output_tokens: int = typer.Option(48, "--output-tokens", min=1, help="Answer tokens generated (>= --generate)."),
        smooth: int = typer.Option(3, "--smooth", min=1, help="Odd moving-average window over positions (1 = none)."),
        lens_quantile: float = typer.Option(0.95, "--lens-quantile", help="Logit-lens threshold: this quantile of the mass on training controls."),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1, help="Explanation length cap."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Explanations decoded together."),
        n_curves: int = typer.Option(4, "--n-curves", min=0, help="Seeded examples drawn as detection curves."),
        low_accuracy: bool = typer.Option(False, "--low-accuracy", help="lingua's low-accuracy mode (less memory)."),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    ) -> None:
        """Explain every position from the user's message through the first answer tokens; find when the NLA, the
        logit lens and a linear probe detect the answer's language, against the first answer token in it."""
        from nlakit.experiments.language_switch.run import LanguageSwitchConfig, run

        cfg = LanguageSwitchConfig(target=target, variant=variant, nla=nla, dataset=str(dataset) if dataset else None,
                                   languages=tuple(s.strip() for s in languages.split(",") if s.strip()), n_per_language=n_per_language,
                                   n_controls=n_controls, n_probe=n_probe, generate=generate, output_tokens=output_tokens, smooth=smooth,
                                   lens_quantile=lens_quantile, max_new_tokens=max_new_tokens, batch_size=batch_size, n_curves=n_curves,
                                   low_accuracy=low_accuracy, seed=seed, device=device, dtype=dtype)
        results, json_path, html_path = run_and_report("language_switch", run, cfg, out)
        _print_table(results)
        console.print(f"wrote {json_path} and {html_path}")


def _print_table(r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"language switch: lead = output onset − reader onset (tokens), {r['n_prompts']} prompts", title_justify="left")
    for col in ("lang", "reader", "switched", "detected", "lead median", "IQR", "95% CI", "controls FP", "first-detection lead"):
        table.add_column(col, justify="left" if col in ("lang", "reader") else "right")
    for row in r["table"]:
        lead, fp = row["lead"], r["controls"]["readers"][row["reader"]]["false_positive"]
        table.add_row(row["lang"], row["reader"], f"{row['n_switched']}/{row['n_prompts']}", fmt(row["detected"]["mean"], 2),
                      fmt(lead["median"], 1), f"{fmt(lead['iqr'][0], 1)}…{fmt(lead['iqr'][1], 1)}",
                      f"{fmt(lead['ci95'][0], 1)}…{fmt(lead['ci95'][1], 1)}", fmt(fp["mean"], 2), fmt(row["first_lead"]["median"], 1))
    console.print(table)
