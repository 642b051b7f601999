"""Fast AV generation: batched decoding from injected activations, greedy or seeded sampling.

    nlakit bench --target tiny:llama      # HF generate vs this engine on the same inputs, in one run

Every AV prompt is the same except the injected slot, so the engine
1. runs the prompt prefix *before* the slot once and keeps its K/V (``(KV, S, hd)`` per layer), shared by all rows;
2. feeds the rest of the prompt (slot onwards, ``R0`` tokens) and then the generated tokens one decode step at a
   time, every row at its own position, into a preallocated per-row KV cache ``(B, KV, R0 + max_new, hd)``;
3. keeps the pending rows in a device queue: the step itself copies an ended row's tokens out and admits the next
   row into the freed slot, so finished rows never idle and the host only checks every ``sync_every`` steps;
   once the queue is empty and at most half the slots still hold a row, it moves those rows to the front slots and
   runs the step on half as many (halving again as rows end, down to ``tail_min_slots``);
4. on CUDA concatenates q/k/v and gate/up weights, compiles the step with ``torch.compile`` (one block compiled
   once, reused by every layer) and replays it as one CUDA graph; on CPU it runs the same step eagerly, and
   greedy output is token-identical to plain HF ``generate`` (tests).

The block math lives in `nlakit.blocks` and calls the HF model's own submodules, so LoRA-wrapped projections work.
Sampling draws counter-based uniforms per (seed, row, token index, vocabulary entry) and takes the Gumbel-max of
``logits / T``: the same seed gives the same text whatever the batch size or refill order.
Architectures outside `SUPPORTED` fall back to plain HF ``generate`` (``engine="hf"``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from nlakit.blocks import (SUPPORTED, Arch, FusedWeights, ar_rows, ar_score_rows, causal_block, decode_layer,  # noqa: F401
                           extract_rows, hidden_batches, sorted_batches, supports, unwrap)
from nlakit.errors import NlakitError
from nlakit.sampling import row_key, sample, uniform  # noqa: F401  (re-exported: engine.sample etc.)

log = logging.getLogger(__name__)

ENGINES = ("auto", "fast", "hf")
ATTENTIONS = ("auto", "reduce", "matmul", "flex", "triton")

# ---- the engine ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineConfig:
    """How an `Engine` runs. `None` for compile / cuda_graph means: on when the model is on CUDA."""

    slots: int = 256  # rows decoded together (the batch)
    max_new_tokens: int = 150
    sampling: bool = False  # the step samples (temperature > 0) instead of taking the argmax
    compile: bool | None = None
    cuda_graph: bool | None = None
    fuse: bool | None = None  # concatenate q/k/v and gate/up weights (plain Linear only); None = on for CUDA
    sync_every: int = 16  # CUDA: decode steps between host checks for "all rows done" (each check is one sync);
    #                       every 2 steps once the last rows hold their slots
    queue: int = 0  # rows queued on the device per pass; 0 = max(16 x slots, 4096). Longer inputs run in passes
    dynamic_batch: bool = True  # compile with a symbolic batch size, so engines of other sizes reuse the kernels
    attention: str = "auto"  # "reduce" (fused fp32 reductions), "matmul", "flex" (FlexAttention), "triton" (one
    #                          Triton kernel a layer, nlakit.kernels), or auto: triton on CUDA, else reduce when
    #                          compiled and matmul eager
    prefix_gemm: str = "float32"  # reduce path: the shared-prefix GEMMs in "float32" or in the "model" dtype (bf16)
    tail_shrink: bool = True  # queue empty and <= half the slots live: move those rows to the front, step half the
    #                           slots (one more CUDA graph per size; off when compiled with dynamic_batch=False)
    tail_min_slots: int = 64  # the smallest step the tail shrinks to

    def __post_init__(self):
        if self.slots < 1:
            raise NlakitError(f"batch size {self.slots} is not positive", "pass a batch size of at least 1")
        if self.max_new_tokens < 1:
            raise NlakitError(f"max_new_tokens={self.max_new_tokens} generates nothing", "pass max_new_tokens >= 1")
        if self.sync_every < 1:
            raise NlakitError(f"sync_every={self.sync_every} is not positive", "pass sync_every >= 1")
        if self.tail_min_slots < 1:
            raise NlakitError(f"tail_min_slots={self.tail_min_slots} is not positive", "pass tail_min_slots >= 1")
        if self.queue < 0:
            raise NlakitError(f"queue={self.queue} is negative", "pass queue >= 0 (0 = automatic)")
        if self.attention not in ATTENTIONS:
            raise NlakitError(f"attention={self.attention!r} is not one of {', '.join(ATTENTIONS)}",
                              "pass one of those")
        if self.prefix_gemm not in ("float32", "model"):
            raise NlakitError(f"prefix_gemm={self.prefix_gemm!r} is not float32 or model", "pass one of those")

    @property
    def capacity(self) -> int:
        return self.queue or max(16 * self.slots, 4096)


class Engine:
    """Batched AV decoding for one Verbalizer: shared prefix KV, static per-row KV, on-device refill, compiled step.

    The pending rows wait in a device queue; when a row ends (EOS or the cap) the step itself copies its tokens
    out and admits the next queued row into the freed slot, so the host only checks every `sync_every` steps
    whether all rows are done. Build once, call `run` many times: weights updated in place (training) are
    picked up, since the prefix K/V is recomputed on every run and the step reads the live parameters.
    """

    def __init__(self, verbalizer, cfg: EngineConfig):
        self.v, self.cfg = verbalizer, cfg
        self.arch = a = Arch(verbalizer.model)
        p = next(verbalizer.model.parameters())
        self.device, self.dtype = dev, _ = p.device, p.dtype
        is_cuda = self.device.type == "cuda"
        self.use_compile = is_cuda if cfg.compile is None else cfg.compile
        self.use_graph = is_cuda if cfg.cuda_graph is None else (cfg.cuda_graph and is_cuda)
        use_fuse = is_cuda if cfg.fuse is None else cfg.fuse
        self.fused = FusedWeights(a) if use_fuse and FusedWeights.possible(a) else None
        self._fw = self.fused.per_layer if self.fused is not None else [None] * len(a.layers)
        self._prompt = prompt = list(verbalizer.prompt_ids)
        self.S = verbalizer.slot  # shared prefix: prompt[:slot]
        self.R0 = len(prompt) - self.S  # per-row prompt part: the injected slot onwards
        self.L = self.R0 + cfg.max_new_tokens  # per-row cache length
        B, C, M = cfg.slots, cfg.capacity, cfg.max_new_tokens
        self.prefix_ids = torch.tensor(prompt[: self.S], device=dev)[None]
        self.suffix_ids = torch.tensor(prompt[self.S :], device=dev)  # (R0,), [0] is the marker (never embedded)
        self.eos = torch.tensor(sorted(verbalizer.eos), device=dev)
        self.tables = a.rope_tables(self.S + self.L, dev, self.dtype)
        kv = lambda *shape: [torch.zeros(*shape, device=dev, dtype=self.dtype) for _ in a.layers]  # noqa: E731
        self.kp, self.vp = kv(a.n_kv, self.S, a.head_dim), kv(a.n_kv, self.S, a.head_dim)  # shared prefix
        self.kc, self.vc = kv(B, a.n_kv, self.L, a.head_dim), kv(B, a.n_kv, self.L, a.head_dim)  # per row
        z = lambda *shape, dtype=torch.long: torch.zeros(*shape, device=dev, dtype=dtype)  # noqa: E731
        # per slot: local position, last token, tokens generated, rng key, input row (C = none), live?
        self.t, self.tok, self.n_gen, self.key, self.row = z(B), z(B), z(B), z(B), z(B)
        self.active = z(B, dtype=torch.bool)
        self.inj = z(B, a.d_model, dtype=self.dtype)  # the injected embedding per slot
        self.out = z(B, M)  # tokens of the slot's current row
        # the queue and the results, one extra scratch row (index C) absorbs writes of slots with nothing to write
        self.q_inj, self.q_key = z(C + 1, a.d_model, dtype=self.dtype), z(C + 1)
        self.res, self.res_len = z(C + 1, M), z(C + 1)
        self.q_n, self.q_next, self.n_fin = z(()), z(()), z(())  # rows queued, next row to admit, rows finished
        self.temperature = torch.ones((), device=dev)
        self.slots = torch.arange(B, device=dev)
        # the step reads the per-slot state through attributes; `_use_slots(k)` points them at their first k rows
        self._full = {name: getattr(self, name) for name in self._PER_SLOT + ("slots",)}
        self._full.update(kc=self.kc, vc=self.vc)
        self.n_slots = B
        shrink = cfg.tail_shrink and not (self.use_compile and not cfg.dynamic_batch)  # a fixed batch: no recompiles
        self._sizes = [B]  # step sizes, largest first
        while shrink and self._sizes[-1] // 2 >= cfg.tail_min_slots:
            self._sizes.append(self._sizes[-1] // 2)
        self._tables = tuple(self.tables[lt] for lt in sorted(set(a.layer_types)))
        self._lt_index = [sorted(set(a.layer_types)).index(lt) for lt in a.layer_types]
        self._windows = sorted(set(a.windows), key=lambda w: -1 if w is None else w)
        self._w_index = [self._windows.index(w) for w in a.windows]
        self._pre_fn, self._layer_fn, self._post_fn = self._pre, decode_layer, self._post
        self._attn = self._attention(compiled=False)  # "auto" turns "reduce" on once the step compiles
        self._prefix_fp32 = cfg.prefix_gemm == "float32"
        self._fingerprint = self._weights_fingerprint()
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}  # step size -> its captured step
        self._ready = False
        self.mode = "eager"
        self.setup_s = 0.0
        self.last_steps = 0  # decode steps the last `run` took, over all its passes
        self.last_sizes: list[int] = []  # the step sizes (slots) the last `run` went through, in order

    def _attention(self, compiled: bool) -> str:
        """The decode step's attention: the configured one; "auto" is the Triton kernel on CUDA (where Triton ships
        with torch), else "reduce" compiled and "matmul" eager."""
        if self.cfg.attention == "auto":
            if self.device.type == "cuda" and importlib.util.find_spec("triton") is not None:
                return "triton"
            return "reduce" if compiled else "matmul"
        return self.cfg.attention

    _PER_SLOT = ("t", "tok", "n_gen", "key", "row", "active", "inj", "out")  # state that moves with its row

    def _use_slots(self, k: int) -> None:
        """Point the step at the first k slots: every per-slot buffer and per-row cache becomes a view of its first k
        rows (the same memory, so a graph captured on these views replays on them)."""
        for name in self._PER_SLOT + ("slots",):
            setattr(self, name, self._full[name][:k])
        self.kc, self.vc = [x[:k] for x in self._full["kc"]], [x[:k] for x in self._full["vc"]]
        self.n_slots = k

    def _shrink(self, live: int) -> None:
        """With the queue empty (no freed slot is needed again), move the live rows, state and cache, to the front
        slots in slot order, and step the smallest size that holds them."""
        k = min(s for s in self._sizes if s >= live)
        if k >= self.n_slots:
            return
        order = torch.argsort((~self.active).to(torch.int8), stable=True)[:k]  # live slots first
        for x in [getattr(self, name) for name in self._PER_SLOT] + self.kc + self.vc:
            x[:k] = x[order]  # the gather is materialised before the copy
        self._use_slots(k)
        self.last_sizes.append(k)

    # ---- the decode step: every slot advances one position ----------------------------------------------
    # Three pieces, each compiled on its own: `_pre` (input embeddings, RoPE rows, masks), `decode_layer` (one
    # block, compiled once and reused by every layer: regional compilation keeps the compile short) and `_post`
    # (logits, next token, bookkeeping, refill). `_step` chains them and is what the CUDA graph captures.
    def _pre(self):
        a, S, R0 = self.arch, self.S, self.R0
        t = self.t  # (B,) local position of this step's input token
        ids = torch.where(t < R0, self.suffix_ids[t.clamp(max=R0 - 1)], self.tok)
        x = a.embed(ids)  # (B, D)
        x = torch.where((t == 0)[:, None], self.inj, x)[:, None]  # (B, 1, D): row position 0 is the injected vector
        pos = t + S  # absolute position
        rope = tuple((cos[pos][:, None], sin[pos][:, None]) for cos, sin in self._tables)  # (B, 1, hd) each
        j = torch.arange(self.L, device=t.device)
        jp = torch.arange(S, device=t.device)
        row_vis = j[None] <= t[:, None]  # (B, L): own keys written so far
        masks = []
        for w in self._windows:  # a key at absolute position p is visible iff p > pos - w
            masks.append((None, row_vis) if w is None else
                         (jp[None] > (pos - w)[:, None], row_vis & (j[None] > (t - w)[:, None])))
        return x, rope, tuple(masks)

    def _post(self, x: torch.Tensor) -> None:
        t, R0, M = self.t, self.R0, self.cfg.max_new_tokens
        C = self.res.shape[0] - 1  # the scratch row (a shape, not the config: compiled code stays size-agnostic)
        logits = self.arch.logits(x[:, 0])  # (B, V)
        if self.cfg.sampling:
            nxt = sample(logits, self.temperature, self.key, self.n_gen)
        else:
            nxt = logits.argmax(-1)
        live = (t >= R0 - 1) & self.active  # this step's output is a generated token of a live row
        col = self.n_gen.clamp(max=M - 1)
        self.out[self.slots, col] = torch.where(live, nxt, self.out[self.slots, col])
        n_gen = self.n_gen + live.long()
        ended = live & ((nxt[:, None] == self.eos[None]).any(-1) | (n_gen >= M))  # (B,)
        # copy ended rows out (everyone else writes the scratch row C)
        dst = torch.where(ended, self.row, C)
        self.res[dst] = self.out
        self.res_len[dst] = n_gen
        self.n_fin.add_(ended.sum())
        # refill: free slots take the next queued rows, in slot order
        free = ended | ~self.active
        new_row = self.q_next + free.long().cumsum(0) - 1
        take = free & (new_row < self.q_n)
        src = torch.where(take, new_row, C)
        self.q_next.copy_(torch.minimum(self.q_next + free.sum(), self.q_n))
        self.row.copy_(torch.where(take, new_row, torch.where(free, C, self.row)))
        self.active.copy_(take | (self.active & ~free))
        self.inj.copy_(torch.where(take[:, None], self.q_inj[src], self.inj))
        self.key.copy_(torch.where(take, self.q_key[src], self.key))
        self.n_gen.copy_(torch.where(take, 0, n_gen))
        self.tok.copy_(nxt)
        self.t.copy_(torch.where(take, 0, (t + 1).clamp(max=self.L - 1)))

    def _step(self) -> None:
        a = self.arch
        x, rope, masks = self._pre_fn()
        for i, layer in enumerate(a.layers):
            cos, sin = rope[self._lt_index[i]]
            pmask, rmask = masks[self._w_index[i]]
            x = self._layer_fn(a, layer, self._fw[i], x, cos, sin, self.kc[i], self.vc[i], self.kp[i], self.vp[i],
                               self.slots, self.t, pmask, rmask, a.scaling[i], self._attn, self._prefix_fp32)
        self._post_fn(x)

    # ---- setup -------------------------------------------------------------------------------------------
    def matches(self, verbalizer) -> bool:
        """True while this engine still fits the verbalizer: same weights in place, same prompt, same EOS set."""
        return (self._weights_fingerprint() == self._fingerprint and list(verbalizer.prompt_ids) == self._prompt
                and sorted(verbalizer.eos) == self.eos.tolist())

    def _weights_fingerprint(self) -> tuple:
        return tuple((p.data_ptr(), p.dtype, p.device) for p in self.v.model.parameters())

    def _prefill_prefix(self) -> None:
        """K/V of the shared prompt prefix, computed once per run into the same tensors the graph reads."""
        a = self.arch
        x = a.embed(self.prefix_ids)  # (1, S, D)
        for i, layer in enumerate(a.layers):
            def attend(q, k, v, i=i):
                self.kp[i].copy_(k[0])
                self.vp[i].copy_(v[0])
                return a.causal_attention(q, k, v, a.scaling[i], a.windows[i])

            cos, sin = self.tables[a.layer_types[i]]
            x = a.block(layer, x, cos[None, : self.S], sin[None, : self.S], attend)

    def _reset(self, n: int = 0) -> None:
        """Empty every slot and queue `n` rows (their q_inj / q_key must be written by the caller)."""
        self.active.zero_()
        self.row.fill_(self.cfg.capacity)
        self.q_n.fill_(n)
        self.q_next.zero_()
        self.n_fin.zero_()

    @torch.no_grad()
    def warmup(self) -> None:
        """Compile the step pieces and capture the step as a CUDA graph (when enabled); falls back on failure."""
        if self._ready:
            return
        import time

        t0 = time.perf_counter()
        self._prefill_prefix()
        self._reset()
        if self.use_compile:
            if self.cfg.dynamic_batch:  # one compiled step serves every batch size (a new size only re-captures)
                for buf in (self.t, self.tok, self.n_gen, self.key, self.row, self.active, self.inj, self.out, self.slots,
                            self.q_inj, self.q_key, self.res, self.res_len, *self.kc, *self.vc):
                    torch._dynamo.maybe_mark_dynamic(buf, 0)
            first = self._attention(compiled=True)  # "auto" falls back from the Triton kernel to "reduce" if needed
            attempts = [(first, True), (first, False)] + ([("reduce", True)] if self.cfg.attention == "auto"
                                                          and first != "reduce" else [])
            for attn, fullgraph in attempts:  # PEFT or a new transformers may break the graph: allow breaks second
                try:
                    self._attn = attn
                    opts = dict(dynamic=False, fullgraph=fullgraph)
                    self._pre_fn = torch.compile(self._pre, **opts)
                    self._layer_fn = torch.compile(decode_layer, **opts)
                    self._post_fn = torch.compile(self._post, **opts)
                    self._step()
                    self.mode = "compiled" if fullgraph else "compiled(graph breaks)"
                    break
                except Exception as e:  # noqa: BLE001 - any compiler failure: try the next option, then eager
                    log.warning("torch.compile(fullgraph=%s, attention=%s) of the decode step failed (%s: %s)",
                                fullgraph, attn, type(e).__name__, str(e)[:500])
                    self._pre_fn, self._layer_fn, self._post_fn = self._pre, decode_layer, self._post
                    self._attn = self._attention(compiled=False)
                    self._reset()
        if self.mode == "eager" and self._attn == "triton" and self.cfg.attention == "auto":
            try:  # uncompiled, the kernel first runs here: if it cannot (no GPU Triton can use), auto takes matmul
                self._step()
            except Exception as e:  # noqa: BLE001
                log.warning("the Triton attention kernel failed (%s: %s); using attention=matmul", type(e).__name__,
                            str(e)[:300])
                self._attn = "matmul"
            self._reset()
        if self._attn != "matmul":
            self.mode += f"+{self._attn}-attn"
        if self.use_graph:
            for k in self._sizes:  # the full step first; the tail's smaller steps share its memory pool
                try:
                    self._use_slots(k)
                    self._graphs[k] = self._capture(pool=self._graphs[self._sizes[0]].pool() if self._graphs else None)
                except Exception as e:  # noqa: BLE001
                    log.warning("CUDA graph capture of the decode step at %d slots failed (%s: %s); %s", k,
                                type(e).__name__, e, "launching it step by step" if not self._graphs else
                                "the tail does not shrink below that")
                    break
            self._use_slots(self._sizes[0])
            self._reset()
            self._sizes = [k for k in self._sizes if k in self._graphs] or self._sizes
            if self._graphs:
                self.mode += "+cudagraph"
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.setup_s = time.perf_counter() - t0
        self._ready = True
        log.info("engine ready (%s, %d slots) in %.1fs", self.mode, self.cfg.slots, self.setup_s)

    def _capture(self, pool=None) -> "torch.cuda.CUDAGraph":
        """The step at the current slot count, warmed on a side stream and captured as a CUDA graph."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self._step()
        return graph

    @torch.no_grad()
    def advance(self) -> None:
        """One decode step for every slot in use."""
        if self._graphs:
            self._graphs[self.n_slots].replay()
        else:
            self._step()

    # ---- the loop ----------------------------------------------------------------------------------------
    def injected(self, vectors: torch.Tensor) -> torch.Tensor:
        """Row-0 input embeddings: v * injection_scale / ||v|| (fp32 norm), as `Verbalizer.inject` writes them."""
        v = vectors.to(self.device).float()
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * self.v.meta.injection_scale
        return v.to(self.dtype)

    @torch.no_grad()
    def run(self, vectors: torch.Tensor, *, temperature: float = 0.0, seed: int = 0, first_row: int = 0,
            progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Token ids per vector (EOS excluded; a trailing -1 marks a row stopped by max_new_tokens).

        Row i samples from the stream of (seed, first_row + i): a slice of a batch decoded with its first row's index
        gets the rows the whole batch would (how ranks split RL rollouts)."""
        from nlakit.vectors import check_vectors

        if (temperature > 0) != self.cfg.sampling:
            raise NlakitError(f"this engine was built for {'sampling' if self.cfg.sampling else 'greedy'} decoding",
                              "build it with EngineConfig(sampling=temperature > 0), or call nlakit.engine.generate")
        vectors = check_vectors(vectors, self.v.meta.d_model)
        if not self.matches(self.v):
            raise NlakitError("the AV's weights, prompt or EOS set changed (moved or replaced) since this engine was built",
                              "build a new Engine (nlakit.engine.generate does this for you)")
        if vectors.shape[0] == 0:
            return []
        self.warmup()
        if self.fused is not None:
            self.fused.refresh()
        self._prefill_prefix()  # weights may have changed in place since the last run
        if self.cfg.sampling:
            self.temperature.fill_(float(temperature))
        out: list[list[int]] = []
        self.last_steps, self.last_sizes = 0, []
        for start in range(0, vectors.shape[0], self.cfg.capacity):
            out += self._run_pass(vectors[start : start + self.cfg.capacity], seed, first_row + start, progress)
        return out

    def _run_pass(self, vectors: torch.Tensor, seed: int, offset: int, progress) -> list[list[int]]:
        n, B = vectors.shape[0], self.cfg.slots
        self.q_inj[:n] = self.injected(vectors)
        self.q_key[:n] = torch.tensor([row_key(seed, offset + i) for i in range(n)], device=self.device)
        self._use_slots(B)
        self.last_sizes.append(B)
        self._reset(n)
        sync = self.cfg.sync_every if self.device.type == "cuda" else 1  # a CPU "sync" costs nothing: check every step
        max_steps = (n // B + 2) * (self.L + 1) + sync  # every row ends within L steps of admission
        steps, reported, n_fin = 0, 0, 0
        while True:
            # once every remaining row holds a slot, only the tail is left: check more often, so the pass ends within
            # 2 steps of its last row instead of up to sync_every (a check costs one sync, far less than a step)
            k = sync if n - n_fin > B else min(sync, 2)
            for _ in range(k):
                self.advance()
            steps += k
            n_fin, admitted = torch.stack((self.n_fin, self.q_next)).tolist()  # the one sync per check
            if progress is not None and n_fin > reported:
                progress(n_fin - reported)
                reported = n_fin
            if n_fin >= n:
                break
            assert steps <= max_steps, f"the engine made no progress: {n_fin}/{n} rows after {steps} steps"
            if admitted >= n and len(self._sizes) > 1 and admitted - n_fin <= self.n_slots // 2:
                self._shrink(admitted - n_fin)
        self.last_steps += steps
        self._use_slots(B)
        res, lens = self.res[:n].cpu().tolist(), self.res_len[:n].cpu().tolist()
        eos = set(int(e) for e in self.v.eos)
        rows = []
        for toks, k in zip(res, lens):
            toks = toks[:k]
            assert toks and (toks[-1] in eos or k == self.cfg.max_new_tokens), "a row ended without EOS or the cap"
            rows.append(toks[:-1] if toks[-1] in eos else toks + [-1])
        return rows


# ---- the public entry point ------------------------------------------------------------------------------
_CACHE: "weakref.WeakKeyDictionary[object, OrderedDict]" = weakref.WeakKeyDictionary()
_CACHE_SIZE = 4


def get_engine(verbalizer, cfg: EngineConfig) -> Engine:
    """A cached Engine for this verbalizer and config (rebuilt when the weights were moved or replaced)."""
    engines = _CACHE.setdefault(verbalizer, OrderedDict())
    eng = engines.get(cfg)
    if eng is not None and not eng.matches(verbalizer):
        eng = None
    if eng is None:
        eng = Engine(verbalizer, cfg)
        engines[cfg] = eng
        while len(engines) > _CACHE_SIZE:
            engines.popitem(last=False)
    engines.move_to_end(cfg)
    return eng


def mode_of(verbalizer) -> str | None:
    """How the most recently used engine of this verbalizer runs ("compiled+cudagraph", "eager", …), if any."""
    engines = _CACHE.get(verbalizer)
    return next(reversed(engines.values())).mode if engines else None


def _slots_for(n: int, batch_size: int, device: torch.device) -> int:
    """Fewer rows than the batch: exactly n slots on CPU (nothing is captured); on CUDA round up to a power of
    two, so repeated small calls reuse a few captured graphs."""
    if n >= batch_size:
        return batch_size
    if device.type != "cuda":
        return max(1, n)
    return min(batch_size, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@torch.no_grad()
def generate(verbalizer, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 256, engine: str = "auto", compile: bool | None = None, cuda_graph: bool | None = None,
             sync_every: int = 16, progress: Callable[[int], None] | None = None, first_row: int = 0) -> list[list[int]]:
    """Generate AV token ids for a batch of activation vectors.

    Args:
        verbalizer: a `nlakit.verbalizer.Verbalizer`.
        vectors: (N, d_model) activations.
        max_new_tokens: length cap per explanation.
        temperature: 0 = greedy; > 0 samples from softmax(logits / T), reproducibly for a given seed.
        batch_size: rows decoded together (the engine refills finished rows from the remaining vectors).
        engine: "auto" (fast engine when the architecture is supported, else HF), "fast", or "hf" (plain generate).
        compile, cuda_graph: force torch.compile / CUDA graphs on or off (default: on for CUDA).
        first_row: the index of `vectors`' first row in a larger batch split across processes: the fast engine then
            samples each row exactly as in the whole batch (plain HF generate only shifts its seed by it).
    Returns:
        One list of token ids per vector, EOS excluded; a trailing -1 marks "stopped by max_new_tokens"
        (the same format as `Verbalizer.generate_ids`).
    """
    from nlakit.vectors import check_vectors

    if engine not in ENGINES:
        raise NlakitError(f"unknown engine {engine!r}", f"pass one of {', '.join(ENGINES)}")
    vectors = check_vectors(vectors, verbalizer.meta.d_model)
    if batch_size < 1:
        raise NlakitError(f"batch size {batch_size} is not positive", "pass --batch-size 1 or more")
    if engine == "fast" and not supports(verbalizer.model):
        Arch(verbalizer.model)  # raises the NlakitError that names the fix
    if engine == "hf" or (engine == "auto" and not supports(verbalizer.model)):
        if engine == "auto":
            log.info("the fast engine does not support this architecture; using plain HF generate")
        return generate_hf(verbalizer, vectors, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + first_row,
                           batch_size=batch_size, progress=progress)
    device = next(verbalizer.model.parameters()).device
    cfg = EngineConfig(slots=_slots_for(int(vectors.shape[0]), batch_size, device), max_new_tokens=max_new_tokens,
                       sampling=temperature > 0, compile=compile, cuda_graph=cuda_graph, sync_every=sync_every)
    return get_engine(verbalizer, cfg).run(vectors, temperature=temperature, seed=seed, first_row=first_row, progress=progress)


def generate_hf(verbalizer, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0, seed: int = 0,
                batch_size: int = 64, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """The fallback: plain HF `generate` in chunks of `batch_size` (`Verbalizer.generate_ids`)."""
    from nlakit.vectors import check_vectors

    vectors = check_vectors(vectors, verbalizer.meta.d_model)
    rows: list[list[int]] = []
    for s in range(0, vectors.shape[0], batch_size):
        chunk = vectors[s : s + batch_size]
        rows += verbalizer.generate_ids(chunk, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + s)
        if progress is not None:
            progress(chunk.shape[0])
    return rows
