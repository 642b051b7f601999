"""The cost model's inputs for one target: every value, its unit and where the default comes from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nlakit.errors import NlakitError
from nlakit.experiments.cost.policies import BeforeAction, EveryKth, EveryToken, RandomPerTranscript, SampledTraffic
from nlakit.experiments.cost.roofline import (
    HARDWARE,
    PUBLISHED_EFFICIENCY,
    Efficiency,
    Hardware,
    ModelSpec,
    default_efficiency,
    measured_efficiency,
)


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
        other, what = self.other_efficiency()
        rows += [{"name": f"{kind}_efficiency ({what}, not used)", "value": value, "unit": "of roofline", "source": other.source}
                 for kind, value in (("prefill", other.prefill), ("decode", other.decode))]
        return rows

    def other_efficiency(self) -> tuple[Efficiency, str]:
        """The efficiency shown beside the one in use: our measurement beside the published default, or the published
        default beside a calibration or command-line value."""
        if self.efficiency == PUBLISHED_EFFICIENCY:
            return measured_efficiency(), "nlakit's own measurement; --calibrate FILE uses one"
        return PUBLISHED_EFFICIENCY, "published serving benchmarks, the default"
