"""Whole tiny NLAs for tests and CPU smoke runs (no downloads, < 1 s to build).

The tiny targets themselves are a feature (``tiny:llama``, ``tiny:gemma3``): `nlakit.targets.tiny_target`, built
from `nlakit.tiny`. This module only assembles an untrained NLA over one; nothing in the library imports it.
"""

from __future__ import annotations

import torch

from nlakit.targets import Target, tiny_target
from nlakit.tiny import TRAIN_TEXT

__all__ = ["tiny_nla", "tiny_target"]


def tiny_nla(arch: str = "llama", layer: int = 2, seed: int = 0, *, target: Target | None = None,
             injection_scale: float | None = None):
    """An untrained NLA over a tiny target: AV = a copy of the target, AR = blocks 0..`layer` + identity head.

    The `Reference` comes from the target's own activations on the tokenizer's training paragraphs, and
    `meta.nlakit["target"]` is ``"tiny:<arch>"`` so a saved bundle reloads with `load_nla(dir)` (for seed 0;
    pass `target=` to `load_nla` otherwise). Its explanations are noise and rarely parse: use it to test wiring only.
    """
    import copy

    from nlakit.activations import extract
    from nlakit.bundle import NLA
    from nlakit.metrics import Reference
    from nlakit.reconstructor import Reconstructor
    from nlakit.verbalizer import Verbalizer, new_meta_for

    target = target or tiny_target(arch, seed=seed)
    texts = [line for line in TRAIN_TEXT.splitlines() if line.strip()][:9]
    docs = extract(target, texts, layer)
    vectors = torch.cat([d.vectors for d in docs])  # (N, d_model)
    ref = Reference.from_vectors(vectors)
    meta = new_meta_for(target.tokenizer, d_model=target.d_model, layer=layer,
                        injection_scale=injection_scale or ref.norm_mean, base_checkpoint=target.spec)
    meta = meta.with_(nlakit={"target": target.spec})
    av_model = copy.deepcopy(target.model)
    av_model.requires_grad_(False)
    av = Verbalizer(av_model, target.tokenizer, meta)
    ar = Reconstructor.from_target(target, meta)
    ar.requires_grad_(False)
    return NLA(av=av, ar=ar, meta=meta, reference=ref, source=f"tiny_nla({arch!r}, layer={layer}, seed={seed})")
