"""The decoder as plain blocks, and forward passes that stop at layer L (extraction, AR scoring).

`Arch` drives a Llama / Mistral / Qwen2 / Qwen3 / Gemma-3 HF model block by block by calling the model's own
submodules (norms, projections, MLP, rotary tables), so LoRA-wrapped projections keep working and numerics
follow HF. `nlakit.engine` builds its decode step on it; `hidden_batches`, `extract_rows` and `ar_score_rows`
run whole sequences through blocks 0..L on length-sorted, right-padded batches with no attention mask.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from nlakit.errors import NlakitError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")


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
              attend: Callable, fw: tuple | None = None) -> torch.Tensor:
        """One decoder block on x (B, T, D); cos/sin (B or 1, T, hd); `attend(q, k, v)` -> (B, H, T, hd).

        `fw` = (W_qkv, b_qkv, W_gate_up, b_gate_up) from `FusedWeights`: one matmul for q/k/v and one for gate/up."""
        at, mlp = layer.self_attn, layer.mlp
        B, T, _ = x.shape
        hd = self.head_dim
        h = layer.input_layernorm(x)
        if fw is None:
            q, k, v = at.q_proj(h), at.k_proj(h), at.v_proj(h)
        else:
            q, k, v = F.linear(h, fw[0], fw[1]).split([self.n_heads * hd, self.n_kv * hd, self.n_kv * hd], dim=-1)
        q, k, v = q.view(B, T, -1, hd), k.view(B, T, -1, hd), v.view(B, T, -1, hd)  # (B, T, heads, hd)
        if self.qk_norm:
            q, k = at.q_norm(q), at.k_norm(k)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B or 1, T, 1, hd)
        q = q * cos + _rotate_half(q) * sin  # rotated in the projections' layout; attention reads a transposed view
        k = k * cos + _rotate_half(k) * sin
        o = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, T, hd)
        o = at.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        if self.sandwich:
            x = x + layer.post_attention_layernorm(o)
            h = layer.pre_feedforward_layernorm(x)
        else:
            x = x + o
            h = layer.post_attention_layernorm(x)
        if fw is None:
            m = mlp(h)
        else:
            g, u = F.linear(h, fw[2], fw[3]).chunk(2, dim=-1)
            m = mlp.down_proj(mlp.act_fn(g) * u)
        if self.sandwich:
            m = layer.post_feedforward_layernorm(m)
        return x + m

    def causal_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                         window: int | None, gqa: bool = False) -> torch.Tensor:
        """Causal (and sliding-window) self-attention within one sequence; right padding needs no mask.

        `gqa=True` (what `hidden_batches` passes in bf16/fp16 on CUDA, where it runs SDPA under the flash backend
        alone) gives SDPA the K/V heads as they are (`enable_gqa`): flash reads grouped heads natively. Otherwise the
        K/V heads are repeated for the query heads first (as HF's `repeat_kv`): the GQA flag could send the inputs
        to the math kernel, which materialises every (T x T) score matrix. On CUDA, repeating them (and cuDNN's
        attention) held compiled extraction at 0.49M tok/s against 1.09M this way (H200 probe, BENCHMARKS §2)."""
        T = q.shape[2]
        g = self.n_heads // self.n_kv
        plain = self.attn_softcap is None and (window is None or T <= window)
        if plain and g > 1 and gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
        k, v = (k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)) if g > 1 else (k, v)
        if plain:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
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

    def hidden_at(self, ids: torch.Tensor, layer: int, tables=None, block_fn: Callable | None = None,
                  fused: "FusedWeights | None" = None, gqa: bool = False) -> torch.Tensor:
        """Output of block `layer` for right-padded ids (B, T): (B, T, D). Blocks after `layer` never run.
        `gqa`: see `causal_attention` (only under SDPA's flash backend)."""
        x = self.embed(ids)
        T = ids.shape[1]
        tables = tables or self.rope_tables(T, ids.device, x.dtype)
        block_fn = block_fn or causal_block
        # cos/sin written out at (B, T, hd) once a batch: a table broadcast over rows makes the compiled RoPE index
        # it by position modulo the symbolic T, an integer division per element that held the kernel far below
        # bandwidth; a full table is indexed by token (the same flat index as q's (B, T) rows)
        B = ids.shape[0]
        rows = {lt: (c[:T].expand(B, T, -1).contiguous(), s[:T].expand(B, T, -1).contiguous())
                for lt, (c, s) in tables.items()}
        for i in range(layer + 1):
            cos, sin = rows[self.layer_types[i]]
            fw = fused.per_layer[i] if fused is not None else None
            x = block_fn(self, self.layers[i], fw, x, cos, sin, self.scaling[i], self.windows[i], gqa)
        return x


def causal_block(a: Arch, layer: torch.nn.Module, fw: tuple | None, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 scale: float, window: int | None, gqa: bool = False) -> torch.Tensor:
    """One block over whole sequences (B, T, D) with causal self-attention (compiled once for every layer)."""

    def attend(q, k, v):
        return a.causal_attention(q, k, v, scale, window, gqa)

    return a.block(layer, x, cos, sin, attend, fw)


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


class FusedWeights:
    """Concatenated q/k/v and gate/up weights per layer (one matmul each instead of three and two).

    Only for plain `nn.Linear` projections (not LoRA wrappers). `refresh()` copies new values in place when a
    source parameter changed in place (its version counter moved), so a captured CUDA graph stays valid.
    """

    def __init__(self, a: Arch):
        self.sources = [(lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj, lay.mlp.gate_proj, lay.mlp.up_proj)
                        for lay in a.layers]
        self.per_layer = [self._build(src) for src in self.sources]
        self._versions = self._version_key()

    @staticmethod
    def possible(a: Arch) -> bool:
        plain = lambda m: type(m) is torch.nn.Linear  # noqa: E731 - exact type: LoRA layers must keep their forward
        return all(all(plain(getattr(lay.self_attn, n, None)) for n in ("q_proj", "k_proj", "v_proj"))
                   and all(plain(getattr(lay.mlp, n, None)) for n in ("gate_proj", "up_proj"))
                   and hasattr(lay.mlp, "act_fn") and hasattr(lay.mlp, "down_proj") for lay in a.layers)

    @staticmethod
    def _cat(mods, attr):
        parts = [getattr(m, attr) for m in mods]
        return None if any(p is None for p in parts) else torch.cat([p.detach() for p in parts], 0)

    def _build(self, src) -> tuple:
        qkv, gu = src[:3], src[3:]
        return (self._cat(qkv, "weight"), self._cat(qkv, "bias"), self._cat(gu, "weight"), self._cat(gu, "bias"))

    def _version_key(self) -> tuple:
        return tuple(p._version for src in self.sources for m in src for p in m.parameters())

    def refresh(self) -> None:
        if self._version_key() == self._versions:
            return
        for mine, src in zip(self.per_layer, self.sources):
            for dst, new in zip(mine, self._build(src)):
                if dst is not None:
                    dst.copy_(new)
        self._versions = self._version_key()


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


def _to_device(x: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device`; to CUDA from pinned memory, so the copy does not wait for the queued kernels
    (a copy from pageable memory synchronises the stream, and the host then falls behind the GPU)."""
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
    return _to_device(ids, device), _to_device(torch.tensor([len(r) for r in rows]), device)


@torch.no_grad()
def hidden_batches(model: torch.nn.Module, rows: list[list[int]], layer: int, *, max_batch_tokens: int = 65536,
                   pad_id: int = 0, dtype: torch.dtype | None = None, compile: bool = False,
                   fuse: bool | None = None) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Output of block `layer` for token rows, in length-sorted, right-padded batches with no attention mask.

    With right padding a causal model never lets a real token see a pad, so no mask is needed and the flash
    kernel applies. Blocks after `layer` never run. `compile` compiles one block (dynamic shapes) and reuses it
    for every layer; `fuse` (default: on CUDA) concatenates q/k/v and gate/up weights of plain Linear layers.
    Yields ``(row indices, hidden (b, T, D), lengths (b,))`` with hidden on the model's device (padded positions
    hold garbage: slice by length).
    """
    a = Arch(model)
    p = next(unwrap(model).parameters())
    fuse = p.device.type == "cuda" if fuse is None else fuse
    fused = FusedWeights(a) if fuse and FusedWeights.possible(a) else None
    block_fn = torch.compile(causal_block, dynamic=True) if compile else causal_block
    tables = None
    # bf16/fp16 on CUDA: grouped K/V heads straight into SDPA's flash kernel (see Arch.causal_attention)
    gqa = p.device.type == "cuda" and (dtype or p.dtype) in (torch.bfloat16, torch.float16)
    for idx in sorted_batches([len(r) for r in rows], max_batch_tokens):
        ids, lengths = _pad([rows[i] for i in idx], pad_id, p.device)
        if tables is None or tables[a.layer_types[0]][0].shape[0] < ids.shape[1]:
            tables = a.rope_tables(max(ids.shape[1], 512), p.device, dtype or p.dtype)
        with torch.autocast(device_type=p.device.type, dtype=dtype, enabled=dtype is not None and dtype != p.dtype), \
                _flash_only(gqa):
            h = a.hidden_at(ids, layer, tables, block_fn, fused, gqa=gqa)
        yield idx, h, lengths


def _flash_only(on: bool):
    """SDPA restricted to its flash kernel while a batch runs (when `on`), else as configured. Set around the
    compiled blocks, not inside them: the backend is chosen when the graph is traced."""
    import contextlib

    if not on:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


@torch.no_grad()
def extract_rows(model: torch.nn.Module, rows: list[list[int]], layer: int, *, max_batch_tokens: int = 65536,
                 pad_id: int = 0, dtype: torch.dtype | None = None, to_cpu: bool = True, compile: bool = False,
                 fuse: bool | None = None) -> list[torch.Tensor]:
    """Layer-`layer` activations of every token of every row: one (len, D) tensor per row, in input order."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    for idx, h, lengths in hidden_batches(model, rows, layer, max_batch_tokens=max_batch_tokens, pad_id=pad_id, dtype=dtype,
                                          compile=compile, fuse=fuse):
        for j, i in enumerate(idx):
            v = h[j, : int(lengths[j])]
            out[i] = v.float().cpu() if to_cpu else v
    return out  # type: ignore[return-value]


@torch.no_grad()
def ar_score_rows(ar, rows: list[list[int]], *, max_batch_tokens: int = 65536, dtype: torch.dtype | None = None,
                  compile: bool = False, fuse: bool | None = None) -> torch.Tensor:
    """AR predictions for tokenised AR prompts (`Reconstructor` backbone + value head at the last token), (N, D)."""
    out = torch.zeros(len(rows), ar.meta.d_model, device=ar.device)
    for idx, h, lengths in hidden_batches(ar.backbone, rows, ar.meta.layer, max_batch_tokens=max_batch_tokens,
                                          pad_id=0, dtype=dtype, compile=compile, fuse=fuse):
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]  # (b, D) read at the last real token
        out[_to_device(torch.tensor(idx), out.device)] = ar.value_head(last.to(ar.value_head.weight.dtype)).float()
    return out


def ar_rows(ar, explanations: list[str]) -> list[list[int]]:
    """Token rows of AR prompts exactly as `Reconstructor.encode` builds them (unpadded)."""
    return [ar.tokenizer.encode(ar.format(e), add_special_tokens=True) for e in explanations]


# ---- one block of the decode step ------------------------------------------------------------------------
def decode_layer(a: Arch, layer: torch.nn.Module, fw: tuple | None, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 kc: torch.Tensor, vc: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, rows: torch.Tensor,
                 t: torch.Tensor, pmask: torch.Tensor | None, rmask: torch.Tensor, scale: float, attn: str,
                 prefix_fp32: bool = True) -> torch.Tensor:
    """One block for one new token per row. x (B, 1, D); kc/vc (B, KV, L, hd) per-row cache, written at t (B,);
    kp/vp (KV, S, hd) shared prefix; pmask (B, S) / rmask (B, L) visible keys. Returns (B, 1, D).

    `attn` says how the row part of attention runs. "reduce" (the compiled default) writes it as
    broadcast-multiply-and-sum: inductor turns it into fused reductions that read the bf16 cache once and accumulate
    in fp32, where batched cuBLAS calls of (g x hd) @ (hd x L) ran at a fraction of bandwidth (H100 profile).
    "matmul" uses matmuls (eager). "triton" is one Triton kernel a layer for both parts (`nlakit.kernels`), which also
    writes the new k/v into the caches. "flex" runs both parts through PyTorch's FlexAttention (its decoding kernel
    for the row cache when compiled on CUDA; a reference loop in eager), joined by their log-sum-exps.
    `prefix_fp32=False` runs the reduce path's two shared-prefix GEMMs in the model's dtype (cuBLAS accumulates bf16
    in fp32; the scores are rounded to bf16 once, as in the matmul path) instead of casting q, K and V to fp32.
    """
    B = x.shape[0]

    def attend(q, k, v):  # q (B, H, 1, hd), k/v (B, KV, 1, hd)
        if attn == "triton":  # the op writes the new k/v into the caches itself: see nlakit.kernels
            from nlakit.kernels import decode_attention

            return decode_attention(q, k, v, kc, vc, kp, vp, rmask if pmask is None else pmask, rmask, rows, t,
                                    scale, float(a.attn_softcap or 0.0), pmask is not None)
        kc[rows, :, t] = k[:, :, 0]
        vc[rows, :, t] = v[:, :, 0]
        if attn == "reduce":
            return _attend_reduce(a, q, kc, vc, kp, vp, pmask, rmask, scale, prefix_fp32)
        if attn == "flex":
            return _attend_flex(a, q, kc, vc, kp, vp, pmask, rmask, scale)
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

    return a.block(layer, x, cos, sin, attend, fw)


def _prefix_scores(a: Arch, qm, kp, pmask, scale: float, pd: torch.dtype) -> torch.Tensor:
    """fp32 scores of queries qm (B, KV, g, hd) against the shared prefix keys kp (KV, S, hd), the GEMM's inputs in
    `pd`; keys pmask (B, S) hides are -inf. (B, KV, g, S)."""
    sp = a.softcap(torch.einsum("bkgd,ksd->bkgs", qm.to(pd), kp.to(pd)).float() * scale)
    return sp if pmask is None else sp.masked_fill(~pmask[:, None, None], float("-inf"))


def _attend_flex(a: Arch, q, kc, vc, kp, vp, pmask, rmask, scale: float) -> torch.Tensor:
    """Decode attention as two FlexAttention calls joined by their log-sum-exps under one softmax: the row cache
    (B, KV, L, hd), one query per row (its decoding kernel when compiled on CUDA), and the shared prefix (KV, S, hd)
    as one sequence of B queries, one per row, against the S prefix keys. GQA, visible keys and any softcap are in
    the calls' score_mods. pmask (B, S) may hide every prefix key of a row (a sliding window); the row part always
    has the row's own new key."""
    from torch.nn.attention.flex_attention import flex_attention

    B = q.shape[0]
    cap = a.attn_softcap

    def capped(score):
        return score if cap is None else torch.tanh(score / cap) * cap

    def row_mod(score, b, h, q_idx, kv_idx):
        return torch.where(rmask[b, kv_idx], capped(score), -float("inf"))

    def prefix_mod(score, b, h, q_idx, kv_idx):  # q_idx is the row
        return capped(score) if pmask is None else torch.where(pmask[q_idx, kv_idx], capped(score), -float("inf"))

    o_r, lse_r = flex_attention(q, kc, vc, score_mod=row_mod, scale=scale, enable_gqa=True, return_lse=True)
    o_p, lse_p = flex_attention(q.transpose(0, 2), kp[None], vp[None], score_mod=prefix_mod, scale=scale,
                                enable_gqa=True, return_lse=True)  # (1, H, B, hd), (1, H, B)
    o_p, lse_p = o_p.transpose(0, 2).float(), lse_p.transpose(0, 2).float()[..., None]  # (B, H, 1, hd), (B, H, 1, 1)
    lse_r = lse_r.float()[..., None]
    m = torch.maximum(lse_p, lse_r)  # finite: the row part is never empty
    wp, wr = torch.exp(lse_p - m), torch.exp(lse_r - m)  # each part's share of the softmax's total weight
    o = (torch.where(wp > 0, o_p, 0.0) * wp + o_r.float() * wr) / (wp + wr)
    return o.to(q.dtype)


def _attend_reduce(a: Arch, q, kc, vc, kp, vp, pmask, rmask, scale: float, prefix_fp32: bool = True) -> torch.Tensor:
    """Decode attention in fp32 over the shared prefix (small GEMMs) and the row cache (fused reductions).
    `prefix_fp32=False`: the prefix GEMMs take their inputs in the model's dtype and only their outputs go to fp32."""
    B = q.shape[0]
    pd = torch.float32 if prefix_fp32 else kp.dtype  # the prefix GEMMs' input dtype; cuBLAS accumulates in fp32
    qm = q.view(B, a.n_kv, -1, a.head_dim)  # (B, KV, g, hd)
    qg = qm.float()
    sp = _prefix_scores(a, qm, kp, pmask, scale, pd)  # (B, KV, g, S)
    sr = a.softcap((qg[:, :, :, None, :] * kc[:, :, None]).sum(-1) * scale)  # (B, KV, g, L)
    sr = sr.masked_fill(~rmask[:, None, None], float("-inf"))
    m = torch.maximum(sp.amax(-1), sr.amax(-1))[..., None]  # (B, KV, g, 1): one softmax over both parts
    ep, er = torch.exp(sp - m), torch.exp(sr - m)
    op = torch.einsum("bkgs,ksd->bkgd", ep.to(pd), vp.to(pd)).float()  # probabilities in [0, 1] lose little in bf16
    o = op + (er[..., None] * vc[:, :, None]).sum(-2)  # (B, KV, g, hd)
    o = o / (ep.sum(-1, keepdim=True) + er.sum(-1, keepdim=True))
    return o.to(q.dtype).reshape(B, a.n_heads, 1, a.head_dim)
