"""The AR (activation reconstructor): the target truncated after block K, plus a linear head.

`nla-checkpoint-format.md` §5: the input is ``prompt_templates.ar`` with the stripped explanation filled in, a
plain string (no chat template) tokenised with ``add_special_tokens=True`` (BOS where the tokenizer adds one),
right-padded. Blocks 0..K are kept (K+1 layers), the final norm is replaced by Identity and the LM head is
dropped; ``value_head = Linear(d, d, bias=False)``, identity-initialised, is read at the last attended token.
The output's magnitude means nothing: use it as a direction.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

import torch
from torch import nn

from nlakit.errors import NlakitError
from nlakit.meta import NLAMeta
from nlakit.targets import decoder_layers, pad_id

log = logging.getLogger(__name__)

# Per-layer config lists that must be cut to K+1 entries along with the layers.
_PER_LAYER_KEYS = ("layer_types", "sliding_window_pattern", "no_rope_layers")


def truncate_config(config, n_layers: int):
    """A copy of an HF config with `n_layers` blocks and per-layer lists cut to match."""
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = n_layers
    for key in _PER_LAYER_KEYS:
        val = getattr(cfg, key, None)
        if isinstance(val, (list, tuple)):
            setattr(cfg, key, list(val)[:n_layers])
    return cfg


def truncated_backbone(model: nn.Module, layer: int) -> nn.Module:
    """A deep copy of the target's backbone keeping blocks 0..layer, with the final norm replaced by Identity."""
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    backbone = copy.deepcopy(base)
    layers = decoder_layers(backbone)
    if layer >= len(layers):
        raise NlakitError(f"layer {layer} is out of range for a model with {len(layers)} blocks", f"pick a layer below {len(layers)}")
    del layers[layer + 1 :]
    backbone.config = truncate_config(backbone.config, layer + 1)
    for attr in ("norm", "final_layernorm", "ln_f"):
        if hasattr(backbone, attr):
            setattr(backbone, attr, nn.Identity())
    return backbone


class Reconstructor(nn.Module):
    """AR: `backbone` (blocks 0..K, no final norm) + `value_head`. `forward` returns (B, D) at the read position."""

    def __init__(self, backbone: nn.Module, tokenizer, meta: NLAMeta, value_head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.meta = meta
        n = backbone.config.num_hidden_layers
        if n != meta.layer + 1:
            raise NlakitError(f"the AR backbone has {n} blocks but the sidecar names layer {meta.layer} (needs {meta.layer + 1})",
                              "load the AR checkpoint that matches this nla_meta.yaml")
        d = meta.d_model
        if value_head is None:
            value_head = nn.Linear(d, d, bias=False)
            with torch.no_grad():
                value_head.weight.copy_(torch.eye(d))
        if tuple(value_head.weight.shape) != (d, d):
            raise NlakitError(f"value head has shape {tuple(value_head.weight.shape)}, expected ({d}, {d})",
                              "use the value_head.safetensors saved with this AR")
        self.value_head = value_head.float()  # the format applies the head in fp32, whatever the backbone's dtype
        self._suffix_checked = False

    @classmethod
    def from_target(cls, target, meta: NLAMeta) -> "Reconstructor":
        """A fresh AR initialised from the target (blocks 0..K copied, identity head)."""
        target.check_layer(meta.layer)
        ar = cls(truncated_backbone(target.model, meta.layer), target.tokenizer, meta)
        return ar.to(target.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def format(self, explanation: str) -> str:
        return self.meta.ar_template.format(explanation=explanation.strip())

    def encode(self, explanations: list[str], max_length: int | None = None,
               pad_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (ids, mask) of the AR prompts, (B, T) each; T is the longest row rounded up to a multiple of
        `pad_to`."""
        texts = [self.format(e) for e in explanations]
        rows = self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []  # one batched call (Rust, parallel)
        if max_length is not None:  # keep the suffix: the read position must stay on the template's last token
            rows = [r if len(r) <= max_length else r[: max_length // 2] + r[-(max_length - max_length // 2) :] for r in rows]
        if not self._suffix_checked and self.meta.critic_suffix_ids and rows:
            tail = tuple(rows[0][-len(self.meta.critic_suffix_ids) :])
            if tail != tuple(self.meta.critic_suffix_ids):
                raise NlakitError(f"the AR prompt ends in {list(tail)}, the sidecar expects {list(self.meta.critic_suffix_ids)}",
                                  "use the AR's own tokenizer and prompt_templates.ar")
            self._suffix_checked = True
        T = -(-max(len(r) for r in rows) // pad_to) * pad_to
        pad = pad_id(self.tokenizer)
        ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows], dtype=torch.long).view(len(rows), T)
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], dtype=torch.long).view(len(rows), T)
        return ids, mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                read: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) predictions at the read position of each row: `read` (B,) where given, else the rightmost attended
        position of the (B, T) `attention_mask`. With `read`, the mask may be None or a 4D causal one: for right-padded
        rows (what `encode` gives) every real token then sees only real tokens, as with the padding mask (the form
        a CUDA graph captures, `nlakit.train.graphs.causal_mask`)."""
        mask = None if attention_mask is None else attention_mask.to(self.device)
        h = self.backbone(input_ids=input_ids.to(self.device), attention_mask=mask,
                          use_cache=False).last_hidden_state  # (B, T, D), no final norm
        if read is None:
            read = mask.cumsum(1).argmax(1)  # rightmost attended position, (B,)
        h_last = h[torch.arange(h.shape[0], device=h.device), read.to(h.device)]  # (B, D)
        with torch.autocast(device_type=h.device.type, enabled=False):  # fp32 head, as the format applies it
            return torch.nn.functional.linear(h_last.float(), self.value_head.weight.float())

    @torch.no_grad()
    def reconstruct(self, explanations: list[str], *, batch_size: int = 64, max_length: int = 512,
                    dtype: torch.dtype | None = None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Predicted activation directions for explanation texts, (N, D) float32."""
        if not explanations:
            return torch.zeros(0, self.meta.d_model)
        order = sorted(range(len(explanations)), key=lambda i: len(explanations[i]))
        out = torch.zeros(len(explanations), self.meta.d_model)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = self.encode([explanations[i] for i in idx], max_length=max_length)
            with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype is not None):
                out[idx] = self(ids, mask).float().cpu()
            if progress is not None:
                progress(len(idx))
        return out
