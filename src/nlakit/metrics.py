"""Reconstruction metrics: one definition each (`nla-checkpoint-format.md` §7).

Write ``n(x) = x / ||x||_2 * s`` with ``s = sqrt(d)`` (norm in fp32, clamped at 1e-12); p = prediction, g = gold.

- ``cosine(p, g)``: raw cosine similarity.
- ``mse_nrm(p, g) = mean_d (n(p) - n(g))^2 = 2 (1 - cos)``; 0 = perfect, 2 = orthogonal.
- ``fve_nrm(p, g, mu) = 1 - mse_nrm / B`` with ``B = mean_d (n(g) - mu)^2`` averaged over the reference set,
  i.e. ``B = 1 - ||mu||^2 / d``, where ``mu`` is the mean of ``n(g)`` over the *training* vectors (stored in the
  bundle, never the evaluation batch). 0 = as good as predicting mu, 1 = perfect. This is the headline.
- ``fve_raw(p, g, mean_raw, var_raw)``: ``1 - ||p - g||^2 / V`` with ``V = E||g - mean_raw||^2`` over the reference
  set. Direction-only predictors (the AR) are rescaled to the reference mean norm first (`at_norm`).

Per-item values are aggregated with `summarize` (mean and a seeded percentile-bootstrap 95% interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def normalize(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``x / ||x|| * scale`` row-wise in fp32 (``scale`` defaults to sqrt(d))."""
    x = x.float()
    scale = math.sqrt(x.shape[-1]) if scale is None else scale
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) * scale


def cosine(pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per row, (N,)."""
    return torch.nn.functional.cosine_similarity(pred.float(), gold.float(), dim=-1, eps=1e-12)


def mse_nrm(pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Mean over dims of (n(p) - n(g))^2 at scale sqrt(d), per row, (N,). Equals 2 (1 - cos)."""
    return (normalize(pred) - normalize(gold)).pow(2).mean(dim=-1)


def fve_baseline(mu_nrm: torch.Tensor) -> float:
    """B = 1 - ||mu||^2 / d for a reference mean of sqrt(d)-normalised vectors."""
    d = mu_nrm.shape[-1]
    return float(1.0 - mu_nrm.float().pow(2).sum() / d)


def fve_nrm(pred: torch.Tensor, gold: torch.Tensor, mu_nrm: torch.Tensor) -> torch.Tensor:
    """Per-row ``1 - mse_nrm / B``, (N,). Its mean is the logged fve_nrm."""
    return 1.0 - mse_nrm(pred, gold) / fve_baseline(mu_nrm)


def at_norm(pred: torch.Tensor, norm: float) -> torch.Tensor:
    """Rescale direction-only predictions to a fixed norm (the training-set mean norm)."""
    return normalize(pred, norm)


def fve_raw(pred: torch.Tensor, gold: torch.Tensor, mean_raw: torch.Tensor, var_raw: float) -> torch.Tensor:
    """Per-row ``1 - ||p - g||^2 / V``, V = E||g - mean_raw||^2 over the reference set, (N,)."""
    return 1.0 - (pred.float() - gold.float()).pow(2).sum(dim=-1) / var_raw


@dataclass(frozen=True)
class Reference:
    """Training-set statistics that FVE is centred on. Computed once from training vectors, stored in bundles."""

    mu_nrm: torch.Tensor  # (d,) mean of sqrt(d)-normalised training vectors
    mean_raw: torch.Tensor  # (d,) mean of raw training vectors
    var_raw: float  # E||g - mean_raw||^2 over the training vectors
    norm_mean: float  # mean raw L2 norm
    n: int  # number of training vectors used

    @classmethod
    def from_vectors(cls, vectors: torch.Tensor) -> "Reference":
        v = vectors.float()
        mean_raw = v.mean(0)
        return cls(mu_nrm=normalize(v).mean(0), mean_raw=mean_raw, var_raw=float((v - mean_raw).pow(2).sum(-1).mean()),
                   norm_mean=float(v.norm(dim=-1).mean()), n=int(v.shape[0]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mu_nrm": self.mu_nrm.contiguous(), "mean_raw": self.mean_raw.contiguous(),
                "stats": torch.tensor([self.var_raw, self.norm_mean, float(self.n)], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "Reference":
        var_raw, norm_mean, n = t["stats"].tolist()
        return cls(mu_nrm=t["mu_nrm"].float(), mean_raw=t["mean_raw"].float(), var_raw=var_raw, norm_mean=norm_mean, n=int(n))


def score(pred: torch.Tensor, gold: torch.Tensor, ref: Reference, *, direction_only: bool = False) -> dict[str, torch.Tensor]:
    """Every per-item metric for one predictor: fve_nrm, fve_raw, cos, mse_nrm, each (N,)."""
    raw_pred = at_norm(pred, ref.norm_mean) if direction_only else pred.float()
    return {
        "fve_nrm": fve_nrm(pred, gold, ref.mu_nrm),
        "fve_raw": fve_raw(raw_pred, gold, ref.mean_raw, ref.var_raw),
        "cos": cosine(pred, gold),
        "mse_nrm": mse_nrm(pred, gold),
    }


def by_position(values) -> list[float]:
    """Per-position values as results JSON keeps them (5 decimals, in their order), for paired comparisons of runs."""
    return [round(float(v), 5) for v in values]


def summarize(values, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean with a percentile-bootstrap 95% interval: {"mean", "ci95": [lo, hi], "n"}."""
    x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(x.mean()), "ci95": [float(lo), float(hi)], "n": int(x.size)}
