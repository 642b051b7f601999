"""`nlakit datagen` and `nlakit train {all,ar,av,rl}`: thin wrappers over `nlakit.train.*`.

Under torchrun (``torchrun --nproc-per-node N -m nlakit train all ...``) every process runs the same command on its
share of the work and rank 0 alone prints (docs/DISTRIBUTED.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nlakit import distributed

train_app = typer.Typer(help="Train an NLA: AR supervised, AV supervised, RL (GRPO), or all of it under a time budget.",
                        no_args_is_help=True)


def _printer():
    from rich.console import Console

    console = Console(stderr=True)
    last: dict[str, float] = {}

    def show(rec: dict) -> None:
        stage = rec.get("stage", "")
        if stage.startswith("datagen"):
            if rec["done"] == rec["of"] or rec["done"] - last.get(stage, 0) >= max(1, rec["of"] // 10):
                last[stage] = rec["done"]
                console.print(f"[cyan]{stage}[/] {rec['done']}/{rec['of']}")
        elif stage in ("ar_sft", "av_sft"):
            console.print(f"[cyan]{stage}[/] step {rec['step'] + 1}/{rec['of']} loss {rec['loss']:.4f}")
        elif stage == "ar_sft_curve":
            console.print(f"[bold cyan]AR on the gold text[/] (held-out fve_nrm) at step {rec['step']}: {rec['gold_fve_nrm']:.3f}")
        elif stage == "rl":
            fve = "—" if rec.get("fve_nrm") is None else f"{rec['fve_nrm']:.3f}"
            console.print(f"[magenta]rl[/] step {rec['step']} reward {rec['reward']:.3f} fve {fve} ok {rec['ok_rate']:.2f} "
                          f"kl {rec['kl']:.4f} len {rec['length']:.0f} copy {rec['copy_rate_4gram']:.2f} ({rec['sec']:.1f}s)")
        elif stage == "rl_eval":
            console.print(f"[bold magenta]held-out fve_nrm[/] at step {rec['step']}: {rec['eval_fve_nrm']:.3f}")

    return console, show


def _config(config: Optional[Path], settings: Optional[list[str]] = None, **flags):
    """Defaults < --config FILE < the flags that were given (None = not given) < --set KEY=VALUE."""
    from nlakit.train.config import load_config, parse_settings

    rl_steps, rl_minutes = flags.pop("rl_steps", None), flags.pop("rl_minutes", None)
    out = flags.pop("out", None)
    return load_config(config, {**flags, "out": str(out) if out is not None else None, "rl.steps": rl_steps,
                                "rl.max_minutes": rl_minutes}, parse_settings(settings))


_OPTS = dict(
    config=typer.Option(None, help="YAML run config (e.g. configs/smollm2-l20.yaml); flags given here override it."),
    target=typer.Option(None, help="Target: smollm2, gemma3-270m, an HF dir, a .gguf file, or tiny:llama. [default: smollm2]"),
    layer=typer.Option(None, help="Block K whose output is explained (HF hidden_states[K+1]). [default: 20]"),
    out=typer.Option(None, help="Run directory (checkpoints, logs, bundle); required unless the config sets `out`."),
    data=typer.Option(None, help="Training documents: a .jsonl / .jsonl.gz ({\"text\": …} per line; optional lang, kind), "
                                 ".parquet (text column), plain-text file (one document each) or a folder of those "
                                 "(default: $NLAKIT_CORPUS/train.jsonl.gz or ../shared/corpus/train.jsonl.gz)."),
    eval_data=typer.Option(None, help="Held-out documents for evaluation only, same formats (default: the corpus's heldout.jsonl.gz)."),
    source=typer.Option(None, help="Warm-start explanation source: template, template_exact (spans written exactly: newlines, indentation) or self. [default: template]"),
    time_budget=typer.Option(None, help="Stop (checkpointed) after this long, e.g. 9m."),
    device=typer.Option(None, help="cpu, cuda or auto. [default: auto]"),
    n_docs=typer.Option(None, help="Training documents to sample. [default: 6000]"),
    rl_steps=typer.Option(None, help="GRPO steps. [default: 300]"),
    rl_minutes=typer.Option(None, help="Also end GRPO (as finished) once its steps have taken this many minutes."),
    describe=typer.Option(None, help="Also generate the `self` source (one short generation per document). [default: on]"),
    injection_scale=typer.Option(None, help="Injection norm (default: a round number above the mean norm)."),
    settings=typer.Option(None, "--set", help="Override any config key, repeatable: --set av.epochs=3 --set rl.micro_batch=256 "
                                              "(section keys dotted; the keys are those of configs/smollm2-l20.yaml)."),
)


@train_app.command("all")
def train_all_cmd(out: Optional[Path] = _OPTS["out"], config: Optional[Path] = _OPTS["config"], target: Optional[str] = _OPTS["target"],
                  layer: Optional[int] = _OPTS["layer"], data: Optional[str] = _OPTS["data"],
                  eval_data: Optional[str] = _OPTS["eval_data"], source: Optional[str] = _OPTS["source"],
                  time_budget: Optional[str] = _OPTS["time_budget"], device: Optional[str] = _OPTS["device"],
                  n_docs: Optional[int] = _OPTS["n_docs"], rl_steps: Optional[int] = _OPTS["rl_steps"],
                  rl_minutes: Optional[float] = _OPTS["rl_minutes"],
                  describe: Optional[bool] = _OPTS["describe"], injection_scale: Optional[float] = _OPTS["injection_scale"],
                  settings: Optional[list[str]] = _OPTS["settings"],
                  resume: bool = typer.Option(True, help="Continue a run found in --out (the default); --no-resume refuses to."),
                  ) -> None:
    """Datagen -> AR -> AV -> RL -> held-out eval -> bundle, resumable, under --time-budget."""
    from nlakit.errors import NlakitError
    from nlakit.train.pipeline import train_all

    cfg = _config(config, out=out, target=target, layer=layer, data=data, eval_data=eval_data, source=source,
                  time_budget=time_budget, device=device, n_docs=n_docs, rl_steps=rl_steps, rl_minutes=rl_minutes,
                  describe=describe, injection_scale=injection_scale, settings=settings)
    held = (Path(cfg.out) / "log.jsonl").exists()
    distributed.barrier()  # every rank looks before rank 0 starts writing
    if not resume and held:
        raise NlakitError(f"{cfg.out} already holds a run", "pass --resume to continue it, or choose a new --out")
    console, show = _printer()
    res = train_all(cfg, callback=show)
    if not distributed.is_main():
        return
    fe = res.get("final_eval")
    if fe:
        console.print(f"[bold green]held-out fve_nrm {fe['fve_nrm']['mean']:.3f}[/] "
                      f"(95% CI {fe['fve_nrm']['ci95'][0]:.3f}–{fe['fve_nrm']['ci95'][1]:.3f}, n={fe['n']}); bundle: {Path(cfg.out) / 'bundle'}")
        for row in res.get("baselines", []):
            console.print(f"  baseline {row['name']:<18} fve_nrm {row['fve_nrm']:.3f}")
    else:
        where = res.get("stopped_in") or f"RL step {res['rl']['steps_done']}/{cfg.rl.steps}"
        console.print(f"[yellow]time budget reached in {where}[/]; run again with the same --out to continue")


def _single_stage(stop_after: str, config: Optional[Path], settings: Optional[list[str]] = None, **flags) -> None:
    """Run the pipeline up to one stage (earlier stages are reused when done)."""
    from nlakit.train.pipeline import train_all

    console, show = _printer()
    cfg = _config(config, [*(settings or []), "rl.steps=0"], **flags)
    res = train_all(cfg, callback=show, stop_after="ar" if stop_after == "ar" else None)
    if not distributed.is_main():
        return
    for line in stage_summary(res):
        console.print(line)


def stage_summary(res: dict) -> list[str]:
    """One line per finished supervised stage: its steps and what it reads on the held-out positions."""
    lines = []
    ar, av = res.get("ar_sft") or {}, res.get("av_sft") or {}
    if ar.get("eval_gold_fve_nrm"):
        g = ar["eval_gold_fve_nrm"]
        lines.append(f"AR SFT: {ar.get('steps')} steps; held-out fve_nrm from the gold text {g['mean']:.3f} "
                     f"[{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] (n {g['n']})")
    if (av.get("eval") or {}).get("fve_nrm"):
        ev = av["eval"]
        f = ev["fve_nrm"]
        lines.append(f"AV SFT: {av.get('steps')} steps; held-out fve_nrm {f['mean']:.3f} [{f['ci95'][0]:.3f}, "
                     f"{f['ci95'][1]:.3f}] (n {ev['n']}), parse rate {ev['parse_rate']:.2f}")
    return lines


@train_app.command("ar")
def train_ar_cmd(out: Optional[Path] = _OPTS["out"], config: Optional[Path] = _OPTS["config"], target: Optional[str] = _OPTS["target"],
                 layer: Optional[int] = _OPTS["layer"], data: Optional[str] = _OPTS["data"],
                 eval_data: Optional[str] = _OPTS["eval_data"], source: Optional[str] = _OPTS["source"],
                 device: Optional[str] = _OPTS["device"], settings: Optional[list[str]] = _OPTS["settings"]) -> None:
    """AR supervised (runs datagen first if --out has none). Stops before RL."""
    _single_stage("ar", config, settings, out=out, target=target, layer=layer, data=data, eval_data=eval_data, source=source,
                  device=device)


@train_app.command("av")
def train_av_cmd(out: Optional[Path] = _OPTS["out"], config: Optional[Path] = _OPTS["config"], target: Optional[str] = _OPTS["target"],
                 layer: Optional[int] = _OPTS["layer"], data: Optional[str] = _OPTS["data"],
                 eval_data: Optional[str] = _OPTS["eval_data"], source: Optional[str] = _OPTS["source"],
                 device: Optional[str] = _OPTS["device"], settings: Optional[list[str]] = _OPTS["settings"]) -> None:
    """AV supervised (after the AR; earlier stages are reused). Stops before RL."""
    _single_stage("av", config, settings, out=out, target=target, layer=layer, data=data, eval_data=eval_data, source=source,
                  device=device)


@train_app.command("rl")
def train_rl_cmd(out: Optional[Path] = _OPTS["out"], config: Optional[Path] = _OPTS["config"], target: Optional[str] = _OPTS["target"],
                 layer: Optional[int] = _OPTS["layer"], source: Optional[str] = _OPTS["source"],
                 device: Optional[str] = _OPTS["device"], rl_steps: Optional[int] = _OPTS["rl_steps"],
                 rl_minutes: Optional[float] = _OPTS["rl_minutes"], time_budget: Optional[str] = _OPTS["time_budget"],
                 settings: Optional[list[str]] = _OPTS["settings"]) -> None:
    """GRPO on the AV (after both supervised stages), resumable."""
    train_all_cmd(out=out, config=config, target=target, layer=layer, data=None, eval_data=None, source=source,
                  time_budget=time_budget, device=device, n_docs=None, rl_steps=rl_steps, rl_minutes=rl_minutes, describe=None,
                  injection_scale=None, settings=settings, resume=True)


def datagen_cmd(out: Path = typer.Option(..., help="Output directory of the pairs."),
                target: str = typer.Option("smollm2", help="Target: smollm2, gemma3-270m, an HF dir, a .gguf file, or tiny:llama."),
                layer: int = typer.Option(20, help="Block K whose output is explained (HF hidden_states[K+1])."),
                data: Optional[str] = _OPTS["data"], eval_data: Optional[str] = _OPTS["eval_data"],
                n_docs: int = typer.Option(6000, help="Training documents to sample."),
                positions_per_doc: int = typer.Option(6, help="Positions sampled per document."),
                describe: bool = typer.Option(True, help="Also generate the `self` source (one short generation per document)."),
                device: str = typer.Option("auto", help="cpu, cuda or auto.")) -> None:
    """Sample training positions, extract activations and write warm-start explanations (no API)."""
    from nlakit.targets import load_target
    from nlakit.train.datagen import DatagenConfig, datagen
    from nlakit.train.pipeline import default_corpus

    console, show = _printer()
    t = load_target(target, device=device)
    cfg = DatagenConfig(data=data or default_corpus("train.jsonl.gz"), out=str(out), layer=layer, n_docs=n_docs,
                        positions_per_doc=positions_per_doc, describe=describe,
                        eval_data=eval_data or default_corpus("heldout.jsonl.gz"),
                        dtype="bfloat16" if t.device.startswith("cuda") else None)
    show_progress = (lambda stage, i, n: show({"stage": f"datagen/{stage}", "done": i, "of": n})) if distributed.is_main() else None
    datagen(cfg, t, progress=show_progress)
    if distributed.is_main():
        console.print(f"[green]wrote[/] {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.command("datagen")(datagen_cmd)
