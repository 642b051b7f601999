"""One target's monitoring cost (phases, per-activation cost, serving, break-even, policies) and the full run."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nlakit.errors import NlakitError
from nlakit.experiments.cost.config import CostConfig
from nlakit.experiments.cost.roofline import Efficiency, ModelSpec, Phase, forward_bytes, forward_flops, gpus_needed

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OVERHEADS = (0.01, 0.10, 1.00)  # break-even: monitoring at ≤1%, 10%, 100% of serving


# --------------------------------------------------------------------------------------------------
# One target: the phases, the per-activation cost, the policies
# --------------------------------------------------------------------------------------------------


def _phase(cfg: CostConfig, m: ModelSpec, name: str, *, batch: int, n_new: float, ctx: float, calls: float,
           efficiency: float, gpus: int) -> Phase:
    kw = dict(bytes_per_param=cfg.bytes_per_param, kv_bytes=cfg.kv_bytes)
    return Phase(
        name=name, model=m.name, calls=calls, batch=batch, gpus=gpus,
        flops=forward_flops(m, batch=batch, n_new=n_new, ctx=ctx), bytes=forward_bytes(m, batch=batch, n_new=n_new, ctx=ctx, **kw),
        peak_flops=cfg.hardware.peak_flops, mem_bw=cfg.hardware.mem_bw, efficiency=efficiency,
        overhead_s=m.n_layers * cfg.efficiency.overhead_s_per_layer,
    )


def _gpus(cfg: CostConfig, m: ModelSpec, batch: int, max_ctx: float) -> int:
    return max(cfg.gpus_per_replica or 1, gpus_needed(m, batch=batch, max_ctx=max_ctx, hw=cfg.hardware, bytes_per_param=cfg.bytes_per_param,
               kv_bytes=cfg.kv_bytes, memory_utilisation=cfg.memory_utilisation))


def monitor_phases(cfg: CostConfig, batch: int | None = None) -> list[Phase]:
    """AV prefill, AV decode and (if included) AR prefill for one batch of explained activations.

    Replicas are sized for the monitor batch even when `batch` is smaller (one request alone on them).
    """
    b = batch if batch is not None else cfg.monitor_batch
    eff = cfg.efficiency
    av, ar, p, L = cfg.av_model, cfg.ar_model, cfg.av_prompt_len, cfg.explanation_len
    g_av = _gpus(cfg, av, max(b, cfg.monitor_batch), p + L)
    phases = [
        _phase(cfg, av, "av_prefill", batch=b, n_new=p, ctx=0, calls=1, efficiency=eff.prefill, gpus=g_av),
        _phase(cfg, av, "av_decode", batch=b, n_new=1, ctx=p + (L - 1) / 2, calls=L, efficiency=eff.decode, gpus=g_av),
    ]
    if cfg.include_ar:
        t = L + cfg.ar_template_len
        phases.append(_phase(cfg, ar, "ar_prefill", batch=b, n_new=t, ctx=0, calls=1, efficiency=eff.prefill,
                             gpus=_gpus(cfg, ar, max(b, cfg.monitor_batch), t)))
    return phases


def serving_phase(cfg: CostConfig) -> Phase:
    """One decode step of the target at the serving batch and context = one generated token per sequence."""
    m, b = cfg.target, cfg.serving_batch
    g = _gpus(cfg, m, b, cfg.serving_context + 1)
    return _phase(cfg, m, "serving_decode", batch=b, n_new=1, ctx=cfg.serving_context, calls=1, efficiency=cfg.efficiency.decode, gpus=g)


def compute_bound_from_batch(cfg: CostConfig, m: ModelSpec, ctx: float, max_batch: int = 1 << 16) -> int | None:
    """Smallest power-of-two batch at which a decode call at context `ctx` is compute-bound (None: never, up to max_batch)."""
    kw = dict(bytes_per_param=cfg.bytes_per_param, kv_bytes=cfg.kv_bytes)
    b = 1
    while b <= max_batch:
        if forward_flops(m, batch=b, n_new=1, ctx=ctx) / cfg.hardware.peak_flops >= forward_bytes(m, batch=b, n_new=1, ctx=ctx, **kw) / cfg.hardware.mem_bw:
            return b
        b *= 2
    return None


def break_even(cost_per_activation_gpu_s: float, serving_per_token_gpu_s: float, overhead: float) -> float:
    """Fraction of generated tokens that can be explained for monitoring ≤ `overhead` × serving (capped at 1)."""
    return min(1.0, overhead * serving_per_token_gpu_s / cost_per_activation_gpu_s)


def estimate(cfg: CostConfig) -> dict[str, Any]:
    """Everything for one target: per-activation cost, serving cost, break-even, every policy."""
    hw = cfg.hardware
    phases = monitor_phases(cfg)
    b = cfg.monitor_batch
    act_gpu_s = sum(ph.gpu_s for ph in phases) / b  # GPU-seconds per explained activation
    act_flops = sum(ph.calls * ph.flops for ph in phases) / b
    serve = serving_phase(cfg)
    tok_gpu_s = serve.gpu_s / serve.batch  # GPU-seconds per generated token
    tok_flops = serve.flops / serve.batch
    phase_dicts = [ph.to_dict() for ph in phases]
    latency = sum(ph.wall_s for ph in phases)
    latency_1 = sum(ph.wall_s for ph in monitor_phases(cfg, batch=1))
    serving_gpu_h = cfg.tokens_per_day * tok_gpu_s / 3600
    usd_h = hw.usd_per_gpu_hour

    policies = []
    for pol in cfg.policies:
        n = pol.explained_per_day(cfg.tokens_per_day, cfg.transcripts_per_day)
        gpu_h = n * act_gpu_s / 3600
        policies.append({
            "key": pol.key, "policy": pol.describe(), "blocking": pol.blocking, "explained_per_day": n,
            "fraction_of_tokens": n / cfg.tokens_per_day, "flops_per_day": n * act_flops, "gpu_hours_per_day": gpu_h,
            "usd_per_day": gpu_h * usd_h, "multiple_of_serving": gpu_h / serving_gpu_h,
            "latency_s": latency if pol.blocking else None,
            "within_latency_budget": (latency <= cfg.latency_budget_s) if pol.blocking else None,
        })
    return {
        "target": dataclasses.asdict(cfg.target), "av": cfg.av_model.name, "ar": cfg.ar_model.name,
        "hypothetical": cfg.target.hypothetical, "generated_tokens_per_transcript": cfg.tokens_per_day / cfg.transcripts_per_day,
        "gpus_per_replica": {"serving": serve.gpus, **{ph.name: ph.gpus for ph in phases}},
        "per_activation": {
            "flops": act_flops, "gpu_s": act_gpu_s, "gpu_hours": act_gpu_s / 3600, "usd": act_gpu_s / 3600 * usd_h,
            "gpu_s_if_compute_bound": sum(p["gpu_s_per_seq_if_compute_bound"] for p in phase_dicts),
            "gpu_s_if_bandwidth_bound": sum(p["gpu_s_per_seq_if_bandwidth_bound"] for p in phase_dicts),
            "serving_token_equivalents": {"flops": act_flops / tok_flops, "gpu_time": act_gpu_s / tok_gpu_s},
            "sequential_decode_steps": cfg.explanation_len,
            "av_decode_compute_bound_from_batch": compute_bound_from_batch(
                cfg, cfg.av_model, cfg.av_prompt_len + (cfg.explanation_len - 1) / 2),
            "latency_s": latency, "latency_s_batch1": latency_1, "latency_budget_s": cfg.latency_budget_s,
            "phases": phase_dicts,
        },
        "serving": {
            "per_token": serve.to_dict(), "flops_per_token": tok_flops, "gpu_s_per_token": tok_gpu_s,
            "compute_bound_from_batch": compute_bound_from_batch(cfg, cfg.target, cfg.serving_context),
            "flops_per_day": cfg.tokens_per_day * tok_flops, "gpu_hours_per_day": serving_gpu_h, "usd_per_day": serving_gpu_h * usd_h,
        },
        "break_even": [
            {"overhead": x, "fraction": (f := break_even(act_gpu_s, tok_gpu_s, x)), "one_in": 1 / f,
             "per_transcript": f * cfg.tokens_per_day / cfg.transcripts_per_day}
            for x in OVERHEADS
        ],
        "policies": policies,
    }


# --------------------------------------------------------------------------------------------------
# All scenarios, with the sweeps the report plots
# --------------------------------------------------------------------------------------------------

FORMULAS = [
    "forward FLOPs per call = batch·(2·P_active·n_new + 4·n_layers·d_model·Σ_{i=1..n_new}(ctx+i))",
    "bytes per call = bytes_per_param·min(P_total, batch·n_new·P_active) + batch·2·n_layers·kv_dim·kv_bytes·(ctx+n_new)",
    "GPU-seconds per call = max(FLOPs/peak, bytes/bandwidth)/efficiency + gpus·n_layers·overhead_per_layer; wall = GPU-s/gpus",
    "AV = prefill(av_prompt_len) + explanation_len decode calls at mean context av_prompt_len+(L−1)/2",
    "AR = prefill(explanation_len + ar_template_len) through K+1 layers with (K+1)/N of the parameters",
    "serving one token = one decode call at serving_batch and serving_context",
    "multiple of serving = explained/day · GPU-s per activation / (tokens/day · GPU-s per served token)",
    "break-even fraction for overhead x = x · GPU-s per served token / GPU-s per activation",
    "replica size = smallest power of 2 of GPUs with weights + batch·max_ctx·KV ≤ memory_utilisation·HBM (or gpus_per_replica if larger)",
]


GLOSSARY = {
    "per_activation.flops / gpu_s / usd": "cost of explaining one activation (AV prefill + AV decode + AR prefill), per sequence",
    "per_activation.gpu_s_if_compute_bound / _if_bandwidth_bound": "the same with only one roofline term, to show which binds",
    "per_activation.serving_token_equivalents": "one activation costs as much as this many generated tokens of the target (FLOPs; GPU-time)",
    "per_activation.latency_s": "wall time of one explanation at the monitor batch (what a blocking monitor adds); _batch1: one request alone on the same replica",
    "serving.gpu_s_per_token": "GPU-seconds to generate one token of the target at the serving batch and context",
    "policies[].multiple_of_serving": "monitoring GPU-hours per day / serving GPU-hours per day",
    "break_even[].fraction": "largest fraction of generated tokens explainable with monitoring ≤ overhead × serving; one_in = 1/fraction",
    "*compute_bound_from_batch": "smallest power-of-two batch at which that decode call turns compute-bound (null: never)",
    "phases[].binds": "compute or bandwidth: the larger roofline term; overhead: the fixed per-call cost is larger than both",
    "sensitivity": "multiple of serving and $/day vs fraction of tokens explained; served-token equivalents vs explanation length",
}


def run(configs: list[CostConfig], fractions: int = 25, lengths: tuple[int, ...] = (25, 50, 100, 150, 250, 500, 1000)) -> dict[str, Any]:
    """Estimate every config (one per target) and the sensitivity sweeps; returns the self-describing results dict."""
    if not configs:
        raise NlakitError("no target model to cost", "pass --model or the --params/--d-model/--layers/--kv-dim options")
    scenarios = []
    for cfg in configs:
        log.info("costing %s", cfg.target.name)
        s = estimate(cfg)
        s["assumptions"] = cfg.assumptions()
        s["config"] = cfg.to_dict()
        scenarios.append(s)
    grid = [10 ** (-6 + 6 * i / (fractions - 1)) for i in range(fractions)]
    sens = []
    for cfg, s in zip(configs, scenarios):
        ratio = s["per_activation"]["gpu_s"] / s["serving"]["gpu_s_per_token"]
        usd = s["per_activation"]["usd"] * cfg.tokens_per_day
        tok_eq = []
        for L in lengths:
            e = estimate(dataclasses.replace(cfg, explanation_len=L))
            tok_eq.append(e["per_activation"]["serving_token_equivalents"]["gpu_time"])
        sens.append({"model": cfg.target.name, "multiple": [f * ratio for f in grid], "usd_per_day": [f * usd for f in grid],
                     "token_equivalents_by_length": tok_eq})
    first = configs[0]
    return {
        "kind": "cost", "schema_version": SCHEMA_VERSION,
        "hardware": dataclasses.asdict(first.hardware), "efficiency": dataclasses.asdict(first.efficiency),
        "formulas": FORMULAS, "glossary": GLOSSARY, "overheads": list(OVERHEADS),
        "scenarios": scenarios,
        "sensitivity": {"fractions": grid, "lengths": list(lengths), "series": sens},
        "efficiency_caveat": efficiency_caveat(first.efficiency),
        "notes": _notes(configs, scenarios),
    }


def efficiency_caveat(eff: Efficiency) -> str | None:
    """A warning when the decode efficiency is the overhead-bound fallback of `calibrate`, unchanged by the user."""
    cal = eff.calibration or {}
    if not cal.get("method", "").startswith("largest") or cal.get("overridden"):
        return None
    return (f"Efficiency {eff.decode:.3f} comes from a throughput that is launch-overhead-bound on a small model; applied to large "
            "models it overstates absolute GPU-hours, $ and latency (the multiples of serving are less affected, since serving "
            "uses the same efficiency). Recalibrate with --calibrate docs/benchmarks/engine.json.")


def _notes(configs: list[CostConfig], scenarios: list[dict[str, Any]]) -> list[str]:
    notes = [
        "Roofline estimates: real engines add scheduling, communication and padding costs; read the numbers as ±2×.",
        "GPU-seconds assume perfect tensor parallelism; wall times (latency) ignore inter-GPU communication.",
    ]
    if any(c.target.hypothetical for c in configs):
        notes.append("The ~1T MoE target is hypothetical: no NLA has been trained at that scale.")
    caveat = efficiency_caveat(configs[0].efficiency)
    if caveat:
        notes.append(caveat)
    binds = {s["per_activation"]["phases"][1]["binds"] for s in scenarios}
    notes.append(f"AV decode at the monitor batch is {'/'.join(sorted(binds))}-bound; serving decode is "
                 f"{'/'.join(sorted({s['serving']['per_token']['binds'] for s in scenarios}))}-bound.")
    return notes
