"""What NLA monitoring would cost in deployment: a roofline estimate, with every assumption written down.

    nlakit cost --out runs/cost                              # 7B, 70B, ~1T MoE under every policy
    nlakit cost --model 70b --explanation-len 500 --decode-efficiency 0.5

Built on one primitive, the batched forward call of `nlakit.experiments.cost_roofline` (FLOPs, bytes,
GPU-seconds = max(compute, bandwidth)/efficiency + overhead). On top of it:

* Decode of L tokens after a p-token prompt = L calls with n_new = 1 at the mean context p + (L−1)/2
  (exact for either roofline term alone, since both are linear in the context).
* The AV prefills its prompt (av_prompt_len tokens, the injected vector is one of them) and decodes
  explanation_len tokens. The AR prefills explanation + template through its first K+1 of N layers,
  i.e. (K+1)/N of the target's parameters (its d×d head, <0.1% of the FLOPs, is ignored).
* Serving one generated token of the target = one decode call at the serving batch and context. The
  same formulas price the monitor and the serving, so their ratio is apples to apples.
* A monitoring policy only counts the activations it explains per day; cost scales linearly with it.

Library code: no printing. `nlakit.commands.cost` prints the table and writes cost.json + cost.html.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from nlakit.errors import NlakitError
from nlakit.experiments.cost_roofline import (  # noqa: F401  (re-exported: the public surface of `cost`)
    ALIASES,
    FEASIBILITY_BENCH,
    HARDWARE,
    MODELS,
    SCENARIOS,
    Efficiency,
    Hardware,
    ModelSpec,
    Phase,
    calibrate,
    default_efficiency,
    forward_bytes,
    forward_flops,
    gpus_needed,
    load_calibration,
    resolve_hardware,
    resolve_model,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OVERHEADS = (0.01, 0.10, 1.00)  # break-even: monitoring at ≤1%, 10%, 100% of serving

# --------------------------------------------------------------------------------------------------
# Monitoring policies: each a small class that counts the activations it explains per day
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EveryToken:
    key = "every_token"
    blocking = False

    def describe(self) -> str:
        return "every generated token"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return tokens_per_day


@dataclass(frozen=True)
class EveryKth:
    k: int
    key = "every_kth"
    blocking = False

    def describe(self) -> str:
        return f"every {self.k}th token"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return tokens_per_day / self.k


@dataclass(frozen=True)
class BeforeAction:
    actions_per_transcript: float
    key = "before_action"
    blocking = True  # the action waits for the verdict

    def describe(self) -> str:
        return f"the token before each tool call or answer ({self.actions_per_transcript:g} per transcript), blocking"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return min(tokens_per_day, self.actions_per_transcript * transcripts_per_day)


@dataclass(frozen=True)
class SampledTraffic:
    fraction: float
    key = "sampled_fraction"
    blocking = False

    def describe(self) -> str:
        return f"every token of {100 * self.fraction:g}% of transcripts (offline audit)"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return self.fraction * tokens_per_day


@dataclass(frozen=True)
class RandomPerTranscript:
    n: int
    key = "random_per_transcript"
    blocking = False

    def describe(self) -> str:
        return f"{self.n} random tokens per transcript (the paper's audit protocol)"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return min(tokens_per_day, self.n * transcripts_per_day)


# --------------------------------------------------------------------------------------------------
# The config: every input, its unit and where the default comes from
# --------------------------------------------------------------------------------------------------


def _arg(default: Any, unit: str, source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class CostConfig:
    """Every input of the cost model for one target. `av`/`ar_layers` None = the paper's choice."""

    target: ModelSpec
    hardware: Hardware = field(default_factory=lambda: HARDWARE["h100-sxm"])
    efficiency: Efficiency = field(default_factory=lambda: default_efficiency())
    av: ModelSpec | None = _arg(None, "", "None = the AV is a copy of the target (the paper's design)")
    ar_layers: int | None = _arg(None, "layers", "None = K+1 (the AR is the target truncated after layer K)")
    include_ar: bool = _arg(True, "", "the AR prefill gives a fidelity score; the paper notes it is often skipped")
    explanation_len: int = _arg(150, "tokens", "open NLAs: 150-token RL cap, 144-148 measured; Claude NLAs wrote ~500 (research facts §3)")
    av_prompt_len: int = _arg(100, "tokens", "AV chat prompt around the injected vector, ~100 tokens (research facts §3)")
    ar_template_len: int = _arg(20, "tokens", "'Summary of the following text: <text>…</text> <summary>' and chat markup")
    tokens_per_day: float = _arg(1e9, "tokens/day", "illustrative deployment; multiples and break-evens do not depend on it")
    transcripts_per_day: float = _arg(1e5, "transcripts/day", "illustrative: 10k generated tokens per transcript (5k-20k in research facts §3)")
    every_k: int = _arg(100, "tokens", "policy 'every k-th token'")
    sample_fraction: float = _arg(0.01, "fraction", "policy 'sampled traffic': share of transcripts explained in full")
    tokens_per_transcript: int = _arg(50, "tokens", "policy 'N random tokens': the paper's 50-tokens-per-transcript audit")
    actions_per_transcript: float = _arg(20, "actions", "policy 'before each tool call or answer': assumed agentic transcript")
    serving_batch: int = _arg(64, "sequences", "concurrent sequences per serving replica (assumption)")
    serving_context: int = _arg(4096, "tokens", "mean attended context per generated token; conservative (longer makes serving dearer)")
    monitor_batch: int = _arg(256, "sequences", "AV/AR batch: contexts are short (~250-600 tokens), so batching is easy (research facts §3)")
    gpus_per_replica: int | None = _arg(None, "GPUs", "None = smallest power of two that holds weights + KV; more GPUs cut latency, not GPU-seconds")
    latency_budget_s: float = _arg(2.0, "s", "how long a tool call may wait for a blocking monitor (assumption)")
    bytes_per_param: float = _arg(2, "bytes", "bf16 weights")
    kv_bytes: float = _arg(2, "bytes", "bf16 KV cache")
    memory_utilisation: float = _arg(0.9, "fraction", "share of HBM usable for weights + KV when sizing a replica")

    def __post_init__(self) -> None:
        problems = []
        for name in ("explanation_len", "av_prompt_len", "every_k", "tokens_per_transcript", "serving_batch", "monitor_batch"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be ≥ 1 (got {getattr(self, name)})")
        for name in ("tokens_per_day", "transcripts_per_day", "latency_budget_s", "bytes_per_param", "kv_bytes"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        for name in ("ar_template_len", "actions_per_transcript", "serving_context"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be ≥ 0 (got {getattr(self, name)})")
        if not 0 < self.sample_fraction <= 1:
            problems.append(f"sample_fraction must be in (0, 1] (got {self.sample_fraction})")
        if not 0 < self.memory_utilisation <= 1:
            problems.append(f"memory_utilisation must be in (0, 1] (got {self.memory_utilisation})")
        if self.gpus_per_replica is not None and self.gpus_per_replica < 1:
            problems.append(f"gpus_per_replica must be ≥ 1 (got {self.gpus_per_replica})")
        if self.ar_layers is not None and not 1 <= self.ar_layers <= self.target.n_layers:
            problems.append(f"ar_layers must be in [1, {self.target.n_layers}] (got {self.ar_layers})")
        if self.transcripts_per_day > self.tokens_per_day:
            problems.append("transcripts_per_day exceeds tokens_per_day")
        if problems:
            raise NlakitError("invalid cost inputs: " + "; ".join(problems), "fix those options (see `nlakit cost --help`)")

    @property
    def av_model(self) -> ModelSpec:
        return self.av if self.av is not None else self.target

    @property
    def ar_model(self) -> ModelSpec:
        return self.target.truncated(self.ar_layers if self.ar_layers is not None else self.target.layer + 1)

    @property
    def policies(self) -> list:
        return [EveryToken(), EveryKth(self.every_k), BeforeAction(self.actions_per_transcript),
                SampledTraffic(self.sample_fraction), RandomPerTranscript(self.tokens_per_transcript)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostConfig:
        d = dict(d)
        d["target"] = ModelSpec(**d["target"])
        d["hardware"] = Hardware(**d["hardware"])
        d["efficiency"] = Efficiency(**d["efficiency"])
        d["av"] = None if d.get("av") is None else ModelSpec(**d["av"])
        return cls(**d)

    def assumptions(self) -> list[dict[str, Any]]:
        """Every input with its value, unit and a one-line source."""
        rows = [
            {"name": "target", "value": self.target.name, "unit": "", "source": self.target.source},
            {"name": "target.params_active", "value": self.target.params_active, "unit": "params", "source": self.target.source},
            {"name": "target.params_total", "value": self.target.total, "unit": "params", "source": "= active for dense models"},
            {"name": "target.d_model / n_layers / kv_dim", "value": f"{self.target.d_model} / {self.target.n_layers} / {self.target.kv_dim}",
             "unit": "", "source": self.target.source},
            {"name": "nla_layer K", "value": self.target.layer, "unit": "layer", "source": "released NLA, else round(2/3·n_layers) as model_presets.py picks"},
            {"name": "av", "value": self.av_model.name, "unit": "", "source": "a copy of the target (paper)" if self.av is None else self.av.source},
            {"name": "ar", "value": self.ar_model.name, "unit": "", "source": self.ar_model.source},
        ]
        for f in dataclasses.fields(self):
            if f.metadata and f.name not in ("av",):
                value = self.ar_model.n_layers if f.name == "ar_layers" else getattr(self, f.name)
                rows.append({"name": f.name, "value": value, "unit": f.metadata["unit"], "source": f.metadata["source"]})
        hw = self.hardware
        rows += [
            {"name": "gpu", "value": hw.name, "unit": "", "source": hw.source},
            {"name": "peak_flops", "value": hw.peak_flops, "unit": "FLOP/s/GPU", "source": hw.source},
            {"name": "mem_bw", "value": hw.mem_bw, "unit": "B/s/GPU", "source": hw.source},
            {"name": "hbm", "value": hw.hbm_bytes, "unit": "B/GPU", "source": hw.source},
            {"name": "usd_per_gpu_hour", "value": hw.usd_per_gpu_hour, "unit": "$/GPU-h", "source": hw.source},
            {"name": "prefill_efficiency", "value": self.efficiency.prefill, "unit": "of roofline", "source": self.efficiency.source},
            {"name": "decode_efficiency", "value": self.efficiency.decode, "unit": "of roofline", "source": self.efficiency.source},
            {"name": "overhead_per_layer", "value": self.efficiency.overhead_s_per_layer, "unit": "s per layer per call", "source": self.efficiency.source},
        ]
        return rows


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
