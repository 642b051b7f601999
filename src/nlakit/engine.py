"""Fast AV generation, and forward passes that stop at layer L (extraction, AR scoring).

    nlakit bench --target tiny            # HF generate vs this engine, same inputs, one run

Every AV prompt is the same except the injected slot, so the engine
1. runs the prompt prefix *before* the slot once and keeps its K/V (``(KV, S, hd)`` per layer) shared by all rows;
2. feeds the rest of the prompt (slot onwards, ``R0`` tokens) and then the generated tokens one decode step at a
   time, every row at its own position, into a preallocated per-row KV cache ``(B, KV, R0 + max_new, hd)``;
3. refills a slot with the next pending vector as soon as its row ends (checked every ``sync_every`` steps), so
   finished rows do not idle in the batch;
4. on CUDA compiles the decode step with ``torch.compile`` (fusion) and replays it as one CUDA graph; on CPU it
   runs the same step eagerly, and greedy output is token-identical to plain HF ``generate`` (tests).

The decode step is a small functional re-implementation of a Llama / Qwen / Gemma-3 block that calls the HF
model's own submodules (norms, projections, MLP, rotary tables), so LoRA-wrapped projections work and numerics
follow HF. Sampling draws one counter-based uniform per (seed, row, token index) and inverts the CDF of
``softmax(logits / T)``: the same seed gives the same text whatever the batch size or refill order.

Architectures outside `SUPPORTED` fall back to plain HF ``generate`` (``engine="hf"``).
"""

from __future__ import annotations

import functools
import logging
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
ENGINES = ("auto", "fast", "hf")

_M32 = 0xFFFFFFFF


# ---- the model, seen as plain blocks ---------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model under a PEFT wrapper (LoRA layers stay in place, so calling submodules applies them)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


class Arch:
    """A Llama/Qwen/Gemma-3 causal LM (or its bare backbone) as a list of blocks the engine can drive."""

    def __init__(self, model: torch.nn.Module):
        model = unwrap(model)
        base = getattr(model, "model", model)
        base = getattr(base, "language_model", base)
        cfg = base.config
        cfg = getattr(cfg, "text_config", None) or cfg
        self.model_type = str(getattr(cfg, "model_type", "?"))
        if not supports(model):
            raise NlakitError(f"the fast engine does not support {self.model_type!r} models",
                              f"pass --engine hf (plain generate), or use one of {', '.join(SUPPORTED)}")
        self.lm_head = model.get_output_embeddings() if model is not base else None
        self.embed, self.norm, self.rotary = base.embed_tokens, base.norm, base.rotary_emb
        self.layers = list(base.layers)
        self.n_heads, self.n_kv = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.d_model = int(cfg.hidden_size)
        n = len(self.layers)
        self.layer_types = list(getattr(cfg, "layer_types", None) or ["full_attention"] * n)[:n]
        window = getattr(cfg, "sliding_window", None)
        self.windows = [int(window) if t == "sliding_attention" and window else None for t in self.layer_types]
        self.scaling = [float(layer.self_attn.scaling) for layer in self.layers]
        self.qk_norm = hasattr(self.layers[0].self_attn, "q_norm")
        self.sandwich = hasattr(self.layers[0], "pre_feedforward_layernorm")  # Gemma: norms around attn and MLP outputs
        self.attn_softcap = getattr(cfg, "attn_logit_softcapping", None)
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None)
        self._gqa_kw = _sdpa_has_gqa()

    def rope_tables(self, n: int, device, dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """cos/sin for positions 0..n-1 per layer type, (n, hd) each, from the model's own rotary module."""
        pos = torch.arange(n, device=device)[None]
        x = torch.zeros(1, device=device, dtype=dtype)
        out = {}
        for lt in set(self.layer_types):
            if hasattr(self.rotary, f"{lt}_inv_freq"):  # Gemma-3: one table per layer type
                cos, sin = self.rotary(x, pos, lt)
            else:
                cos, sin = self.rotary(x, pos)
            out[lt] = (cos[0], sin[0])
        return out

    def block(self, layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              attend: Callable) -> torch.Tensor:
        """One decoder block on x (B, T, D); cos/sin (B or 1, T, hd); `attend(q, k, v)` -> (B, H, T, hd)."""
        at = layer.self_attn
        B, T, _ = x.shape
        h = layer.input_layernorm(x)
        q = at.q_proj(h).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = at.k_proj(h).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = at.v_proj(h).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        if self.qk_norm:
            q, k = at.q_norm(q), at.k_norm(k)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        o = attend(q, k, v)  # (B, H, T, hd)
        o = at.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        if self.sandwich:
            x = x + layer.post_attention_layernorm(o)
            return x + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(x)))
        x = x + o
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def causal_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                         window: int | None) -> torch.Tensor:
        """Causal (and sliding-window) self-attention within one sequence; right padding needs no mask."""
        T = q.shape[2]
        g = self.n_heads // self.n_kv
        if self.attn_softcap is None and (window is None or T <= window):
            if self._gqa_kw:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=g > 1)
            return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                  is_causal=True, scale=scale)
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        idx = torch.arange(T, device=q.device)
        mask = idx[None] <= idx[:, None]  # (T, T): key j visible from query i
        if window is not None:
            mask &= idx[None] > idx[:, None] - window
        s = self.softcap(q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
        return s.softmax(-1, dtype=torch.float32).to(q.dtype) @ v

    def softcap(self, s: torch.Tensor) -> torch.Tensor:
        if self.attn_softcap is None:
            return s
        return torch.tanh(s / self.attn_softcap) * self.attn_softcap

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) last hidden states -> (..., V) logits, as the HF head computes them."""
        out = self.lm_head(self.norm(x))
        if self.final_softcap is not None:
            out = torch.tanh(out / self.final_softcap) * self.final_softcap
        return out

    def hidden_at(self, ids: torch.Tensor, layer: int, tables=None) -> torch.Tensor:
        """Output of block `layer` for right-padded ids (B, T): (B, T, D). Blocks after `layer` never run."""
        x = self.embed(ids)
        T = ids.shape[1]
        tables = tables or self.rope_tables(T, ids.device, x.dtype)
        for i in range(layer + 1):
            cos, sin = tables[self.layer_types[i]]
            attend = functools.partial(self.causal_attention, scale=self.scaling[i], window=self.windows[i])
            x = self.block(self.layers[i], x, cos[None, :T], sin[None, :T], attend)
        return x


def _sdpa_has_gqa() -> bool:
    import inspect

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # builtins without a signature: probe once
        try:
            q = torch.zeros(1, 2, 1, 4)
            F.scaled_dot_product_attention(q, q[:, :1], q[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False


def supports(model: torch.nn.Module) -> bool:
    """True when the fast engine can drive this model (else use plain generate)."""
    model = unwrap(model)
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    cfg = getattr(base, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED or getattr(cfg, "use_bidirectional_attention", False):
        return False
    return all(hasattr(base, a) for a in ("embed_tokens", "norm", "rotary_emb", "layers"))


# ---- sampling --------------------------------------------------------------------------------------------
def row_key(seed: int, row: int) -> int:
    """A 31-bit key per (seed, row): the row's random stream does not depend on batch size or refill order."""
    x = (seed * 0x9E3779B1 + row * 0x85EBCA77 + 0x27D4EB2F) & _M32
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & _M32
    x ^= x >> 12
    return x & 0x7FFFFFFF


def uniform(key: torch.Tensor, ctr: torch.Tensor) -> torch.Tensor:
    """Counter-based uniforms in (0, 1), float32, one per (key, ctr) pair; int64 ops only, graph-safe."""
    x = (key * 0x2545F491 + ctr * 0x6A09E667 + 0x3C6EF372) & _M32  # operands < 2**31: products fit int64
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x46B3C6D5) & _M32
    x = x ^ (x >> 16)
    return ((x >> 8).float() + 0.5) * (1.0 / (1 << 24))


def sample(logits: torch.Tensor, temperature: torch.Tensor, key: torch.Tensor, ctr: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits / T) by inverting the CDF at uniform(key, ctr). (B, V) -> (B,)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    cdf = probs.cumsum(-1)
    u = uniform(key, ctr) * cdf[:, -1]  # scale by the total so rounding never leaves the support
    return torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp_max(logits.shape[-1] - 1)


# ---- one block of the decode step ------------------------------------------------------------------------
def decode_layer(a: Arch, layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 kc: torch.Tensor, vc: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, rows: torch.Tensor,
                 t: torch.Tensor, pmask: torch.Tensor | None, rmask: torch.Tensor, scale: float) -> torch.Tensor:
    """One block for one new token per row. x (B, 1, D); kc/vc (B, KV, L, hd) per-row cache, written at t (B,);
    kp/vp (KV, S, hd) shared prefix; pmask (B, S) / rmask (B, L) visible keys. Returns (B, 1, D)."""
    B = x.shape[0]

    def attend(q, k, v):  # q (B, H, 1, hd), k/v (B, KV, 1, hd)
        kc[rows, :, t] = k[:, :, 0]
        vc[rows, :, t] = v[:, :, 0]
        qg = q.view(B, a.n_kv, -1, a.head_dim)  # (B, KV, g, hd)
        sp = a.softcap(torch.einsum("bkgd,ksd->bkgs", qg, kp) * scale)  # (B, KV, g, S): shared prefix
        sr = a.softcap(qg @ kc.transpose(-1, -2) * scale)  # (B, KV, g, L): the row's own keys
        if pmask is not None:
            sp = sp.masked_fill(~pmask[:, None, None], float("-inf"))
        sr = sr.masked_fill(~rmask[:, None, None], float("-inf"))
        p = torch.cat([sp, sr], -1).softmax(-1, dtype=torch.float32).to(q.dtype)  # one softmax over both parts
        S = kp.shape[1]
        o = torch.einsum("bkgs,ksd->bkgd", p[..., :S], vp) + p[..., S:] @ vc  # (B, KV, g, hd)
        return o.reshape(B, a.n_heads, 1, a.head_dim)

    return a.block(layer, x, cos, sin, attend)


# ---- the engine ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineConfig:
    """How an `Engine` runs. `None` for compile / cuda_graph means: on when the model is on CUDA."""

    slots: int = 256  # rows decoded together (the batch)
    max_new_tokens: int = 150
    sampling: bool = False  # the step samples (temperature > 0) instead of taking the argmax
    compile: bool | None = None
    cuda_graph: bool | None = None
    sync_every: int = 16  # decode steps between host checks for "all rows done" (each check is one small sync)
    queue: int = 0  # rows queued on the device per pass; 0 = max(16 x slots, 4096). Longer inputs run in passes

    def __post_init__(self):
        if self.slots < 1:
            raise NlakitError(f"batch size {self.slots} is not positive", "pass a batch size of at least 1")
        if self.max_new_tokens < 1:
            raise NlakitError(f"max_new_tokens={self.max_new_tokens} generates nothing", "pass max_new_tokens >= 1")
        if self.sync_every < 1:
            raise NlakitError(f"sync_every={self.sync_every} is not positive", "pass sync_every >= 1")
        if self.queue < 0:
            raise NlakitError(f"queue={self.queue} is negative", "pass queue >= 0 (0 = automatic)")

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
        prompt = list(verbalizer.prompt_ids)
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
        self._tables = tuple(self.tables[lt] for lt in sorted(set(a.layer_types)))
        self._lt_index = [sorted(set(a.layer_types)).index(lt) for lt in a.layer_types]
        self._windows = sorted(set(a.windows), key=lambda w: -1 if w is None else w)
        self._w_index = [self._windows.index(w) for w in a.windows]
        self._pre_fn, self._layer_fn, self._post_fn = self._pre, decode_layer, self._post
        self._fingerprint = self._weights_fingerprint()
        self._graph = None
        self._ready = False
        self.mode = "eager"
        self.setup_s = 0.0

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
        t, R0, M, C = self.t, self.R0, self.cfg.max_new_tokens, self.cfg.capacity
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
            x = self._layer_fn(a, layer, x, cos, sin, self.kc[i], self.vc[i], self.kp[i], self.vp[i], self.slots, self.t,
                               pmask, rmask, a.scaling[i])
        self._post_fn(x)

    # ---- setup -------------------------------------------------------------------------------------------
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

    def warmup(self) -> None:
        """Compile the step pieces and capture the step as a CUDA graph (when enabled); falls back on failure."""
        if self._ready:
            return
        import time

        t0 = time.perf_counter()
        self._prefill_prefix()
        self._reset()
        if self.use_compile:
            try:
                opts = dict(dynamic=False, fullgraph=True)
                self._pre_fn = torch.compile(self._pre, **opts)
                self._layer_fn = torch.compile(decode_layer, **opts)
                self._post_fn = torch.compile(self._post, **opts)
                self._step()
                self.mode = "compiled"
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eager instead
                log.warning("torch.compile of the decode step failed (%s: %s); running it eagerly", type(e).__name__, e)
                self._pre_fn, self._layer_fn, self._post_fn = self._pre, decode_layer, self._post
        if self.use_graph:
            try:
                stream = torch.cuda.Stream(device=self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        self._step()
                torch.cuda.current_stream(self.device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._step()
                self._graph = graph
                self.mode += "+cudagraph"
            except Exception as e:  # noqa: BLE001
                log.warning("CUDA graph capture of the decode step failed (%s: %s); launching it step by step",
                            type(e).__name__, e)
                self._graph = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.setup_s = time.perf_counter() - t0
        self._ready = True
        log.info("engine ready (%s, %d slots) in %.1fs", self.mode, self.cfg.slots, self.setup_s)

    def advance(self) -> None:
        """One decode step for every slot."""
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step()

    # ---- the loop ----------------------------------------------------------------------------------------
    def injected(self, vectors: torch.Tensor) -> torch.Tensor:
        """Row-0 input embeddings: v * injection_scale / ||v|| (fp32 norm), as `Verbalizer.inject` writes them."""
        v = vectors.to(self.device).float()
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * self.v.meta.injection_scale
        return v.to(self.dtype)

    @torch.no_grad()
    def run(self, vectors: torch.Tensor, *, temperature: float = 0.0, seed: int = 0,
            progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Token ids per vector (EOS excluded; a trailing -1 marks a row stopped by max_new_tokens)."""
        from nlakit.verbalizer import check_vectors

        if (temperature > 0) != self.cfg.sampling:
            raise NlakitError(f"this engine was built for {'sampling' if self.cfg.sampling else 'greedy'} decoding",
                              "build it with EngineConfig(sampling=temperature > 0), or call nlakit.engine.generate")
        vectors = check_vectors(vectors, self.v.meta.d_model)
        if self._weights_fingerprint() != self._fingerprint:
            raise NlakitError("the AV's weights were moved or replaced since this engine was built",
                              "build a new Engine (nlakit.engine.generate does this for you)")
        self.warmup()
        self._prefill_prefix()  # weights may have changed in place since the last run
        if self.cfg.sampling:
            self.temperature.fill_(float(temperature))
        out: list[list[int]] = []
        for start in range(0, vectors.shape[0], self.cfg.capacity):
            out += self._run_pass(vectors[start : start + self.cfg.capacity], seed, start, progress)
        return out

    def _run_pass(self, vectors: torch.Tensor, seed: int, offset: int, progress) -> list[list[int]]:
        n, B = vectors.shape[0], self.cfg.slots
        self.q_inj[:n] = self.injected(vectors)
        self.q_key[:n] = torch.tensor([row_key(seed, offset + i) for i in range(n)], device=self.device)
        self._reset(n)
        max_steps = (n // B + 2) * (self.L + 1) + self.cfg.sync_every  # every row ends within L steps of admission
        steps, reported = 0, 0
        while True:
            for _ in range(self.cfg.sync_every):
                self.advance()
            steps += self.cfg.sync_every
            n_fin = int(self.n_fin)  # the one sync per sync_every steps
            if progress is not None and n_fin > reported:
                progress(n_fin - reported)
                reported = n_fin
            if n_fin >= n:
                break
            assert steps <= max_steps, f"the engine made no progress: {n_fin}/{n} rows after {steps} steps"
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
    if eng is not None and (eng._weights_fingerprint() != eng._fingerprint or eng.v.prompt_ids != verbalizer.prompt_ids):
        eng = None
    if eng is None:
        eng = Engine(verbalizer, cfg)
        engines[cfg] = eng
        while len(engines) > _CACHE_SIZE:
            engines.popitem(last=False)
    engines.move_to_end(cfg)
    return eng


def _slots_for(n: int, batch_size: int) -> int:
    """Fewer rows than the batch: round up to a power of two so repeated small calls reuse a few engines."""
    return batch_size if n >= batch_size else min(batch_size, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@torch.no_grad()
def generate(verbalizer, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 256, engine: str = "auto", compile: bool | None = None, cuda_graph: bool | None = None,
             sync_every: int = 16, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """Generate AV token ids for a batch of activation vectors.

    Args:
        verbalizer: a `nlakit.verbalizer.Verbalizer`.
        vectors: (N, d_model) activations.
        max_new_tokens: length cap per explanation.
        temperature: 0 = greedy; > 0 samples from softmax(logits / T), reproducibly for a given seed.
        batch_size: rows decoded together (the engine refills finished rows from the remaining vectors).
        engine: "auto" (fast engine when the architecture is supported, else HF), "fast", or "hf" (plain generate).
        compile, cuda_graph: force torch.compile / CUDA graphs on or off (default: on for CUDA).
    Returns:
        One list of token ids per vector, EOS excluded; a trailing -1 marks "stopped by max_new_tokens"
        (the same format as `Verbalizer.generate_ids`).
    """
    if engine not in ENGINES:
        raise NlakitError(f"unknown engine {engine!r}", f"pass one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise NlakitError(f"batch size {batch_size} is not positive", "pass --batch-size 1 or more")
    if engine == "fast" and not supports(verbalizer.model):
        Arch(verbalizer.model)  # raises the NlakitError that names the fix
    if engine == "hf" or (engine == "auto" and not supports(verbalizer.model)):
        if engine == "auto":
            log.info("the fast engine does not support this architecture; using plain HF generate")
        return generate_hf(verbalizer, vectors, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                           batch_size=batch_size, progress=progress)
    n = int(vectors.shape[0]) if vectors.ndim == 2 else 1
    cfg = EngineConfig(slots=_slots_for(n, batch_size), max_new_tokens=max_new_tokens, sampling=temperature > 0,
                       compile=compile, cuda_graph=cuda_graph, sync_every=sync_every)
    return get_engine(verbalizer, cfg).run(vectors, temperature=temperature, seed=seed, progress=progress)


def generate_hf(verbalizer, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0, seed: int = 0,
                batch_size: int = 64, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """The fallback: plain HF `generate` in chunks of `batch_size` (`Verbalizer.generate_ids`)."""
    from nlakit.verbalizer import check_vectors

    vectors = check_vectors(vectors, verbalizer.meta.d_model)
    rows: list[list[int]] = []
    for s in range(0, vectors.shape[0], batch_size):
        chunk = vectors[s : s + batch_size]
        rows += verbalizer.generate_ids(chunk, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + s)
        if progress is not None:
            progress(chunk.shape[0])
    return rows


# ---- forward passes that stop at layer L (extraction, AR scoring) ----------------------------------------
def sorted_batches(lengths: list[int], max_batch_tokens: int, max_rows: int = 4096) -> list[list[int]]:
    """Indices grouped into length-sorted batches whose padded size (rows x longest) stays under the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_batch_tokens or len(cur) >= max_rows):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids.to(device, non_blocking=True), torch.tensor([len(r) for r in rows], device=device)


@torch.no_grad()
def hidden_batches(model: torch.nn.Module, rows: list[list[int]], layer: int, *, max_batch_tokens: int = 65536,
                   pad_id: int = 0, dtype: torch.dtype | None = None) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Output of block `layer` for token rows, in length-sorted, right-padded batches with no attention mask.

    With right padding a causal model never lets a real token see a pad, so no mask is needed and the flash
    kernel applies. Blocks after `layer` never run. Yields ``(row indices, hidden (b, T, D), lengths (b,))``
    with hidden on the model's device (padded positions hold garbage: slice by length).
    """
    a = Arch(model)
    p = next(unwrap(model).parameters())
    tables = None
    for idx in sorted_batches([len(r) for r in rows], max_batch_tokens):
        ids, lengths = _pad([rows[i] for i in idx], pad_id, p.device)
        if tables is None or tables[a.layer_types[0]][0].shape[0] < ids.shape[1]:
            tables = a.rope_tables(max(ids.shape[1], 512), p.device, dtype or p.dtype)
        with torch.autocast(device_type=p.device.type, dtype=dtype, enabled=dtype is not None and dtype != p.dtype):
            h = a.hidden_at(ids, layer, tables)
        yield idx, h, lengths


@torch.no_grad()
def extract_rows(model: torch.nn.Module, rows: list[list[int]], layer: int, *, max_batch_tokens: int = 65536,
                 pad_id: int = 0, dtype: torch.dtype | None = None, to_cpu: bool = True) -> list[torch.Tensor]:
    """Layer-`layer` activations of every token of every row: one (len, D) tensor per row, in input order."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    for idx, h, lengths in hidden_batches(model, rows, layer, max_batch_tokens=max_batch_tokens, pad_id=pad_id, dtype=dtype):
        for j, i in enumerate(idx):
            v = h[j, : int(lengths[j])]
            out[i] = v.float().cpu() if to_cpu else v
    return out  # type: ignore[return-value]


@torch.no_grad()
def ar_score_rows(ar, rows: list[list[int]], *, max_batch_tokens: int = 65536,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """AR predictions for tokenised AR prompts (`Reconstructor` backbone + value head at the last token), (N, D)."""
    out = torch.zeros(len(rows), ar.meta.d_model, device=ar.device)
    for idx, h, lengths in hidden_batches(ar.backbone, rows, ar.meta.layer, max_batch_tokens=max_batch_tokens,
                                          pad_id=0, dtype=dtype):
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]  # (b, D) read at the last real token
        out[torch.tensor(idx, device=out.device)] = ar.value_head(last.to(ar.value_head.weight.dtype)).float()
    return out


def ar_rows(ar, explanations: list[str]) -> list[list[int]]:
    """Token rows of AR prompts exactly as `Reconstructor.encode` builds them (unpadded)."""
    return [ar.tokenizer.encode(ar.format(e), add_special_tokens=True) for e in explanations]
