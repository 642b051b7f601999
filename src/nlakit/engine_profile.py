"""Measurement tools for the engine benchmark (`nlakit.engine_bench`): timers, roofline ceilings, a kernel profile;
and `PhaseProfiler`, the kernel time per phase of one GRPO step (`rl.profile_step`).

The ceilings use assumed peak numbers of the GPU (`PEAKS`, vendor sheets); they are stated in the results JSON.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from nlakit import engine

# Assumed dense bf16 peak FLOP/s and HBM bandwidth (vendor sheets), used only for the ceiling estimate.
PEAKS = {"h100 pcie": (756e12, 2.0e12), "h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12), "a100": (312e12, 2.0e12)}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device) -> tuple[Any, float]:
    """`fn()` and its wall time in seconds, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def timed_runs(fn: Callable[[], Any], device, repeats: int) -> tuple[Any, float, list[float]]:
    """`fn()` run `repeats` times: the first run's output, the median wall time and every run's time (seconds).

    The median keeps a one-off stall (a lazy first use outside the warm-up) out of the figure; the list keeps it in the
    results, so it can still be seen."""
    runs = [timed(fn, device) for _ in range(max(1, repeats))]
    times = [dt for _, dt in runs]
    return runs[0][0], statistics.median(times), times


def gpu_name(device) -> str:
    """The CUDA device's name, or the CPU and its thread count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _peaks(gpu: str) -> tuple[float, float] | None:
    g = gpu.lower()
    for key, val in PEAKS.items():
        if all(part in g for part in key.split()):
            return val
    return None


def ceiling(eng: engine.Engine, gpu: str) -> dict | None:
    """Roofline of one decode step at the engine's batch: matmul time vs bytes moved (weights + KV read)."""
    peaks = _peaks(gpu)
    if peaks is None:
        return None
    flops_peak, bw = peaks
    a, B = eng.arch, eng.cfg.slots
    n_matmul = sum(p.numel() for layer in a.layers for p in layer.parameters() if p.ndim == 2)
    n_matmul += a.lm_head.weight.numel() if a.lm_head is not None else 0
    matmul_s = 2 * n_matmul * B / flops_peak
    bpe = torch.finfo(eng.dtype).bits // 8
    avg_ctx = eng.R0 + eng.cfg.max_new_tokens / 2  # mean own keys a row attends to (the prefix is shared)
    kv_bytes = 2 * len(a.layers) * B * avg_ctx * a.n_kv * a.head_dim * bpe
    kv_bytes_static = 2 * len(a.layers) * B * eng.L * a.n_kv * a.head_dim * bpe  # what a static-shape step reads
    weight_bytes = n_matmul * bpe
    mem_s = (kv_bytes + weight_bytes) / bw
    step_s = max(matmul_s, mem_s)
    static_step_s = max(matmul_s, (kv_bytes_static + weight_bytes) / bw)
    gen_share = eng.cfg.max_new_tokens / (eng.R0 - 1 + eng.cfg.max_new_tokens)  # steps that emit a generated token
    return {"assumed_peak_tflops": flops_peak / 1e12, "assumed_peak_tb_s": bw / 1e12, "batch": B,
            "matmul_ms_per_step": matmul_s * 1e3, "kv_read_ms_per_step": kv_bytes / bw * 1e3,
            "kv_read_full_cache_ms_per_step": kv_bytes_static / bw * 1e3, "weights_ms_per_step": weight_bytes / bw * 1e3,
            "tok_s": B / step_s, "bound": "matmul" if matmul_s >= mem_s else "memory",
            "tok_s_this_step_shape": B / static_step_s * gen_share, "generated_step_share": gen_share,
            "note": "tok_s: one step per token, reading only written KV; tok_s_this_step_shape: the engine's step "
                    "(reads the whole static per-row cache) times the share of steps that emit a generated token"}


def forward_ceiling(model: torch.nn.Module, layer: int, gpu: str) -> float | None:
    """Tokens/s if blocks 0..layer ran at peak FLOP/s (2 FLOPs per matmul weight per token; attention ignored)."""
    peaks = _peaks(gpu)
    if peaks is None:
        return None
    layers = engine.Arch(model).layers[: layer + 1]
    n = sum(p.numel() for lay in layers for p in lay.parameters() if p.ndim == 2)
    return peaks[0] / (2 * n)


def _profile(fn: Callable[[], None], device, n_steps: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n_steps):
            fn()
        _sync(device)
    return _kernel_rows(prof, n_steps)


def _kernel_rows(prof, n_steps: int) -> list[dict]:
    """Device kernels of a finished profile, per step: name, ms and calls, the longest first.

    A CPU-side op with device time under it (inductor names its Triton launches like the kernels they launch) would
    list that time a second time beside the kernel's own event: where the profile has device events, only those
    count (the forward profiles of the H200 run at 26b31e0 listed each Triton kernel twice)."""
    from torch.autograd import DeviceType

    events = list(prof.key_averages())
    on_device = [e for e in events if getattr(e, "device_type", None) not in (None, DeviceType.CPU)]
    rows = []
    for e in on_device or events:
        dev = getattr(e, "self_device_time_total", None)
        dev = getattr(e, "self_cuda_time_total", 0) if dev is None else dev
        name = e.key
        if dev > 0 and not name.startswith(("aten::", "cuda", "Torch-Compiled", "CompiledFunction", "## ", "Memcpy", "Memset")):
            rows.append({"name": name[:90], "ms_per_step": dev / 1e3 / n_steps, "calls_per_step": e.count / n_steps})
    return sorted(rows, key=lambda r: -r["ms_per_step"])


class PhaseProfiler:
    """Kernel time and kernel launches per phase of one step, one torch.profiler session a phase.

    `phase(name, fn)` runs `fn()` and returns its result; when not `enabled` it only calls it. A phase whose wall
    time (measured on an unprofiled step) is far above its kernel time is bound by launches and the host, not by the
    GPU. Kernels replayed from CUDA graphs may be invisible to the profiler (then the phase shows little device time)."""

    def __init__(self, device, enabled: bool = True, top: int = 8):
        self.device, self.enabled, self.top = device, enabled, top
        self.phases: dict[str, dict] = {}

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        if not self.enabled:
            return fn()
        from torch.profiler import ProfilerActivity, profile

        cuda = torch.device(self.device).type == "cuda"
        _sync(self.device)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            t0 = time.perf_counter()
            out = fn()
            _sync(self.device)
            wall = time.perf_counter() - t0
        rows = _kernel_rows(prof, 1)
        self.phases[name] = {"wall_ms_profiled": wall * 1e3, "device_ms": sum(r["ms_per_step"] for r in rows),
                             "kernels": sum(r["calls_per_step"] for r in rows), "groups_ms": _groups_ms(rows),
                             "top": rows[: self.top]}
        return out

    def result(self) -> dict:
        return {"device": gpu_name(self.device), "phases": self.phases,
                "note": "wall_ms_profiled includes the profiler's own overhead; compare device_ms with the phase's wall "
                        "time on unprofiled steps (the run's log)"}


def _group(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "cutlass", "sm90", "sm80", "cublas", "xmma", "nvjet", "s16816", "wgmma")):
        return "matmul (cuBLAS/CUTLASS)"
    if "flash" in n or "fmha" in n or "attention" in n:
        return "attention kernels"
    if "triton" in n:
        return "fused elementwise/reductions (Triton)"
    if any(k in n for k in ("index", "scatter", "gather")):
        return "indexing"
    return "other"


def _groups_ms(rows: list[dict]) -> dict[str, float]:
    """Kernel rows' ms per step summed by kind of kernel (`_group`), the largest first."""
    groups: dict[str, float] = {}
    for r in rows:
        groups[_group(r["name"])] = groups.get(_group(r["name"]), 0.0) + r["ms_per_step"]
    return {k: round(v, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def _kernel_summary(rows: list[dict], top: int) -> dict:
    """Kernel rows of a profile (`_kernel_rows`) summed: kernels and device ms per step, ms by kind, the top-N rows."""
    total = sum(r["ms_per_step"] for r in rows)
    return {"kernels": sum(r["calls_per_step"] for r in rows), "device_ms": total, "groups_ms": _groups_ms(rows),
            "top": [{**r, "share": r["ms_per_step"] / (total or 1.0)} for r in rows[:top]]}


def profile_step(eng: engine.Engine, n_steps: int = 10, top: int = 15) -> dict:
    """Device time per decode step by kernel (torch.profiler; over CUDA graph replays when the profiler sees
    their kernels, else over the same step launched op by op), grouped, plus the top-N kernels."""
    source = "cuda graph replays"
    rows = _profile(eng.advance, eng.device, n_steps)
    if not rows:  # kernels inside graphs are invisible to some profiler builds
        source = "step launched without the graph (same kernels, launch overhead not included)"
        rows = _profile(eng._step, eng.device, n_steps)
    k = _kernel_summary(rows, top)
    return {"source": source, "kernels_per_step": k["kernels"], "device_ms_per_step": k["device_ms"] or 1.0,
            "groups_ms": k["groups_ms"], "top": k["top"]}


def profile_forward(fn: Callable[[], None], device, n_tokens: int, top: int = 12) -> dict:
    """Kernel time of one call of `fn` (e.g. extraction over a set of rows), by kind of kernel, beside its unprofiled
    wall time: device time far below the wall time means the host (batching, padding, gathers) bounds it, not the GPU."""
    rows = _profile(fn, device, 1)  # (calls fn once before it profiles: a compile happens there)
    _, wall = timed(fn, device)
    k = _kernel_summary(rows, top)
    return {"tokens": n_tokens, "wall_ms": wall * 1e3, **k,
            "device_tok_s": n_tokens / (k["device_ms"] / 1e3) if k["device_ms"] else None}


def step_ms(eng: engine.Engine, n: int = 50) -> float:
    eng.advance()
    _, dt = timed(lambda: [eng.advance() for _ in range(n)], eng.device)
    return dt / n * 1e3
