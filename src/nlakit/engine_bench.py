"""Throughput of AV generation (HF generate vs the engine), layer-L extraction and AR scoring, in one run.

    nlakit bench --target tiny:llama --batch-sizes 2,4 --max-new-tokens 8      # CPU smoke run
    nlakit bench --target smollm2 --device cuda --out docs/benchmarks/engine.json

For each batch size B the same N = B x n_batches activation vectors go through plain HF ``generate`` (default
cache, chunks of B), HF ``generate`` with ``cache_implementation="static"`` (compiled by transformers) and
`nlakit.engine` (B slots, refilled). Tokens/s counts generated tokens (EOS included) over wall time after a
warm-up, the median of ``repeats`` timed runs (every run's time is kept, ``*_s_runs``); compile and graph-capture
time is reported apart (``*_setup_s``). The greedy match rate is the share
of rows whose engine output equals HF's token for token. Extraction and AR scoring are timed on
pre-tokenised rows (tokenisation excluded), in the model's dtype, length-sorted, stopping at layer L.
The ceiling is a roofline estimate from assumed peak numbers of the GPU, stated in the JSON (`nlakit.engine_profile`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nlakit import engine
from nlakit.engine_profile import (ceiling, forward_ceiling, gpu_name, profile_forward, profile_step, step_ms, timed,
                                   timed_runs)
from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

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
    ablations: bool = True  # largest batch, CUDA: prefix GEMM dtype, matmul/flex attention, no fusion/graph/compile
    compile: bool | None = None
    cuda_graph: bool | None = None
    sync_every: int = 16
    attention: str = "auto"  # the engine's attention for the main rows and sampling (EngineConfig.attention)
    time_budget_s: float = 0.0  # 0 = no budget; else optional phases are skipped once it runs low
    repeats: int = 3  # every timing is the median of this many runs (each run's seconds kept in the JSON)
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
        if self.repeats < 1:
            problems.append((f"repeats={self.repeats}", "pass --repeats 1 or more"))
        if self.attention not in engine.ATTENTIONS:
            problems.append((f"attention={self.attention!r}", f"pass --attention one of {', '.join(engine.ATTENTIONS)}"))
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
    """Corpus texts (cut to ~4 characters per allowed token), or synthetic documents of 1-30 sentences."""
    import random

    from nlakit.io import read_jsonl

    candidates = [cfg.corpus] if cfg.corpus else ["../shared/corpus/train.jsonl.gz", "shared/corpus/train.jsonl.gz",
                                                  "/work/shared/corpus/train.jsonl.gz"]
    for c in candidates:
        if c and Path(c).exists():
            rows = read_jsonl(c, limit=n)
            texts = [r["text"][: 4 * cfg.max_seq_len] for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
            if texts:
                return texts, str(c)
    if cfg.corpus:
        raise NlakitError(f"corpus {cfg.corpus} does not exist or holds no text", "pass a .jsonl(.gz) with a 'text' field")
    rng = random.Random(cfg.seed)
    docs = [" ".join(rng.choice(FALLBACK_TEXTS) for _ in range(rng.randint(1, 30))) for _ in range(n // 4)]
    return docs, "synthetic documents (built-in sentences; pass --corpus for real text)"


def _vectors(target, texts: list[str], layer: int, n: int, seed: int, dtype, max_len: int) -> torch.Tensor:
    """n activation vectors (sinks excluded) from as few texts as needed, drawn with a seeded permutation."""
    from nlakit.activations import extract

    chosen, chars = [], 0
    for t in texts:  # ~4 characters a token: stop once the texts hold about 2n tokens
        chosen.append(t)
        chars += min(len(t), 4 * max_len)
        if chars >= 8 * n:
            break
    pool = torch.cat([d.vectors for d in extract(target, chosen, layer, batch_size=16, dtype=dtype, max_length=max_len)])
    g = torch.Generator().manual_seed(seed)
    if pool.shape[0] < n:
        return pool[torch.randint(0, pool.shape[0], (n,), generator=g)]
    idx = torch.randperm(pool.shape[0], generator=g)[:n]
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
    gpu = gpu_name(device)
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
    vecs = _vectors(target, texts, layer, n_max, cfg.seed, None, cfg.max_seq_len)
    scale = float(vecs.norm(dim=-1).median())
    meta = new_meta_for(target.tokenizer, d_model=target.d_model, layer=layer, injection_scale=scale, base_checkpoint=target.spec)
    av = Verbalizer(target.model, target.tokenizer, meta)
    res.update(prompt_len=len(av.prompt_ids), shared_prefix_len=av.slot, injection_scale=scale)
    explanations: list[list[int]] = []
    order = sorted(cfg.batch_sizes, reverse=cfg.batch_sizes_order == "desc")
    on_cuda = device.startswith("cuda")

    def make_engine(B: int, **over) -> engine.Engine:
        kw = dict(slots=B, max_new_tokens=cfg.max_new_tokens, compile=cfg.compile, cuda_graph=cfg.cuda_graph,
                  sync_every=cfg.sync_every, attention=cfg.attention)
        kw.update(over)
        eng = engine.Engine(av, engine.EngineConfig(**kw))
        eng.warmup()
        return eng

    for k, B in enumerate(order):
        say("generation", k, len(order))
        N = B * cfg.n_batches
        v = vecs[:N]
        row: dict[str, Any] = {"batch": B, "n_rows": N}
        hf_rows = None
        if cfg.hf:
            hf_generate(av, v[:2], max_new_tokens=2, batch_size=2)  # warm-up
            hf_rows, dt, runs = timed_runs(lambda: hf_generate(av, v, max_new_tokens=cfg.max_new_tokens, batch_size=B),
                                           device, cfg.repeats)
            row.update(hf_tok_s=n_tokens(hf_rows) / dt, hf_expl_s=N / dt, hf_s=dt, hf_s_runs=runs)
        eng = make_engine(B)
        eng.run(v[: min(N, B)])  # warm run: allocator, first replays
        eng_rows, dt, runs = timed_runs(lambda: eng.run(v), device, cfg.repeats)
        steps, sizes = eng.last_steps, eng.last_sizes
        res["engine_attention"] = eng._attn
        if eng._attn == "triton":  # the launch settings the kernel ran with
            from nlakit import kernels

            res["kernel_tuning"] = dict(kernels.TUNING)
        row.update(engine_tok_s=n_tokens(eng_rows) / dt, engine_expl_s=N / dt, engine_s=dt, engine_s_runs=runs,
                   engine_mode=eng.mode, engine_fused=eng.fused is not None, engine_setup_s=eng.setup_s,
                   engine_step_ms=step_ms(eng), engine_steps=steps, engine_sizes=sizes, mean_new_tokens=n_tokens(eng_rows) / N)
        # the run's time beyond its decode steps at the full step's time (host checks, queue writes, copies out); negative
        # when the tail's smaller steps save more than that
        row["engine_outside_steps_ms"] = dt * 1e3 - steps * row["engine_step_ms"]
        if hf_rows is not None:
            row["ratio"] = row["engine_tok_s"] / row["hf_tok_s"]
            row["greedy_match_rate"] = sum(a == b for a, b in zip(eng_rows, hf_rows)) / N
            row["first_token_match_rate"] = sum(a[:1] == b[:1] for a, b in zip(eng_rows, hf_rows)) / N
            row["mean_common_prefix"] = sum(_common_prefix(a, b) for a, b in zip(eng_rows, hf_rows)) / N
        explanations = explanations or eng_rows
        if cfg.hf_static and on_cuda and clock.left() > 120:
            try:
                _, setup = timed(lambda: hf_generate(av, v[:B], max_new_tokens=cfg.max_new_tokens, batch_size=B,
                                                      cache_implementation="static"), device)
                st_rows, dt, runs = timed_runs(lambda: hf_generate(av, v, max_new_tokens=cfg.max_new_tokens, batch_size=B,
                                                                    cache_implementation="static"), device, cfg.repeats)
                row.update(hf_static_tok_s=n_tokens(st_rows) / dt, hf_static_expl_s=N / dt, hf_static_setup_s=setup,
                           hf_static_s_runs=runs,
                           ratio_static=row["engine_tok_s"] / (n_tokens(st_rows) / dt),
                           static_greedy_match_rate=sum(a == b for a, b in zip(st_rows, hf_rows or st_rows)) / N)
            except Exception as e:  # noqa: BLE001 - report, keep benchmarking
                log.warning("HF static-cache generate failed at batch %d: %s: %s", B, type(e).__name__, e)
                row["hf_static_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        elif cfg.hf_static:
            res["skipped"].append(f"hf_static at batch {B} ({'not on CUDA' if not on_cuda else 'time budget'})")
        if B == max(cfg.batch_sizes):
            res["ceiling"] = ceiling(eng, gpu)
            if cfg.profile and on_cuda:
                try:
                    res["profile"] = profile_step(eng)
                except Exception as e:  # noqa: BLE001
                    log.warning("profiling failed: %s: %s", type(e).__name__, e)
        res["rows"].append(row)
        save()
        del eng
    say("generation", len(order), len(order))

    # ---- required numbers first (extraction and AR at the eager path), optional extras after, budget permitting ----
    say("extraction / AR", 0, 2)
    fwd = _Forwards(cfg, target, layer, texts, device)
    res.update(fwd.extraction(compile_=False))
    ar = Reconstructor.from_target(target, meta)
    texts_ar = [t for t in (e.text for e in av.decode(explanations)) if t.strip()] or texts
    rows_ar = fwd.ar_rows(ar, texts_ar)
    res.update(fwd.ar(ar, rows_ar, compile_=False))
    res["extract_tok_s"], res["ar_tok_s"] = res["extract_eager_tok_s"], res["ar_eager_tok_s"]
    save()
    say("extraction / AR", 1, 2)
    for name, fn, need in (("compiled extraction", lambda: fwd.extraction(compile_=True), 120),
                           ("compiled AR scoring", lambda: fwd.ar(ar, rows_ar, compile_=True), 90)):
        if not (on_cuda and cfg.compile is not False):
            continue
        if clock.left() < need:
            res["skipped"].append(f"{name} (time budget)")
            continue
        try:
            res.update(fn())
        except Exception as e:  # noqa: BLE001
            log.warning("%s failed: %s: %s", name, type(e).__name__, e)
            res[name.replace(" ", "_") + "_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    if cfg.profile and on_cuda and clock.left() > 60:  # where the forwards' time goes, on a tenth of their rows
        c = cfg.compile is not False
        for name, fn in (("extract", lambda: fwd.profile_extraction(c)), ("ar", lambda: fwd.profile_ar(ar, rows_ar, c))):
            try:
                res[f"{name}_profile"] = fn()
            except Exception as e:  # noqa: BLE001
                log.warning("profiling %s failed: %s: %s", name, type(e).__name__, e)
    res["extract_tok_s"] = max(res["extract_eager_tok_s"], res.get("extract_compiled_tok_s") or 0)
    res["ar_tok_s"] = max(res["ar_eager_tok_s"], res.get("ar_compiled_tok_s") or 0)
    if clock.left() > 60:
        res.update(fwd.hf_baselines(ar, texts_ar))
    say("extraction / AR", 2, 2)
    save()

    # ---- what each engine ingredient buys, at the largest batch (CUDA only: on CPU they are all the same path) ----
    B = max(cfg.batch_sizes)
    v = vecs[: B * cfg.n_batches]
    main_attention = res.get("engine_attention", cfg.attention)  # what the main rows' engine ran ("auto" resolved)
    attentions = {"reduce": ("attention as fused fp32 reductions (attention=reduce)", dict(attention="reduce")),
                  "matmul": ("attention as batched cuBLAS matmuls (first H100 run)", dict(attention="matmul")),
                  "triton": ("attention as one Triton kernel a layer (attention=triton)", dict(attention="triton"))}
    # FlexAttention is left out: 221 ms a step on an H200 (docs/BENCHMARKS.md §2); time it with --attention flex
    variants = [row for name, row in attentions.items() if name != main_attention]
    if main_attention == "reduce":
        variants.insert(0, ("shared-prefix GEMMs in the model dtype (prefix_gemm=model)", dict(prefix_gemm="model")))
    if main_attention in ("flex", "triton"):  # a symbolic batch is the default: does it cost these kernels speed?
        variants.append(("compiled for this batch size only (dynamic_batch=False)", dict(dynamic_batch=False)))
    variants += [("no tail shrink (every step runs all slots)", dict(tail_shrink=False)),
                 ("no weight fusion", dict(fuse=False)),
                 ("no CUDA graph (compiled step launched op by op)", dict(cuda_graph=False)),
                 ("no torch.compile (eager step in a CUDA graph)", dict(compile=False))]
    res["ablations"] = []
    for name, over in variants if (on_cuda and cfg.ablations) else []:
        if clock.left() < 90:
            res["skipped"].append(f"ablation {name!r} (time budget)")
            continue
        try:
            eng = make_engine(B, **over)
            eng.run(v[:B])
            rows_, dt, runs = timed_runs(lambda: eng.run(v), device, cfg.repeats)
            res["ablations"].append({"name": name, "batch": B, "engine_tok_s": n_tokens(rows_) / dt, "mode": eng.mode,
                                     "fused": eng.fused is not None, "setup_s": eng.setup_s, "step_ms": step_ms(eng),
                                     "s_runs": runs, "steps": eng.last_steps})
            del eng
        except Exception as e:  # noqa: BLE001
            res["ablations"].append({"name": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        save()

    # ---- sampling at T = 1 at every slot count (largest first): compiled or not, reproducible per seed, and the
    # share of rows that read as at the largest slot count (the same seed; bf16 rounding can differ with the batch) ----
    res["sampling_rows"] = []
    largest: list[list[int]] | None = None
    for Bs in sorted(cfg.batch_sizes, reverse=True) if cfg.sampling else []:
        if clock.left() < 60:
            res["skipped"].append(f"sampling at batch {Bs} (time budget)")
            continue
        vs = vecs[: Bs * cfg.n_batches]
        eng = make_engine(Bs, sampling=True)
        eng.run(vs[:Bs], temperature=1.0, seed=cfg.seed)
        rows_, dt, runs = timed_runs(lambda: eng.run(vs, temperature=1.0, seed=cfg.seed), device, cfg.repeats)
        again = eng.run(vs[:Bs], temperature=1.0, seed=cfg.seed)
        srow = {"batch": Bs, "temperature": 1.0, "engine_tok_s": n_tokens(rows_) / dt, "s_runs": runs,
                "reproducible": again == rows_[:Bs], "setup_s": eng.setup_s, "mode": eng.mode}
        if largest is None:
            largest = rows_
        else:
            srow["same_as_largest_batch_rate"] = sum(a == b for a, b in zip(rows_, largest)) / len(rows_)
        res["sampling_rows"].append(srow)
        res["sampling"] = res["sampling_rows"][0]  # the largest batch (the key earlier results have)
        del eng
        save()
    res["elapsed_s"] = time.perf_counter() - clock.t0
    save()
    return res


def sampling_rows(res: dict) -> list[dict]:
    """The sampling rows of a benchmark result, largest batch first (results before `sampling_rows` have one row)."""
    return res.get("sampling_rows") or ([res["sampling"]] if res.get("sampling") else [])


class _Forwards:
    """Extraction and AR-scoring throughput on pre-tokenised rows (tokenisation excluded)."""

    def __init__(self, cfg: BenchConfig, target, layer: int, texts: list[str], device: str):
        self.cfg, self.target, self.layer, self.texts, self.device = cfg, target, layer, texts, device
        self.base_rows = [r[: cfg.max_seq_len] for r in target.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        self.rows = _cycle_rows(self.base_rows, cfg.extract_tokens)
        self.n = sum(map(len, self.rows))

    def _extract(self, rows: list[list[int]], compile_: bool) -> None:
        _consume(engine.hidden_batches(self.target.model, rows, self.layer, max_batch_tokens=self.cfg.max_batch_tokens,
                                       compile=compile_))

    def _score(self, ar, rows: list[list[int]], compile_: bool) -> None:
        engine.ar_score_rows(ar, rows, max_batch_tokens=self.cfg.max_batch_tokens, compile=compile_)

    def extraction(self, compile_: bool) -> dict:
        self._extract(_tenth(self.rows), compile_)  # warm-up (and compile) on the longest rows
        _, dt, runs = timed_runs(lambda: self._extract(self.rows, compile_), self.device, self.cfg.repeats)
        kind = "compiled" if compile_ else "eager"
        return {f"extract_{kind}_tok_s": self.n / dt, f"extract_{kind}_s_runs": runs, "extract_tokens": self.n,
                "extract_seq_len": self.n / max(1, len(self.rows)),
                "extract_ceiling_tok_s": forward_ceiling(self.target.model, self.layer, gpu_name(self.device))}

    def ar_rows(self, ar, texts_ar: list[str]) -> list[list[int]]:
        """AR prompt rows of the explanations (their last max_seq_len tokens), cycled to cfg.ar_tokens."""
        return _cycle_rows([r[-self.cfg.max_seq_len :] for r in engine.ar_rows(ar, texts_ar)], self.cfg.ar_tokens)

    def ar(self, ar, rows: list[list[int]], compile_: bool) -> dict:
        """AR-scoring throughput over `rows` (from `ar_rows`)."""
        n = sum(map(len, rows))
        self._score(ar, _tenth(rows), compile_)  # warm-up (and compile)
        _, dt, runs = timed_runs(lambda: self._score(ar, rows, compile_), self.device, self.cfg.repeats)
        kind = "compiled" if compile_ else "eager"
        return {f"ar_{kind}_tok_s": n / dt, f"ar_{kind}_s_runs": runs, "ar_tokens": n, "ar_seq_len": n / max(1, len(rows))}

    def profile_extraction(self, compile_: bool) -> dict:
        rows = _tenth(self.rows)
        return profile_forward(lambda: self._extract(rows, compile_), self.device, sum(map(len, rows)))

    def profile_ar(self, ar, rows: list[list[int]], compile_: bool) -> dict:
        rows = _tenth(rows)
        return profile_forward(lambda: self._score(ar, rows, compile_), self.device, sum(map(len, rows)))

    def hf_baselines(self, ar, texts_ar: list[str]) -> dict:
        """The pre-engine paths on a subset: `activations.extract` (batch 16) and `Reconstructor.reconstruct` (batch 64)."""
        from nlakit.activations import extract

        n_sub, sub = 0, []
        for t, r in zip(self.texts, self.base_rows):
            if n_sub >= self.cfg.hf_extract_tokens:
                break
            sub.append(t)
            n_sub += len(r)
        _, dt, runs = timed_runs(lambda: extract(self.target, sub, self.layer, batch_size=16,
                                                 max_length=self.cfg.max_seq_len), self.device, self.cfg.repeats)
        out = {"extract_hf_tok_s": n_sub / dt, "extract_hf_s_runs": runs}
        ar_tokens = sum(len(r) for r in engine.ar_rows(ar, texts_ar))
        reps = max(1, self.cfg.hf_extract_tokens // max(1, ar_tokens))
        _, dt, out["ar_hf_s_runs"] = timed_runs(lambda: ar.reconstruct(texts_ar * reps, batch_size=64), self.device,
                                                self.cfg.repeats)
        out["ar_hf_tok_s"] = ar_tokens * reps / dt
        return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Generated tokens two rows share from the start (the -1 cap marker is not a token)."""
    a, b = [t for t in a if t >= 0], [t for t in b if t >= 0]
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _tenth(rows: list) -> list:
    """The first tenth of the rows (at least one): the subset that warms up (compiles) and is profiled."""
    return rows[: max(1, len(rows) // 10)]


def _consume(batches) -> None:
    """Run every batch and gather its real-token vectors (what extraction keeps), on the device."""
    for _, h, lengths in batches:
        mask = torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]
        h[mask]
