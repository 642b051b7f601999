"""Seeded, batch-invariant sampling for the engine: counter-based uniforms and the Gumbel-max draw.

Every (seed, row) gets a 31-bit key; every (key, token counter, vocabulary entry) its own uniform, so the same
seed gives the same text whatever the batch size or refill order, and the draw compiles (no vocabulary cumsum).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


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
    """One token per row from softmax(logits / T), by the Gumbel-max trick. (B, V) -> (B,).

    Each (row key, token counter, vocabulary entry) gets its own counter-based uniform u, and the token is
    argmax(logits / T - log(-log u)): an exact draw from the softmax that needs no vocabulary-wide cumsum (which
    inductor failed to compile at some batch sizes), and the same seed still gives the same text whatever the
    batch size or refill order.
    """
    V = logits.shape[-1]
    vocab = torch.arange(V, device=logits.device)
    u = uniform(key[:, None], ctr[:, None] * V + vocab[None])  # (B, V); ctr * V + v < 2**31 for any real vocabulary
    gumbel = -torch.log(-torch.log(u))
    return (logits.float() / temperature + gumbel).argmax(-1)
