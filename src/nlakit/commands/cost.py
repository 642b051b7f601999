"""`nlakit cost`: what NLA monitoring would cost in deployment (roofline estimate, every assumption stated).

    nlakit cost                                   # 7B, 70B, ~1T MoE (hypothetical) under every policy
    nlakit cost --out runs/cost                   # also write cost.json + cost.html
    nlakit cost --model 70b --explanation-len 500 --decode-efficiency 0.5 --prefill-efficiency 0.5
    nlakit cost --calibrate docs/benchmarks/engine.json
    nlakit cost --name my-13b --params 13e9 --d-model 5120 --layers 40 --kv-dim 5120

Options left unset take the defaults of `CostConfig` (one place, each with its source in cost.json).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from nlakit.errors import NlakitError

OUT_JSON, OUT_HTML = "cost.json", "cost.html"


def _fmt_si(x: float, unit: str = "") -> str:
    for div, suf in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}{unit}"
    return f"{x:.3g}{unit}"


def _fmt_usd(x: float) -> str:
    return f"${x:,.0f}" if x >= 10 else f"${x:.3g}"


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def _command_line(params: dict[str, Any]) -> str:
    """The command as typed, rebuilt from the parsed options that differ from their defaults."""
    defaults = {"name": "custom", "gpu": "h100-sxm"}
    parts = ["nlakit", "cost"]
    for k, v in params.items():
        if v is None or v is False or v == [] or v == () or defaults.get(k) == v:
            continue
        flag = "--" + k.replace("_", "-")
        for item in v if isinstance(v, (list, tuple)) else [v]:
            parts += [flag] if item is True else [flag, shlex.quote(str(item))]
    return " ".join(parts)


def figures(results: dict[str, Any]) -> dict[str, str]:
    """Inline SVG plots for the report, drawn from the results dict alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlakit.report import svg_figure

    sens = results["sensitivity"]
    out = {}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for s in sens["series"]:
        ax.loglog(sens["fractions"], s["multiple"], lw=2, label=s["model"])
    for x in results["overheads"]:
        ax.axhline(x, color="#999", ls="--", lw=0.8)
        ax.text(sens["fractions"][0], x * 1.15, f"{x:.0%} of serving", color="#666", fontsize=8)
    ax.set_xlabel("fraction of generated tokens explained")
    ax.set_ylabel("monitoring cost / serving cost (GPU-time)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False)
    out["sensitivity"] = svg_figure(fig)

    fig, ax = plt.subplots(figsize=(9, 3.8))
    for s in sens["series"]:
        ax.plot(sens["lengths"], s["token_equivalents_by_length"], marker="o", lw=2, label=s["model"])
    ax.set_xlabel("explanation length (tokens)")
    ax.set_ylabel("one activation = N served tokens")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    out["length"] = svg_figure(fig)
    return out


def _print(results: dict[str, Any]) -> None:
    from rich.table import Table

    from nlakit.commands._common import console
    eff = results["efficiency"]
    hw = results["hardware"]
    console.print(
        f"[bold]{hw['name']}[/]: {hw['peak_flops'] / 1e12:.0f} TFLOP/s, {hw['mem_bw'] / 1e12:.2f} TB/s, "
        f"${hw['usd_per_gpu_hour']:.2f}/GPU-h · efficiency prefill {eff['prefill']:.3g}, decode {eff['decode']:.3g}, "
        f"overhead {eff['overhead_s_per_layer'] * 1e3:.3g} ms/layer/call\n[dim]{eff['source']}[/]"
    )
    per = Table(title="One explained activation", title_justify="left")
    for col in ("target", "FLOPs", "GPU-s", "$", "= served tokens (FLOPs / GPU-time)", "AV decode binds", "serving binds",
                "latency (batch / 1)", "≤1% · ≤10% · ≤100% of serving"):
        per.add_column(col, justify="left" if col in ("target", "AV decode binds", "serving binds") else "right")
    for s in results["scenarios"]:
        pa = s["per_activation"]
        eq = pa["serving_token_equivalents"]
        be = " · ".join(f"1 in {b['one_in']:,.0f}" for b in s["break_even"])
        per.add_row(
            s["target"]["name"], _fmt_si(pa["flops"]), f"{pa['gpu_s']:.3g}", f"${pa['usd']:.2g}",
            f"{eq['flops']:.0f} / {eq['gpu_time']:.0f}", pa["phases"][1]["binds"], s["serving"]["per_token"]["binds"],
            f"{_fmt_s(pa['latency_s'])} / {_fmt_s(pa['latency_s_batch1'])}", be,
        )
    console.print(per)

    pol = Table(title="Per day, by monitoring policy", title_justify="left")
    for col in ("target", "policy", "explained/day", "GPU-h/day", "$/day", "× serving", "blocking latency"):
        pol.add_column(col, justify="left" if col in ("target", "policy") else "right")
    for s in results["scenarios"]:
        pol.add_row(s["target"]["name"], "[dim]serving itself[/]", "", f"{s['serving']['gpu_hours_per_day']:,.0f}",
                    _fmt_usd(s["serving"]["usd_per_day"]), "1", "")
        for p in s["policies"]:
            lat = ""
            if p["blocking"]:
                ok = "green" if p["within_latency_budget"] else "red"
                lat = f"[{ok}]{_fmt_s(p['latency_s'])}[/]"
            pol.add_row("", p["policy"], _fmt_si(p["explained_per_day"]), f"{p['gpu_hours_per_day']:,.3g}",
                        _fmt_usd(p["usd_per_day"]), f"{p['multiple_of_serving']:.3g}", lat)
        pol.add_section()
    console.print(pol)
    for n in results["notes"]:
        console.print(f"[dim]• {n}[/]")


def register(app: typer.Typer) -> None:
    @app.command("cost")
    def cost(
        ctx: typer.Context,
        model: list[str] = typer.Option(None, "--model", "-m", help="Scenario(s): 7b, 70b, 1t-moe, smollm2 (repeatable). Default: 7b, 70b, 1t-moe."),
        name: str = typer.Option("custom", help="Name of a custom target given by --params etc."),
        params: Optional[float] = typer.Option(None, help="Custom target: active parameters (e.g. 13e9)."),
        total_params: Optional[float] = typer.Option(None, help="Custom target: total parameters (MoE only)."),
        d_model: Optional[int] = typer.Option(None, help="Custom target: d_model."),
        layers: Optional[int] = typer.Option(None, help="Custom target: number of layers N."),
        kv_dim: Optional[int] = typer.Option(None, help="Custom target: n_kv_heads·head_dim (default d_model)."),
        nla_layer: Optional[int] = typer.Option(None, help="Layer K the NLA reads (default: released NLA, else 2/3 of depth)."),
        av_params: Optional[float] = typer.Option(None, help="A smaller AV: its parameters (default: AV = target)."),
        av_d_model: Optional[int] = typer.Option(None, help="Smaller AV: d_model."),
        av_layers: Optional[int] = typer.Option(None, help="Smaller AV: layers."),
        av_kv_dim: Optional[int] = typer.Option(None, help="Smaller AV: kv_dim (default its d_model)."),
        ar_layers: Optional[int] = typer.Option(None, help="AR depth (default K+1)."),
        no_ar: bool = typer.Option(False, "--no-ar", help="Skip the AR (explanations only, no fidelity score)."),
        explanation_len: Optional[int] = typer.Option(None, help="Explanation tokens (default 150; Claude NLAs ~500)."),
        av_prompt_len: Optional[int] = typer.Option(None, help="AV prompt tokens (default 100)."),
        ar_template_len: Optional[int] = typer.Option(None, help="AR template tokens (default 20)."),
        tokens_per_day: Optional[float] = typer.Option(None, help="Generated tokens per day (default 1e9)."),
        transcripts_per_day: Optional[float] = typer.Option(None, help="Transcripts per day (default 1e5)."),
        every_k: Optional[int] = typer.Option(None, help="Policy 'every k-th token' (default 100)."),
        sample_fraction: Optional[float] = typer.Option(None, help="Policy 'sampled traffic': share of transcripts (default 0.01)."),
        tokens_per_transcript: Optional[int] = typer.Option(None, help="Policy 'N random tokens per transcript' (default 50)."),
        actions_per_transcript: Optional[float] = typer.Option(None, help="Policy 'before each action': tool calls + answer per transcript (default 20)."),
        gpu: str = typer.Option("h100-sxm", help="GPU preset: h100-sxm, h200, a100-80gb."),
        peak_tflops: Optional[float] = typer.Option(None, help="Override: dense bf16 TFLOP/s per GPU."),
        mem_bw_tbs: Optional[float] = typer.Option(None, help="Override: memory bandwidth TB/s per GPU."),
        hbm_gb: Optional[float] = typer.Option(None, help="Override: GPU memory in GB."),
        usd_per_gpu_hour: Optional[float] = typer.Option(None, help="Override: $ per GPU-hour."),
        calibrate: Optional[Path] = typer.Option(None, help="Calibrate efficiencies from a docs/benchmarks/engine.json."),
        prefill_efficiency: Optional[float] = typer.Option(None, help="Override: fraction of roofline reached in prefill."),
        decode_efficiency: Optional[float] = typer.Option(None, help="Override: fraction of roofline reached in decode."),
        overhead_ms_per_layer: Optional[float] = typer.Option(None, help="Override: fixed ms per layer per forward call."),
        serving_batch: Optional[int] = typer.Option(None, help="Serving: concurrent sequences per replica (default 64)."),
        serving_context: Optional[int] = typer.Option(None, help="Serving: mean attended context (default 4096)."),
        monitor_batch: Optional[int] = typer.Option(None, help="Monitor: AV/AR batch (default 256)."),
        gpus_per_replica: Optional[int] = typer.Option(None, help="GPUs per replica (default: smallest power of two that fits); cuts latency."),
        latency_budget_s: Optional[float] = typer.Option(None, help="Blocking monitor: latency budget in s (default 2)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for cost.json + cost.html."),
    ) -> None:
        """Deployment cost of NLA monitoring: FLOPs, GPU-hours, $, multiple of serving, latency, break-even."""
        from nlakit.experiments import cost as lib

        targets = [lib.resolve_model(m) for m in (model or [])]
        custom = {"params": params, "d_model": d_model, "layers": layers}
        if any(v is not None for v in (params, d_model, layers, kv_dim, total_params)):
            missing = [f"--{k.replace('_', '-')}" for k, v in custom.items() if v is None]
            if missing:
                raise NlakitError(f"a custom target needs {', '.join(missing)}", "give --params, --d-model and --layers together")
            targets.append(lib.ModelSpec(name, params, d_model, layers, kv_dim or d_model, params_total=total_params,
                                         nla_layer=nla_layer, source="given on the command line"))
        elif nla_layer is not None:
            targets = [dataclasses.replace(t, nla_layer=nla_layer) for t in targets]
        if not targets:
            targets = [lib.resolve_model(k) for k in lib.SCENARIOS]

        av = None
        if any(v is not None for v in (av_params, av_d_model, av_layers, av_kv_dim)):
            if None in (av_params, av_d_model, av_layers):
                raise NlakitError("a smaller AV needs --av-params, --av-d-model and --av-layers", "give all three (and optionally --av-kv-dim)")
            av = lib.ModelSpec(f"AV {av_params / 1e9:.3g}B", av_params, av_d_model, av_layers, av_kv_dim or av_d_model,
                               source="smaller AV given on the command line")

        hw = lib.resolve_hardware(gpu)
        hw_over = {"peak_flops": peak_tflops and peak_tflops * 1e12, "mem_bw": mem_bw_tbs and mem_bw_tbs * 1e12,
                   "hbm_bytes": hbm_gb and hbm_gb * 1e9, "usd_per_gpu_hour": usd_per_gpu_hour}
        hw_over = {k: v for k, v in hw_over.items() if v is not None}
        if hw_over:
            hw = dataclasses.replace(hw, **hw_over, source=f"{hw.source}; overridden on the command line: {', '.join(hw_over)}")

        eff = lib.load_calibration(calibrate) if calibrate is not None else lib.default_efficiency()
        eff_over = {"prefill": prefill_efficiency, "decode": decode_efficiency,
                    "overhead_s_per_layer": None if overhead_ms_per_layer is None else overhead_ms_per_layer / 1e3}
        eff_over = {k: v for k, v in eff_over.items() if v is not None}
        if eff_over:
            cal = None if eff.calibration is None else {**eff.calibration, "overridden": sorted(eff_over)}
            eff = dataclasses.replace(eff, **eff_over, calibration=cal, source=f"set on the command line ({', '.join(eff_over)}); the rest: {eff.source}")

        given = {
            "explanation_len": explanation_len, "av_prompt_len": av_prompt_len, "ar_template_len": ar_template_len,
            "tokens_per_day": tokens_per_day, "transcripts_per_day": transcripts_per_day, "every_k": every_k,
            "sample_fraction": sample_fraction, "tokens_per_transcript": tokens_per_transcript,
            "actions_per_transcript": actions_per_transcript, "serving_batch": serving_batch, "serving_context": serving_context,
            "monitor_batch": monitor_batch, "latency_budget_s": latency_budget_s, "gpus_per_replica": gpus_per_replica, "ar_layers": ar_layers,
        }
        given = {k: v for k, v in given.items() if v is not None}
        configs = [lib.CostConfig(target=t, hardware=hw, efficiency=eff, av=av, include_ar=not no_ar, **given) for t in targets]

        results = lib.run(configs)
        results["command"] = _command_line(ctx.params)
        _print(results)
        if out is not None:
            from nlakit.io import write_json
            from nlakit.report import write_report

            js = write_json(out / OUT_JSON, results)
            html = write_report("cost", js, out / OUT_HTML, figs=figures(results))
            from nlakit.commands._common import console

            console.print(f"wrote {js} and {html}")
