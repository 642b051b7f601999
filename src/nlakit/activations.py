"""Residual-stream activations of a target at layer L.

Convention (same as the released NLA checkpoints, `nla-checkpoint-format.md` §6): **layer K is the output of
decoder block K** (0-indexed), the residual stream after block K's attention and MLP adds. In Hugging Face
terms that is ``output_hidden_states[K + 1]`` (index 0 is the embeddings). The forward pass stops right after
block K: the later blocks never run.

Text is tokenized raw (no chat template) with ``add_special_tokens=True``, right-padded. Attention-sink
positions (position 0 and BOS, whose norm is ~100x the median on SmolLM2) are excluded by default and
flagged when asked for.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import torch

from nlakit.errors import NlakitError
from nlakit.targets import Encoding, Target

log = logging.getLogger(__name__)

# A position spec: "all", "last", a list of token indices (negative counts from the end),
# "span:START-END" (tokens overlapping that character span) or "match:STRING" (tokens inside each occurrence).
PositionSpec = Union[str, Sequence[int]]

SINK_NORM_RATIO = 20.0  # a position whose norm exceeds this multiple of the row's median norm is flagged as a sink


@dataclass
class DocActivations:
    """Activations of one text at one layer."""

    text: str
    layer: int
    token_ids: list[int]  # every token of the (possibly truncated) text
    offsets: list[tuple[int, int]]  # char span of every token
    positions: list[int]  # token indices the vectors belong to
    vectors: torch.Tensor  # (n, d_model) float32, raw (never normalised)
    is_sink: list[bool] = field(default_factory=list)  # per position

    def token_text(self, pos: int) -> str:
        s, e = self.offsets[pos]
        return self.text[s:e]


class _StopForward(Exception):
    pass


def run_to_layer(model: torch.nn.Module, layers: torch.nn.ModuleList, layer: int, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    """Run `model` on a batch and return the output of decoder block `layer`, (B, T, D); later blocks never run."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = layers[layer].register_forward_hook(hook)
    try:
        base = getattr(model, "model", model)  # the backbone: skip the LM head
        base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    assert "h" in captured, "block hook never fired"
    return captured["h"]


def resolve_positions(spec: PositionSpec, text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Token indices selected by `spec` for one text with `len(offsets)` tokens."""
    n = len(offsets)
    if isinstance(spec, str):
        if spec == "all":
            return list(range(n))
        if spec == "last":
            return [n - 1]
        if spec.startswith("span:"):
            m = re.fullmatch(r"span:(\d+)-(\d+)", spec)
            if not m:
                raise NlakitError(f"bad position spec {spec!r}", "write a character span as span:START-END, e.g. span:0-20")
            a, b = int(m.group(1)), int(m.group(2))
            out = [i for i, (s, e) in enumerate(offsets) if s < b and e > a and e > s]
            if not out:
                raise NlakitError(f"character span {a}-{b} covers no token of a {len(text)}-character text", "pick a span inside the text")
            return out
        if spec.startswith("match:"):
            needle = spec[len("match:") :]
            if not needle:
                raise NlakitError("empty match string", "write match:WORD")
            out: list[int] = []
            for m in re.finditer(re.escape(needle), text):
                out += [i for i, (s, e) in enumerate(offsets) if s < m.end() and e > m.start() and e > s and i not in out]
            if not out:
                raise NlakitError(f"{needle!r} does not occur in the text", "pick a string that occurs in the text")
            return out
        if re.fullmatch(r"-?\d+(,-?\d+)*", spec):
            return resolve_positions([int(x) for x in spec.split(",")], text, offsets)
        raise NlakitError(f"bad position spec {spec!r}", "use all, last, 3,5,-1, span:START-END or match:WORD")
    out = []
    for p in spec:
        q = p + n if p < 0 else p
        if not 0 <= q < n:
            raise NlakitError(f"position {p} is out of range for a text of {n} tokens", f"pick positions in -{n}..{n - 1}")
        out.append(q)
    return out


def _sink_flags(h: torch.Tensor, n: int, token_ids: list[int], special_ids: set[int]) -> list[bool]:
    norms = h[:n].float().norm(dim=-1)
    med = norms.median().clamp_min(1e-6)
    return [i == 0 or token_ids[i] in special_ids or bool(norms[i] > SINK_NORM_RATIO * med) for i in range(n)]


@torch.no_grad()
def extract(target: Target, texts: Iterable[str], layer: int, positions: PositionSpec | Callable[[str, int], PositionSpec] = "all",
            *, batch_size: int = 16, include_sinks: bool = False, max_length: int | None = None,
            dtype: torch.dtype | None = None, progress: Callable[[int], None] | None = None,
            shard: bool = False) -> list[DocActivations | None]:
    """Layer-`layer` activations of each text at the chosen positions.

    Args:
        target: the loaded target.
        texts: raw texts (no chat template is applied; render chats with `Target.chat_text` first).
        layer: block index K; the vector is the output of block K (= HF ``hidden_states[K+1]``).
        positions: a spec for every text, or a function ``(text, n_tokens) -> spec`` per text.
        include_sinks: keep attention-sink positions (flagged in ``is_sink``); by default they are dropped.
        dtype: autocast dtype on GPU (e.g. torch.bfloat16); vectors are always returned as float32.
        progress: called with the number of texts done after each batch.
        shard: under torchrun, run only this rank's batches (`nlakit.distributed.deal`: every world-th of the
            length-sorted batches, each as one process forms it); the other ranks' texts come back as None.
    Returns:
        One `DocActivations` per text, in input order. Batched and one-at-a-time give the same vectors.
    """
    from nlakit import distributed

    texts = list(texts)
    target.check_layer(layer)
    if not texts:
        return []
    special = set(getattr(target.tokenizer, "all_special_ids", []) or [])
    # length-sort so batches carry little padding; restore the order at the end
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: dict[int, DocActivations] = {}
    starts = range(0, len(order), batch_size)
    for s in distributed.deal(starts) if shard else starts:
        idx = order[s : s + batch_size]
        enc: Encoding = target.encode([texts[i] for i in idx], max_length=max_length)
        ids, mask = enc.input_ids.to(target.device), enc.attention_mask.to(target.device)
        with torch.autocast(device_type=ids.device.type, dtype=dtype, enabled=dtype is not None):
            h = run_to_layer(target.model, target.decoder_layers, layer, ids, mask)  # (B, T, D)
        h = h.float().cpu()
        for j, i in enumerate(idx):
            n = enc.lengths[j]
            token_ids = enc.input_ids[j, :n].tolist()
            spec = positions(texts[i], n) if callable(positions) else positions
            pos = resolve_positions(spec, texts[i], enc.offsets[j])
            sinks = _sink_flags(h[j], n, token_ids, special)
            if not include_sinks:
                dropped = [p for p in pos if sinks[p]]
                if dropped and isinstance(spec, (list, tuple)):
                    log.warning("text #%d: dropped attention-sink position(s) %s (pass include_sinks=True to keep them)", i, dropped)
                pos = [p for p in pos if not sinks[p]]
            results[i] = DocActivations(text=texts[i], layer=layer, token_ids=token_ids, offsets=enc.offsets[j], positions=pos,
                                        vectors=h[j, pos].clone(), is_sink=[sinks[p] for p in pos])
        if progress is not None:
            progress(len(idx))
    return [results.get(i) for i in range(len(texts))]


def save_shard(path: str | Path, docs: list[DocActivations], extra_meta: dict | None = None) -> Path:
    """Write activations to one safetensors shard: vectors (N, D), doc index, position and token id per row."""
    import json

    from safetensors.torch import save_file

    from nlakit.io import atomic_path

    rows = [(d_i, p, d.token_ids[p]) for d_i, d in enumerate(docs) for p in d.positions]
    vectors = torch.cat([d.vectors for d in docs]) if rows else torch.zeros(0, 0)
    tensors = {
        "vectors": vectors.contiguous(),
        "doc": torch.tensor([r[0] for r in rows], dtype=torch.int64),
        "position": torch.tensor([r[1] for r in rows], dtype=torch.int64),
        "token_id": torch.tensor([r[2] for r in rows], dtype=torch.int64),
    }
    meta = {"layer": str(docs[0].layer if docs else -1), "texts": json.dumps([d.text for d in docs])}
    meta.update({k: str(v) for k, v in (extra_meta or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_shard(path: str | Path) -> dict:
    """Read a shard written by `save_shard`: tensors plus metadata (texts as a list)."""
    import json

    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise NlakitError(f"{path} does not exist", "pass a shard written by `nlakit extract`")
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as e:
        raise NlakitError(f"{path} is corrupt or incomplete, not a readable safetensors file ({e})",
                          "re-run `nlakit extract` to rewrite it") from e
    out["meta"] = dict(meta)
    out["texts"] = json.loads(meta.get("texts", "[]"))
    return out
