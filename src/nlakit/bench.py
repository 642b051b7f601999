"""Throughput of AV generation (HF generate vs the engine), layer-L extraction and AR scoring, in one run.

    nlakit bench --target tiny:llama --batch-sizes 2,4 --max-new-tokens 8      # CPU smoke run
    nlakit bench --target smollm2 --device cuda --out docs/benchmarks/engine.json

For each batch size B the same N = B x n_batches activation vectors go through plain HF ``generate`` (default
cache, chunks of B), HF ``generate`` with ``cache_implementation="static"`` (compiled by transformers) and
`nlakit.engine` (B slots, refilled). Tokens/s counts generated tokens (EOS included) over wall time after a
warm-up; compile and graph-capture time is reported apart (``*_setup_s``). The greedy match rate is the share
of rows whose engine output equals HF's token for token. Extraction and AR scoring are timed on
pre-tokenised rows (tokenisation excluded), in the model's dtype, length-sorted, stopping at layer L.
The ceiling is a roofline estimate from assumed peak numbers of the GPU, stated in the JSON.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nlakit import engine
from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

# Assumed dense bf16 peak FLOP/s and HBM bandwidth (vendor sheets), used only for the ceiling estimate.
PEAKS = {"h100 pcie": (756e12, 2.0e12), "h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12), "a100": (312e12, 2.0e12)}

FALLBACK_TEXTS = [
    "The cat sat on the mat while the rain fell softly on the roof of the old house.",
    "In 1969 the first humans walked on the Moon, and millions watched the grainy pictures on television.",
    "def add(x, y):\n    return x + y  # a tiny function that adds two numbers",
    "She opened the letter slowly, afraid of what it might say about the job she had wanted for years.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves of plants.",
    "The stock market fell sharply on Monday after the central bank raised interest rates again.",
]


@dataclass(frozen=True)
class BenchConfig:
    """Everything `nlakit bench` measures. Token budgets are totals over all rows of a phase."""

    target: str = "tiny:llama"
    device: str = "auto"
    dtype: str = "auto"  # bfloat16 on CUDA, float32 on CPU
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    max_new_tokens: int = 64
    n_batches: int = 2  # rows per batch size = batch x n_batches
    layer: int | None = None  # default: two thirds of the depth
    hf: bool = True
    hf_static: bool = True
    sampling: bool = True  # also time the engine at temperature 1 (largest batch)
    extract_tokens: int = 2_000_000
    ar_tokens: int = 2_000_000
    hf_extract_tokens: int = 200_000  # for the HF-path extraction / AR baselines
    max_batch_tokens: int = 65536
    max_seq_len: int = 512
    corpus: str | None = None  # a .jsonl(.gz) with "text"; default: the shared corpus if present, else built-in text
    profile: bool = True
    compile: bool | None = None
    cuda_graph: bool | None = None
    sync_every: int = 16
    time_budget_s: float = 0.0  # 0 = no budget; else optional phases are skipped once it runs low
    seed: int = 0
    command: str = ""
    batch_sizes_order: str = "desc"  # run the largest batch first (the headline row)

    def __post_init__(self):
        problems = []
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            problems.append(("batch sizes must be positive integers", "pass e.g. --batch-sizes 64,256,1024"))
        if self.max_new_tokens < 1:
            problems.append((f"max_new_tokens={self.max_new_tokens}", "pass --max-new-tokens 1 or more"))
        if self.n_batches < 1:
            problems.append((f"n_batches={self.n_batches}", "pass --n-batches 1 or more"))
        if problems:
            raise NlakitError("; ".join(p for p, _ in problems), "; ".join(f for _, f in problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        d = dict(d)
        d["batch_sizes"] = tuple(d.get("batch_sizes", cls.batch_sizes))
        return cls(**d)


@dataclass
class _Clock:
    budget: float
    t0: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return math.inf if self.budget <= 0 else self.budget - (time.perf_counter() - self.t0)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def n_tokens(rows: list[list[int]]) -> int:
    """Generated tokens, EOS included (a row without the -1 cap marker ended with one)."""
    return sum(len(r) - 1 if r and r[-1] == -1 else len(r) + 1 for r in rows)


def hf_generate(verbalizer, vectors: torch.Tensor, *, max_new_tokens: int, batch_size: int,
                cache_implementation: str | None = None) -> list[list[int]]:
    """Greedy plain HF `generate` from injected embeddings (as `Verbalizer.generate_ids`, optionally a static cache)."""
    from nlakit.targets import pad_id

    if cache_implementation is None:
        return engine.generate_hf(verbalizer, vectors, max_new_tokens=max_new_tokens, batch_size=batch_size)
    rows: list[list[int]] = []
    for s in range(0, vectors.shape[0], batch_size):
        embeds = verbalizer.prompt_embeds(vectors[s : s + batch_size])
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = verbalizer.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, temperature=None, top_p=None, top_k=None,
                                        pad_token_id=pad_id(verbalizer.tokenizer), eos_token_id=verbalizer.eos,
                                        cache_implementation=cache_implementation)
        for r in out.tolist():
            cut = next((i for i, t in enumerate(r) if t in verbalizer.eos), None)
            rows.append(r[:cut] if cut is not None else r + [-1])
    return rows


def _texts(cfg: BenchConfig, n: int = 2000) -> tuple[list[str], str]:
    from nlakit.io import read_jsonl

    candidates = [cfg.corpus] if cfg.corpus else ["../shared/corpus/train.jsonl.gz", "shared/corpus/train.jsonl.gz",
                                                  "/work/shared/corpus/train.jsonl.gz"]
    for c in candidates:
        if c and Path(c).exists():
            rows = read_jsonl(c, limit=n)
            texts = [r["text"] for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
            if texts:
                return texts, str(c)
    if cfg.corpus:
        raise NlakitError(f"corpus {cfg.corpus} does not exist or holds no text", "pass a .jsonl(.gz) with a 'text' field")
    return list(FALLBACK_TEXTS), "built-in sentences"


def _gpu_name(device) -> str:
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
    return {"assumed_peak_tflops": flops_peak / 1e12, "assumed_peak_tb_s": bw / 1e12, "batch": B,
            "matmul_ms_per_step": matmul_s * 1e3, "kv_read_ms_per_step": kv_bytes / bw * 1e3,
            "kv_read_full_cache_ms_per_step": kv_bytes_static / bw * 1e3, "weights_ms_per_step": weight_bytes / bw * 1e3,
            "tok_s": B / step_s, "bound": "matmul" if matmul_s >= mem_s else "memory"}


def forward_ceiling(model: torch.nn.Module, layer: int, gpu: str) -> float | None:
    """Tokens/s if blocks 0..layer ran at peak FLOP/s (2 FLOPs per matmul weight per token; attention ignored)."""
    peaks = _peaks(gpu)
    if peaks is None:
        return None
    layers = engine.Arch(model).layers[: layer + 1]
    n = sum(p.numel() for lay in layers for p in lay.parameters() if p.ndim == 2)
    return peaks[0] / (2 * n)


def profile_step(eng: engine.Engine, n_steps: int = 10, top: int = 12) -> dict:
    """Device time per decode step by kernel (torch.profiler over graph replays), grouped and top-N."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if eng.device.type == "cuda" else [])
    eng.advance()
    _sync(eng.device)
    with profile(activities=acts) as prof:
        for _ in range(n_steps):
            eng.advance()
        _sync(eng.device)
    rows = []
    for e in prof.key_averages():
        dev = getattr(e, "self_device_time_total", None)
        if dev is None:
            dev = getattr(e, "self_cuda_time_total", 0)
        if eng.device.type != "cuda":
            dev = e.self_cpu_time_total
        if dev > 0:
            rows.append({"name": e.key[:90], "ms_per_step": dev / 1e3 / n_steps, "calls_per_step": e.count / n_steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    kernels = [r for r in rows if not r["name"].startswith(("aten::", "cuda", "Torch-Compiled", "CompiledFunction", "## "))]
    total = sum(r["ms_per_step"] for r in kernels) or 1.0

    def group(name: str) -> str:
        n = name.lower()
        if any(k in n for k in ("gemm", "cutlass", "sm90", "sm80", "cublas", "xmma", "nvjet")):
            return "matmul (cuBLAS)"
        if "triton" in n:
            return "fused elementwise/reduction (Triton)"
        if any(k in n for k in ("index", "scatter", "gather")):
            return "indexing"
        return "other"

    groups: dict[str, float] = {}
    for r in kernels:
        groups[group(r["name"])] = groups.get(group(r["name"]), 0.0) + r["ms_per_step"]
    return {"device_ms_per_step": total, "groups": {k: round(v, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top": [{**r, "share": r["ms_per_step"] / total} for r in kernels[:top]]}


def step_ms(eng: engine.Engine, n: int = 50) -> float:
    eng.advance()
    _, dt = _timed(lambda: [eng.advance() for _ in range(n)], eng.device)
    return dt / n * 1e3


def _vectors(target, texts: list[str], layer: int, n: int, seed: int, dtype) -> torch.Tensor:
    from nlakit.activations import extract

    docs, got = [], 0
    for d in extract(target, texts[: max(8, min(len(texts), 400))], layer, batch_size=16, dtype=dtype):
        docs.append(d.vectors)
        got += d.vectors.shape[0]
        if got >= n:
            break
    pool = torch.cat(docs)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, pool.shape[0], (n,), generator=g) if pool.shape[0] < n else torch.randperm(pool.shape[0], generator=g)[:n]
    return pool[idx]


def _cycle_rows(rows: list[list[int]], total_tokens: int) -> list[list[int]]:
    out, n, i = [], 0, 0
    rows = [r for r in rows if r]
    while n < total_tokens and rows:
        out.append(rows[i % len(rows)])
        n += len(out[-1])
        i += 1
    return out


def run(cfg: BenchConfig, *, out_path: str | Path | None = None,
        progress: Callable[[str, int, int | None], None] | None = None) -> dict:
    """Run the benchmark and return the results dict (also written to `out_path` after every phase).

    Returns:
        ``{"command", "gpu", "rows": [{"batch", "hf_tok_s", "hf_static_tok_s", "engine_tok_s", "ratio",
        "greedy_match_rate", ...}], "extract_tok_s", "ar_tok_s", "ceiling", "profile", ...}``.
    """
    from nlakit.io import write_json
    from nlakit.reconstructor import Reconstructor
    from nlakit.targets import load_target, resolve_device
    from nlakit.verbalizer import Verbalizer, new_meta_for

    clock = _Clock(cfg.time_budget_s)
    device = resolve_device(cfg.device)
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    say = progress or (lambda stage, done, total: None)
    target = load_target(cfg.target, device=device, dtype=dtype)
    layer = target.check_layer(cfg.layer if cfg.layer is not None else (2 * target.n_layers) // 3)
    texts, text_source = _texts(cfg)
    gpu = _gpu_name(device)
    c = target.config
    is_smol = (c.hidden_size, c.num_hidden_layers, c.vocab_size) == (576, 30, 49152)
    res: dict[str, Any] = {
        "command": cfg.command or "nlakit bench", "gpu": gpu, "model": "smollm2-135m" if is_smol else target.name,
        "target": target.name, "dtype": dtype, "layer": layer, "new_tokens": cfg.max_new_tokens,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__, "text_source": text_source,
        "rows": [], "extract_tok_s": None, "ar_tok_s": None, "config": cfg.to_dict(), "skipped": [],
    }

    def save():
        if out_path is not None:
            res["rows"].sort(key=lambda r: r["batch"])
            write_json(out_path, res)

    # ---- the AV: the target itself, prompted with the default template (speed does not need a trained AV) ----
    n_max = max(cfg.batch_sizes) * cfg.n_batches
    vecs = _vectors(target, texts, layer, n_max, cfg.seed, torch.bfloat16 if device.startswith("cuda") else None)
    scale = float(vecs.norm(dim=-1).median())
    meta = new_meta_for(target.tokenizer, d_model=target.d_model, layer=layer, injection_scale=scale, base_checkpoint=target.spec)
    av = Verbalizer(target.model, target.tokenizer, meta)
    res.update(prompt_len=len(av.prompt_ids), shared_prefix_len=av.slot, injection_scale=scale)
    explanations: list[list[int]] = []
    order = sorted(cfg.batch_sizes, reverse=cfg.batch_sizes_order == "desc")
    last_eng = None
    for k, B in enumerate(order):
        say("generation", k, len(order))
        N = B * cfg.n_batches
        v = vecs[:N]
        row: dict[str, Any] = {"batch": B, "n_rows": N}
        hf_rows = None
        if cfg.hf:
            hf_generate(av, v[:2], max_new_tokens=2, batch_size=2)  # warm-up
            hf_rows, dt = _timed(lambda: hf_generate(av, v, max_new_tokens=cfg.max_new_tokens, batch_size=B), device)
            row.update(hf_tok_s=n_tokens(hf_rows) / dt, hf_expl_s=N / dt, hf_s=dt)
        eng = engine.Engine(av, engine.EngineConfig(slots=B, max_new_tokens=cfg.max_new_tokens, compile=cfg.compile,
                                                    cuda_graph=cfg.cuda_graph, sync_every=cfg.sync_every))
        eng.warmup()
        eng.run(v[: min(N, B)])  # warm run: allocator, first replays
        eng_rows, dt = _timed(lambda: eng.run(v), device)
        row.update(engine_tok_s=n_tokens(eng_rows) / dt, engine_expl_s=N / dt, engine_s=dt, engine_mode=eng.mode,
                   engine_setup_s=eng.setup_s, engine_step_ms=step_ms(eng), mean_new_tokens=n_tokens(eng_rows) / N)
        if hf_rows is not None:
            row["ratio"] = row["engine_tok_s"] / row["hf_tok_s"]
            row["greedy_match_rate"] = sum(a == b for a, b in zip(eng_rows, hf_rows)) / N
            row["first_token_match_rate"] = sum(a[:1] == b[:1] for a, b in zip(eng_rows, hf_rows)) / N
        explanations = explanations or eng_rows
        if cfg.hf_static and device.startswith("cuda") and clock.left() > 120:
            try:
                _, setup = _timed(lambda: hf_generate(av, v[:B], max_new_tokens=cfg.max_new_tokens, batch_size=B,
                                                      cache_implementation="static"), device)
                st_rows, dt = _timed(lambda: hf_generate(av, v, max_new_tokens=cfg.max_new_tokens, batch_size=B,
                                                         cache_implementation="static"), device)
                row.update(hf_static_tok_s=n_tokens(st_rows) / dt, hf_static_expl_s=N / dt, hf_static_setup_s=setup,
                           ratio_static=row["engine_tok_s"] / (n_tokens(st_rows) / dt))
            except Exception as e:  # noqa: BLE001 - report, keep benchmarking
                log.warning("HF static-cache generate failed at batch %d: %s: %s", B, type(e).__name__, e)
                row["hf_static_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        elif cfg.hf_static:
            res["skipped"].append(f"hf_static at batch {B} ({'not on CUDA' if not device.startswith('cuda') else 'time budget'})")
        if B == max(cfg.batch_sizes):
            res["ceiling"] = ceiling(eng, gpu)
            if cfg.profile and device.startswith("cuda"):
                try:
                    res["profile"] = profile_step(eng)
                except Exception as e:  # noqa: BLE001
                    log.warning("profiling failed: %s: %s", type(e).__name__, e)
            last_eng = eng
        res["rows"].append(row)
        save()
        del eng
    say("generation", len(order), len(order))

    if cfg.sampling and clock.left() > 60 and last_eng is not None:
        B = last_eng.cfg.slots
        eng = engine.Engine(av, engine.EngineConfig(slots=B, max_new_tokens=cfg.max_new_tokens, sampling=True,
                                                    compile=cfg.compile, cuda_graph=cfg.cuda_graph, sync_every=cfg.sync_every))
        v = vecs[: B * cfg.n_batches]
        eng.run(v[:B], temperature=1.0, seed=cfg.seed)
        rows, dt = _timed(lambda: eng.run(v, temperature=1.0, seed=cfg.seed), device)
        again = eng.run(v[:B], temperature=1.0, seed=cfg.seed)
        res["sampling"] = {"batch": B, "temperature": 1.0, "engine_tok_s": n_tokens(rows) / dt,
                           "reproducible": again == rows[:B], "setup_s": eng.setup_s}
        del eng
        save()
    del last_eng

    # ---- extraction: blocks 0..layer on length-sorted batches ----
    say("extraction", 0, 1)
    tok = target.tokenizer
    base_rows = [r[: cfg.max_seq_len] for r in tok(texts, add_special_tokens=True)["input_ids"]]
    rows = _cycle_rows(base_rows, cfg.extract_tokens)
    n = sum(map(len, rows))
    res["extract_seq_len"] = n / max(1, len(rows))
    _consume(engine.hidden_batches(target.model, rows[: max(1, len(rows) // 20)], layer, max_batch_tokens=cfg.max_batch_tokens))
    _, dt = _timed(lambda: _consume(engine.hidden_batches(target.model, rows, layer, max_batch_tokens=cfg.max_batch_tokens)), device)
    res.update(extract_tok_s=n / dt, extract_tokens=n, extract_ceiling_tok_s=forward_ceiling(target.model, layer, gpu))
    if clock.left() > 60:
        from nlakit.activations import extract

        sub = texts[: max(2, int(len(texts) * min(1.0, cfg.hf_extract_tokens / max(1, sum(map(len, base_rows))))))]
        n_sub = sum(len(r) for r in base_rows[: len(sub)])
        _, dt = _timed(lambda: extract(target, sub, layer, batch_size=16, max_length=cfg.max_seq_len), device)
        res["extract_hf_tok_s"] = n_sub / dt  # activations.extract: HF forward + per-text CPU copies, batch 16
    save()

    # ---- AR scoring: the truncated target + value head over AR prompts of generated explanations ----
    say("ar scoring", 0, 1)
    ar = Reconstructor.from_target(target, meta)
    texts_ar = [t for t in (e.text for e in av.decode(explanations)) if t.strip()] or texts
    ar_base = engine.ar_rows(ar, texts_ar)
    rows = _cycle_rows([r[-cfg.max_seq_len :] for r in ar_base], cfg.ar_tokens)
    n = sum(map(len, rows))
    engine.ar_score_rows(ar, rows[: max(1, len(rows) // 20)], max_batch_tokens=cfg.max_batch_tokens)
    _, dt = _timed(lambda: engine.ar_score_rows(ar, rows, max_batch_tokens=cfg.max_batch_tokens), device)
    res.update(ar_tok_s=n / dt, ar_tokens=n, ar_seq_len=n / max(1, len(rows)))
    if clock.left() > 30:
        sub = texts_ar * max(1, (cfg.hf_extract_tokens // max(1, sum(map(len, ar_base)))))
        n_sub = sum(len(r) for r in ar_base) * max(1, (cfg.hf_extract_tokens // max(1, sum(map(len, ar_base)))))
        _, dt = _timed(lambda: ar.reconstruct(sub, batch_size=64), device)
        res["ar_hf_tok_s"] = n_sub / dt  # Reconstructor.reconstruct: padded + masked HF forward, batch 64
    say("ar scoring", 1, 1)
    res["elapsed_s"] = time.perf_counter() - clock.t0
    save()
    return res


def _consume(batches) -> None:
    """Run every batch and gather its real-token vectors (what extraction keeps), on the device."""
    for _, h, lengths in batches:
        mask = torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]
        h[mask]
