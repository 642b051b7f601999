"""One Triton kernel: the engine's decode attention over the shared prompt prefix and each row's own cache.

The profile of the compiled decode step (docs/BENCHMARKS.md §2) put two thirds of its time in attention written as
PyTorch ops: inductor's fused reductions reach a fraction of the bandwidth there, and FlexAttention at this shape
(1,024 rows of one query against 74 keys, plus 77 shared keys) was slower still. This kernel does the whole thing in
one launch a layer: one program per (row, KV head) holds the row's g query heads, streams the shared prefix keys
(the same for every row, so they stay in L2) and then the row's own keys, with one online softmax over both (fp32
statistics, fp32 accumulation, products in the model's dtype) and the visibility masks and any logit softcap applied
per key.

`decode_attention` is a `torch.library.custom_op`: `torch.compile` keeps it as one opaque call (inductor's own compile
of a user Triton kernel failed on torch 2.11, where plain Triton compiles it) and a CUDA graph captures its launch.
It needs Triton (shipped with CUDA builds of torch); on the CPU it runs only under Triton's interpreter
(``TRITON_INTERPRET=1``, which the tests use).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _softcapped(s, cap, HAS_CAP: tl.constexpr):
    if HAS_CAP:
        e = tl.exp(2.0 * s / cap)  # tanh(s / cap) * cap, written with exp (saturates to +-cap)
        s = cap - 2.0 * cap / (e + 1.0)
    return s


@triton.jit
def _attend_keys(q, m_i, l_i, acc, K, V, M, n_keys, sk_n, sk_d, sv_n, sv_d, sm_n, scale, cap,
                 HAS_MASK: tl.constexpr, HAS_CAP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    """Fold n_keys keys (K, V: (n, d) with the given strides; M: their visibility, when HAS_MASK) into the online
    softmax state (m_i, l_i, acc) of the queries q (BLOCK_G, BLOCK_D)."""
    d = tl.arange(0, BLOCK_D)
    dm = d < D
    for n0 in range(0, n_keys, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nm = n < n_keys
        k = tl.load(K + n[:, None] * sk_n + d[None, :] * sk_d, mask=nm[:, None] & dm[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BLOCK_G, BLOCK_N) fp32
        s = _softcapped(s, cap, HAS_CAP)
        vis = nm
        if HAS_MASK:
            vis = vis & (tl.load(M + n * sm_n, mask=nm, other=0) != 0)
        s = tl.where(vis[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # m_i starts finite, so a block with no visible key gives p = 0
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + n[:, None] * sv_n + d[None, :] * sv_d, mask=nm[:, None] & dm[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _decode_attention_kernel(Q, KN, VN, T, R, KC, VC, KP, VP, PM, RM, O,
                             sq_b, sq_h, sq_d, skn_b, skn_k, skn_d, svn_b, svn_k, svn_d, st_b, sr_b,
                             skc_b, skc_k, skc_l, skc_d, svc_b, svc_k, svc_l, svc_d,
                             skp_k, skp_s, skp_d, svp_k, svp_s, svp_d, spm_b, spm_s, srm_b, srm_l, so_b, so_h, so_d,
                             S, L, scale, cap,
                             G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_N: tl.constexpr, HAS_PMASK: tl.constexpr, HAS_CAP: tl.constexpr,
                             PREC: tl.constexpr):
    b = tl.program_id(0)  # the row
    kv = tl.program_id(1)  # the KV head; its query heads are kv * G ... kv * G + G - 1
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    qm = (g < G)[:, None] & (d < D)[None, :]
    h = kv * G + g
    q = tl.load(Q + b * sq_b + h[:, None] * sq_h + d[None, :] * sq_d, mask=qm, other=0.0)
    m_i = tl.full([BLOCK_G], -1e30, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    m_i, l_i, acc = _attend_keys(q, m_i, l_i, acc, KP + kv * skp_k, VP + kv * svp_k, PM + b * spm_b, S,
                                 skp_s, skp_d, svp_s, svp_d, spm_s, scale, cap, HAS_PMASK, HAS_CAP, D, BLOCK_D,
                                 BLOCK_N, PREC)
    # the row's cached keys before t (later positions hold nothing yet), then the step's own key and value: stored
    # into the cache at t and folded in from registers, so no program reads back what it has just written
    t = tl.load(T + b * st_b)
    c = tl.load(R + b * sr_b)  # the row's cache row
    dm = d < D
    k_new = tl.load(KN + b * skn_b + kv * skn_k + d * skn_d, mask=dm, other=0.0)
    v_new = tl.load(VN + b * svn_b + kv * svn_k + d * svn_d, mask=dm, other=0.0)
    tl.store(KC + c * skc_b + kv * skc_k + t * skc_l + d * skc_d, k_new, mask=dm)
    tl.store(VC + c * svc_b + kv * svc_k + t * svc_l + d * svc_d, v_new, mask=dm)
    m_i, l_i, acc = _attend_keys(q, m_i, l_i, acc, KC + c * skc_b + kv * skc_k, VC + c * svc_b + kv * svc_k,
                                 RM + b * srm_b, t, skc_l, skc_d, svc_l, svc_d, srm_l, scale, cap, True, HAS_CAP, D,
                                 BLOCK_D, BLOCK_N, PREC)
    s = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], 1) * scale  # (BLOCK_G,)
    s = _softcapped(s, cap, HAS_CAP)
    m_new = tl.maximum(m_i, s)
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new)
    l_i = l_i * alpha + p
    acc = acc * alpha[:, None] + p[:, None] * v_new.to(tl.float32)[None, :]
    o = acc / l_i[:, None]  # l_i > 0: a row always sees its own newest key
    tl.store(O + b * so_b + h[:, None] * so_h + d[None, :] * so_d, o.to(O.dtype.element_ty), mask=qm)


# launch settings of the kernel (keys per block, warps, pipeline stages), read at every launch
TUNING = {"BLOCK_N": 16, "num_warps": 1, "num_stages": 3}  # the fastest of 48 settings on an H200 (BENCHMARKS §2)


@torch.library.custom_op("nlakit::decode_attention", mutates_args=("kc", "vc"))
def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                     kp: torch.Tensor, vp: torch.Tensor, pmask: torch.Tensor, rmask: torch.Tensor, rows: torch.Tensor,
                     t: torch.Tensor, scale: float, softcap: float, has_pmask: bool) -> torch.Tensor:
    """Write each row's new key and value into its cache at position t, then attend: one new query per row over the
    shared prefix and the row's cache, under one softmax.

    q (B, H, 1, hd), k/v (B, KV, 1, hd) the step's new query, key and value; kc/vc (B, KV, L, hd) the rows' caches,
    written in place at (rows, :, t); kp/vp (KV, S, hd) the shared prefix; rmask (B, L) and, when `has_pmask`,
    pmask (B, S) say which keys each row sees (else pmask is ignored: pass any tensor; the new key at t is always
    seen, keys after t never); batch row b reads and writes cache row rows[b]; softcap 0 = none.
    Returns (B, H, 1, hd) in q's dtype.

    The write is inside the op (declared as mutating kc and vc) because an opaque op that only reads the caches
    makes the compiled step materialise the updated caches first: a pass over both whole caches every layer. It is
    inside the kernel, too: each program stores its row's new key and value and folds them in from registers, so a
    layer's attention is one launch with no index_put kernels beside it."""
    B, H, _, D = q.shape
    KV, L, S = kc.shape[1], kc.shape[2], kp.shape[1]
    o = torch.empty((B, H, 1, D), device=q.device, dtype=q.dtype)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32 models get fp32 products; bf16/fp16 ignore it
    block_d = max(16, triton.next_power_of_2(D))
    block_n = min(TUNING["BLOCK_N"], max(16, 8192 // block_d))  # wide heads (Gemma-3: 256) get smaller key blocks,
    #                                                              so the staged K/V tiles fit in shared memory
    _decode_attention_kernel[(B, KV)](
        q, k, v, t, rows, kc, vc, kp, vp, pmask, rmask, o,
        q.stride(0), q.stride(1), q.stride(3), k.stride(0), k.stride(1), k.stride(3), v.stride(0), v.stride(1),
        v.stride(3), t.stride(0), rows.stride(0), *kc.stride(), *vc.stride(), *kp.stride(), *vp.stride(),
        pmask.stride(0), pmask.stride(1), rmask.stride(0), rmask.stride(1), o.stride(0), o.stride(1), o.stride(3),
        S, L, scale, softcap if softcap else 1.0,
        G=H // KV, BLOCK_G=max(16, triton.next_power_of_2(H // KV)), D=D, BLOCK_D=block_d, BLOCK_N=block_n,
        HAS_PMASK=has_pmask, HAS_CAP=bool(softcap), PREC=prec,
        num_warps=TUNING["num_warps"], num_stages=TUNING["num_stages"])
    return o


@decode_attention.register_fake
def _(q, k, v, kc, vc, kp, vp, pmask, rmask, rows, t, scale, softcap, has_pmask):
    return torch.empty((q.shape[0], q.shape[1], 1, q.shape[3]), device=q.device, dtype=q.dtype)
