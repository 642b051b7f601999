"""Checks on activation vectors, shared by the AV (`nlakit.verbalizer`), the engine and evaluation.

A leaf module (torch and `nlakit.errors` only), so `nlakit.engine` needs nothing from `nlakit.verbalizer`:
the verbalizer calls the engine, never the other way round.
"""

from __future__ import annotations

import torch

from nlakit.errors import NlakitError


def check_vectors(vectors: torch.Tensor, d_model: int) -> torch.Tensor:
    """Validate activation vectors: (N, d_model), finite, nonzero. Returns them as 2-D float32."""
    if not isinstance(vectors, torch.Tensor):
        vectors = torch.as_tensor(vectors)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[1] != d_model:
        raise NlakitError(f"vectors have shape {tuple(vectors.shape)}, expected (N, {d_model})",
                          f"pass activations of width d_model={d_model} from the NLA's target and layer")
    vectors = vectors.float()
    if not torch.isfinite(vectors).all():
        raise NlakitError("a vector contains NaN or inf", "drop non-finite activations before explaining them")
    if (vectors.norm(dim=-1) == 0).any():
        raise NlakitError("a vector is all zeros and has no direction to explain", "drop all-zero activations")
    return vectors
