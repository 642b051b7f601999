"""The roofline model of one forward call, the models and GPUs it is fed, and its calibration.

The cost of NLA monitoring (`nlakit.experiments.cost`) is built from one primitive, a batched forward call:

* One call processes `batch` sequences, each adding `n_new` tokens after `ctx` cached positions.
  FLOPs  = batch · (2·P_active·n_new + 4·n_layers·d_model·A),  A = Σ_{i=1..n_new} (ctx + i)
           (2·P per token for the weight matmuls, LM head included; 4·n_layers·d_model per attended
           position for QKᵀ and attention·V; norms, softmax and the embedding lookup are ignored).
  Bytes  = bytes_per_param · min(P_total, batch·n_new·P_active)   (weights read once per call; an MoE
           reads at most the experts its tokens route to)  +  batch · kv_bytes_per_token · (ctx + n_new)
           (KV cache read, new KV written; kv_bytes_per_token = 2·n_layers·kv_dim·kv_bytes).
  GPU-seconds = max(FLOPs/peak, Bytes/bandwidth) / efficiency  +  gpus · n_layers · overhead_per_layer.
  Whichever of the two roofline terms is larger *binds*; the overhead term models per-layer launch cost.
  GPU-seconds do not depend on how many GPUs share the call (perfect tensor parallelism, no
  communication); wall time = GPU-seconds / gpus.

Efficiencies default to what production serving stacks reach in published benchmarks (`PUBLISHED_EFFICIENCY`);
`calibrate` fits them to our own measured generation throughput instead (`nlakit cost --calibrate engine.json`).
Both are shown in the report's assumptions, the one in use and the other for comparison.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlakit.errors import NlakitError

# --------------------------------------------------------------------------------------------------
# Inputs: a model, a GPU, an efficiency
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A transformer as the cost model sees it. `params_total` is set only for mixtures of experts."""

    name: str
    params_active: float  # parameters used per token (all of them for a dense model)
    d_model: int
    n_layers: int
    kv_dim: int  # n_kv_heads · head_dim (= d_model without grouped-query attention)
    params_total: float | None = None
    nla_layer: int | None = None  # K, the layer the NLA reads; None = round(2/3 · n_layers)
    hypothetical: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.params_active > 0:
            problems.append(f"params_active must be > 0 (got {self.params_active})")
        if self.params_total is not None and self.params_total < self.params_active:
            problems.append(f"params_total ({self.params_total:g}) must be ≥ params_active ({self.params_active:g})")
        for name in ("d_model", "n_layers", "kv_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be ≥ 1 (got {getattr(self, name)})")
        if self.nla_layer is not None and not 0 <= self.nla_layer < self.n_layers:
            problems.append(f"nla_layer must be in [0, {self.n_layers - 1}] (got {self.nla_layer})")
        if problems:
            raise NlakitError(f"model {self.name!r}: " + "; ".join(problems), "fix the model options (see `nlakit cost --help`)")

    @property
    def total(self) -> float:
        return self.params_total if self.params_total is not None else self.params_active

    @property
    def layer(self) -> int:
        """K: the NLA layer (explicit, else about 2/3 of the depth, as the released NLAs choose)."""
        return self.nla_layer if self.nla_layer is not None else round(2 * self.n_layers / 3)

    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        return 2 * self.n_layers * self.kv_dim * kv_bytes  # K and V, every layer

    def truncated(self, n_layers: int) -> ModelSpec:
        """The first `n_layers` blocks (the AR): parameters scale with the fraction of layers kept."""
        frac = n_layers / self.n_layers
        total = None if self.params_total is None else self.params_total * frac
        return dataclasses.replace(
            self, name=f"{self.name} [first {n_layers}/{self.n_layers} layers]", params_active=self.params_active * frac,
            params_total=total, n_layers=n_layers, nla_layer=None,
            source=f"{n_layers}/{self.n_layers} of the parameters of {self.name}",
        )


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_flops: float  # dense bf16 FLOP/s per GPU
    mem_bw: float  # bytes/s per GPU
    hbm_bytes: float  # per GPU
    usd_per_gpu_hour: float
    source: str = ""

    def __post_init__(self) -> None:
        bad = [f"{k}={getattr(self, k)}" for k in ("peak_flops", "mem_bw", "hbm_bytes") if not getattr(self, k) > 0]
        if self.usd_per_gpu_hour < 0:
            bad.append(f"usd_per_gpu_hour={self.usd_per_gpu_hour}")
        if bad:
            raise NlakitError(f"GPU {self.name!r} has impossible specs ({', '.join(bad)})",
                              "pass positive --peak-tflops, --mem-bw-tbs, --hbm-gb and a non-negative --usd-per-gpu-hour")


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of the roofline in prefill and decode, plus a fixed per-layer cost per forward call."""

    prefill: float
    decode: float
    overhead_s_per_layer: float = 0.0
    source: str = ""
    calibration: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (0 < self.prefill <= 1 and 0 < self.decode <= 1) or self.overhead_s_per_layer < 0:
            raise NlakitError(
                f"efficiencies must be in (0, 1] and the overhead ≥ 0 (got prefill={self.prefill}, decode={self.decode}, "
                f"overhead={self.overhead_s_per_layer})",
                "pass e.g. --prefill-efficiency 0.4 --decode-efficiency 0.5 --overhead-ms-per-layer 0",
            )


# Real models: configs from their Hugging Face config.json; K from nla-checkpoint-format.md §1.
MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        "SmolLM2-135M-Instruct", 134.5e6, 576, 30, 3 * 64, nla_layer=20,
        source="HF config: 30 layers, d 576, 3 KV heads × 64; the model of feasibility-notes.md",
    ),
    "qwen2.5-7b": ModelSpec(
        "Qwen2.5-7B-Instruct", 7.62e9, 3584, 28, 4 * 128, nla_layer=20,
        source="HF config: 28 layers, d 3584, 4 KV heads × 128; released NLA at K=20",
    ),
    "llama-3.3-70b": ModelSpec(
        "Llama-3.3-70B-Instruct", 70.6e9, 8192, 80, 8 * 128, nla_layer=53,
        source="HF config: 80 layers, d 8192, 8 KV heads × 128; released NLA at K=53",
    ),
    "moe-1t": ModelSpec(
        "MoE-1T (hypothetical)", 50e9, 8192, 64, 8 * 128, params_total=1.0e12, hypothetical=True,
        source="HYPOTHETICAL: 1T total / 50B active, 64 layers, d 8192, GQA 8×128; shaped like public ~1T MoEs "
        "(which activate ~32-50B); no NLA exists at this scale",
    ),
}
SCENARIOS: dict[str, str] = {"7b": "qwen2.5-7b", "70b": "llama-3.3-70b", "1t-moe": "moe-1t"}
ALIASES: dict[str, str] = {**SCENARIOS, "smollm2": "smollm2-135m", "135m": "smollm2-135m"}

HARDWARE: dict[str, Hardware] = {
    "h100-sxm": Hardware("H100 SXM", 989e12, 3.35e12, 80e9, 2.50,
                         "NVIDIA datasheet (dense bf16, HBM3); $2.50/GPU-h ≈ the $2.5-3 implied by the reproduction "
                         "costs in nla-research-facts.md §3 (assumption)"),
    "h200": Hardware("H200", 989e12, 4.8e12, 141e9, 3.50,
                     "NVIDIA datasheet (dense bf16, HBM3e); $3.50/GPU-h assumed"),
    "a100-80gb": Hardware("A100 80GB SXM", 312e12, 2.039e12, 80e9, 1.50,
                          "NVIDIA datasheet (dense bf16); $1.50/GPU-h assumed"),
}


def resolve_model(name: str) -> ModelSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise NlakitError(f"unknown model {name!r}", f"use one of {sorted(set(ALIASES) | set(MODELS))}, or give --params/--d-model/--layers/--kv-dim")
    return MODELS[key]


def resolve_hardware(name: str) -> Hardware:
    """A preset by key, or by a GPU name as `torch.cuda.get_device_name` writes it ("NVIDIA H100 80GB HBM3")."""
    s = name.lower().replace(" ", "")
    if s in HARDWARE:
        return HARDWARE[s]
    for needle, key in (("h200", "h200"), ("h100", "h100-sxm"), ("a100", "a100-80gb")):
        if needle in s:
            return HARDWARE[key]
    raise NlakitError(f"unknown GPU {name!r}", f"use one of {sorted(HARDWARE)}, or give --peak-tflops/--mem-bw-tbs/--hbm-gb")


# --------------------------------------------------------------------------------------------------
# The formulas
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """`calls` identical forward calls of one model; `flops`/`bytes` are per call, for the whole batch."""

    name: str
    model: str
    calls: float
    batch: int
    gpus: int
    flops: float
    bytes: float
    peak_flops: float
    mem_bw: float
    efficiency: float
    overhead_s: float  # wall seconds of fixed cost per call

    @property
    def compute_s(self) -> float:  # GPU-seconds per call if compute binds
        return self.flops / self.peak_flops

    @property
    def bandwidth_s(self) -> float:  # GPU-seconds per call if memory bandwidth binds
        return self.bytes / self.mem_bw

    @property
    def binds(self) -> str:
        roof = max(self.compute_s, self.bandwidth_s) / self.efficiency
        if self.gpus * self.overhead_s > roof:
            return "overhead"
        return "compute" if self.compute_s >= self.bandwidth_s else "bandwidth"

    @property
    def gpu_s(self) -> float:
        """GPU-seconds for all calls: roofline / efficiency + gpus · overhead."""
        return self.calls * (max(self.compute_s, self.bandwidth_s) / self.efficiency + self.gpus * self.overhead_s)

    @property
    def wall_s(self) -> float:
        return self.gpu_s / self.gpus

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "model": self.model, "calls": self.calls, "batch": self.batch, "gpus": self.gpus,
            "flops_per_seq": self.calls * self.flops / self.batch, "bytes_per_seq": self.calls * self.bytes / self.batch,
            "compute_s_per_call": self.compute_s, "bandwidth_s_per_call": self.bandwidth_s,
            "overhead_s_per_call": self.overhead_s, "efficiency": self.efficiency, "binds": self.binds,
            "gpu_s_per_seq": self.gpu_s / self.batch, "wall_s": self.wall_s,
            # each roofline alone (with efficiency and overhead): the two estimates the issue asks for
            "gpu_s_per_seq_if_compute_bound": self.calls * (self.compute_s / self.efficiency + self.gpus * self.overhead_s) / self.batch,
            "gpu_s_per_seq_if_bandwidth_bound": self.calls * (self.bandwidth_s / self.efficiency + self.gpus * self.overhead_s) / self.batch,
        }


def forward_flops(m: ModelSpec, *, batch: float, n_new: float, ctx: float) -> float:
    """FLOPs of one call: batch · (2·P_active·n_new + 4·n_layers·d_model·Σ_{i=1..n_new}(ctx+i))."""
    attended = n_new * ctx + n_new * (n_new + 1) / 2
    return batch * (2 * m.params_active * n_new + 4 * m.n_layers * m.d_model * attended)


def forward_bytes(m: ModelSpec, *, batch: float, n_new: float, ctx: float, bytes_per_param: float, kv_bytes: float) -> float:
    """Bytes of one call: weights once (an MoE at most the experts routed to) + KV read (ctx) and written (n_new)."""
    weights = bytes_per_param * min(m.total, batch * n_new * m.params_active)
    return weights + batch * m.kv_bytes_per_token(kv_bytes) * (ctx + n_new)


def gpus_needed(m: ModelSpec, *, batch: int, max_ctx: float, hw: Hardware, bytes_per_param: float, kv_bytes: float,
                memory_utilisation: float) -> int:
    """Smallest power of two of GPUs whose memory holds the weights and the batch's KV cache."""
    need = bytes_per_param * m.total + batch * max_ctx * m.kv_bytes_per_token(kv_bytes)
    return 2 ** max(0, math.ceil(math.log2(need / (memory_utilisation * hw.hbm_bytes))))


# --------------------------------------------------------------------------------------------------
# Calibration: efficiencies from a measured generation throughput
# --------------------------------------------------------------------------------------------------

# The only measurement we have so far (feasibility-notes.md, "Generation speed of plain HF generate").
FEASIBILITY_BENCH: dict[str, Any] = {
    "gpu": "H100 SXM", "model": "smollm2-135m", "prompt_len": 35, "new_tokens": 64,
    "rows": [{"batch": 64, "hf_tok_s": 1.9e3}, {"batch": 1024, "hf_tok_s": 38.0e3}],
    "source": "feasibility-notes.md: HF generate, dynamic cache, SmolLM2-135M, bf16, one H100",
}


def roofline_generation_s(m: ModelSpec, hw: Hardware, *, batch: int, prompt_len: int, new_tokens: int) -> float:
    """Roofline seconds (efficiency 1, no overhead) to prefill `prompt_len` and decode `new_tokens` for a batch."""
    kw = dict(bytes_per_param=2, kv_bytes=2)
    pre = max(forward_flops(m, batch=batch, n_new=prompt_len, ctx=0) / hw.peak_flops,
              forward_bytes(m, batch=batch, n_new=prompt_len, ctx=0, **kw) / hw.mem_bw)
    ctx = prompt_len + (new_tokens - 1) / 2
    dec = max(forward_flops(m, batch=batch, n_new=1, ctx=ctx) / hw.peak_flops,
              forward_bytes(m, batch=batch, n_new=1, ctx=ctx, **kw) / hw.mem_bw)
    return pre + new_tokens * dec


def calibrate(bench: dict[str, Any], source: str = "") -> Efficiency:
    """Efficiencies from generation throughputs measured at several batch sizes.

    Each row gives a measured time t = batch·new_tokens/tok_s and a roofline time r (same formulas as the
    cost model). Fit t = r/decode_eff + calls·n_layers·overhead by least squares. If the fit is not
    physical (efficiency > 1, negative overhead, fewer than two batch sizes, or time falling with batch: an
    overhead-bound measurement), fall back to overhead 0 and efficiency = r/t at the largest batch, which
    is pessimistic for larger models. Prefill efficiency comes from `extract_tok_s` (a forward pass over
    `extract_seq_len` tokens) when present, else equals the decode efficiency.
    """
    rows = bench.get("rows") or []
    if not rows:
        raise NlakitError("the bench file has no 'rows'", "pass a docs/benchmarks/engine.json written by `nlakit bench`")
    m = resolve_model(str(bench.get("model", "smollm2-135m")))
    hw = resolve_hardware(str(bench.get("gpu", "h100-sxm")))
    p, n = int(bench.get("prompt_len", 35)), int(bench.get("new_tokens", 64))
    key = "engine_tok_s" if all(r.get("engine_tok_s") for r in rows) else "hf_tok_s"
    pts = []
    for r in sorted(rows, key=lambda r: r["batch"]):
        if not r.get(key):
            raise NlakitError(f"bench row {r} has no {key}", "each row needs 'batch' and 'engine_tok_s' or 'hf_tok_s'")
        b = int(r["batch"])
        pts.append((b, roofline_generation_s(m, hw, batch=b, prompt_len=p, new_tokens=n), b * n / float(r[key])))
    calls = (n + 1) * m.n_layers  # overhead is paid per call per layer
    method, eff, over = "largest batch, no overhead", pts[-1][1] / pts[-1][2], 0.0
    if len(pts) >= 2 and len({r for _, r, _ in pts}) >= 2:
        xs, ys = [r for _, r, _ in pts], [t for _, _, t in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        intercept = my - slope * mx
        if slope >= 1 and intercept >= 0:
            method, eff, over = "least-squares fit over batch sizes", 1 / slope, intercept / calls
    eff = min(eff, 1.0)
    pre = eff
    if bench.get("extract_tok_s"):
        t = int(bench.get("extract_seq_len", 256))
        pre = min(1.0, float(bench["extract_tok_s"]) * forward_flops(m, batch=1, n_new=t, ctx=0) / t / hw.peak_flops)
    rows_out = [{"batch": b, "roofline_s": r, "measured_s": t, "predicted_s": r / eff + calls * over,
                 "naive_efficiency": r / t} for b, r, t in pts]
    return Efficiency(
        prefill=pre, decode=eff, overhead_s_per_layer=over,
        source=(source or bench.get("source") or "nlakit bench") + f" ({key}, {method}); to be recalibrated from `nlakit bench`",
        calibration={"model": m.name, "gpu": hw.name, "prompt_len": p, "new_tokens": n, "throughput_key": key,
                     "method": method, "prefill_from": "extract_tok_s" if bench.get("extract_tok_s") else "= decode (no prefill measurement)",
                     "rows": rows_out},
    )


# Published serving benchmarks (read as summaries via the search tool; the original posts were not opened here):
# - decode, memory-bound: Databricks/MosaicML, "LLM Inference Performance Engineering: Best Practices" (Oct 2023),
#   TensorRT-LLM on A100-40GB: model-bandwidth utilisation 55% for Llama-2-70B on 4 GPUs and 60% for MPT-7B on 2 GPUs at
#   batch 1 (52% at batch 16) -> decode 0.55.
# - prefill, compute-bound: Pope et al., "Efficiently Scaling Transformer Inference" (arXiv 2211.05102, 2022): 76% model
#   FLOPs utilisation for large-batch prefill of PaLM 540B on TPU v4. GPU stacks report less; we take 0.6 (a discount of
#   that number, our assumption).
PUBLISHED_EFFICIENCY = Efficiency(
    prefill=0.6, decode=0.55, overhead_s_per_layer=0.0,
    source="published serving benchmarks: decode = 55% bandwidth utilisation (Databricks 2023, TensorRT-LLM, Llama-2-70B "
           "on 4×A100; MPT-7B 52–60%); prefill = 0.6, below the 76% FLOPs utilisation of Pope et al. 2022 (PaLM 540B, TPU v4)",
)


def default_efficiency() -> Efficiency:
    """What a production server reaches (`PUBLISHED_EFFICIENCY`); `--calibrate` replaces it with our own measurement."""
    return PUBLISHED_EFFICIENCY


def measured_efficiency() -> Efficiency:
    """Our own measurement: the HF-generate throughput of feasibility-notes.md (a 135M model, launch-overhead-bound)."""
    return calibrate(FEASIBILITY_BENCH)


def load_calibration(path: str | Path) -> Efficiency:
    """Efficiencies from a `docs/benchmarks/engine.json` ({"gpu", "rows": [{"batch", "hf_tok_s", "engine_tok_s"}], ...})."""
    from nlakit.io import read_json

    bench = read_json(path)
    if not isinstance(bench, dict):
        raise NlakitError(f"{path} is not a JSON object", "pass a docs/benchmarks/engine.json written by `nlakit bench`")
    return calibrate(bench, source=f"measured: {path}")
