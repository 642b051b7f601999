"""Pieces every training stage shares: LoRA wrapping, the pair dataset, checkpoints, the time budget, held-out eval."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nlakit.errors import NlakitError
from nlakit.io import atomic_path, read_json, write_json
from nlakit.metrics import Reference

if TYPE_CHECKING:
    from nlakit.verbalizer import Verbalizer

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(module: torch.nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0):
    """Wrap `module` with a fresh PEFT LoRA adapter on every attention and MLP projection."""
    from peft import LoraConfig

    from nlakit.peft_compat import get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout, target_modules=LORA_TARGETS, bias="none")
    model = get_peft_model(module, cfg)
    return model


class MergedCopy:
    """A plain (un-wrapped) copy of a module whose LoRA adapters are merged, in `dtype`, refreshed in place.

    `sync()` writes W0 + delta(LoRA) of every adapted projection into the copy *in place* (the copy's tensors never
    move, so an engine or CUDA graph built on it stays valid), and copies any other trainable parameter as it is (a
    full fine-tune, PEFT modules_to_save). Frozen parameters never change in training and are copied once.
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype | None = None):
        plain = copy.deepcopy(module)
        plain = plain.merge_and_unload() if hasattr(plain, "merge_and_unload") else plain
        plain = plain.to(dtype) if dtype is not None else plain
        self.module = plain.requires_grad_(False).eval()
        plain_name = lambda n: n[len("base_model.model."):] if n.startswith("base_model.model.") else n  # noqa: E731
        modules, params = dict(plain.named_modules()), dict(plain.named_parameters())
        self._lora = [(m, modules[plain_name(n)].weight) for n, m in module.named_modules()
                      if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")]
        self._plain = [(p, params[plain_name(n)]) for n, p in module.named_parameters()
                       if p.requires_grad and "lora_" not in n and plain_name(n) in params]

    @torch.no_grad()
    def sync(self) -> "MergedCopy":
        for lora, weight in self._lora:
            merged = lora.base_layer.weight.float()
            if not getattr(lora, "merged", False):
                for name in lora.active_adapters:
                    merged = merged + lora.get_delta_weight(name).float()
            weight.copy_(merged)
        for src, dst in self._plain:
            dst.copy_(src)
        return self


def check_frozen_dtype(key: str, frozen_dtype: str | None, dtype: str | None) -> None:
    """A stage's `frozen_dtype` (config key `key`) is bfloat16 under bfloat16 autocast, or unset."""
    if frozen_dtype is not None and (frozen_dtype != "bfloat16" or dtype != "bfloat16"):
        raise NlakitError(f"{key} = {frozen_dtype!r} needs bfloat16 autocast, and this run's dtype is {dtype}",
                          f"set {key} to bfloat16 on a GPU run (bf16 autocast is its default), or leave it unset")


def freeze_to(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the frozen floating-point parameters of `module` to `dtype` in place; trainable ones (LoRA adapters, a head)
    stay as they are. PEFT's cast of each adapter's input to the adapter's dtype is turned off, so that under autocast
    the activations stay in `dtype` from the embeddings on: no activation-sized copy per adapted projection, forward or
    backward (what bounds a LoRA pass of a small model on a GPU). Checkpoints hold only the trainable parameters."""
    for p in module.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)
    for m in module.modules():
        if hasattr(m, "cast_input_dtype_enabled"):  # a PEFT tuner layer (peft.helpers.disable_input_dtype_casting)
            m.cast_input_dtype_enabled = False


def cast_frozen(key: str, frozen_dtype: str | None, dtype: str | None, *modules: torch.nn.Module) -> None:
    """A stage's `frozen_dtype` setting (config key `key`): checked, and when set, each module's frozen weights cast
    (`freeze_to`)."""
    check_frozen_dtype(key, frozen_dtype, dtype)
    if frozen_dtype is not None:
        for module in modules:
            freeze_to(module, getattr(torch, frozen_dtype))


class MergedAV:
    """An AV's merged copy (`MergedCopy`) as a Verbalizer, for fast decoding: ``MergedAV(av, torch.bfloat16).sync()``."""

    def __init__(self, av: Verbalizer, dtype: torch.dtype | None = None):
        from nlakit.verbalizer import Verbalizer

        self._copy = MergedCopy(av.model, dtype)
        self.verbalizer = Verbalizer(self._copy.module, av.tokenizer, av.meta)

    def sync(self) -> "MergedAV":
        self._copy.sync()
        return self


class MergedAR:
    """An AR's merged copy (backbone via `MergedCopy`, value head copied) as a Reconstructor, for fast rewards."""

    def __init__(self, ar, dtype: torch.dtype | None = None):
        from nlakit.reconstructor import Reconstructor

        self.source = ar
        self._copy = MergedCopy(ar.backbone, dtype)
        head = copy.deepcopy(ar.value_head).requires_grad_(False)
        self.reconstructor = Reconstructor(self._copy.module, ar.tokenizer, ar.meta, head).eval()

    @torch.no_grad()
    def sync(self) -> "MergedAR":
        self._copy.sync()
        self.reconstructor.value_head.weight.copy_(self.source.value_head.weight)
        return self


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Budget:
    """Wall-clock budget shared by all stages of one `train all` call."""

    def __init__(self, seconds: float | None):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.monotonic() - self.start)

    def out(self, margin: float = 0.0) -> bool:
        return self.left() <= margin


def parse_duration(text: str | None) -> float | None:
    """'9m', '90s', '1h', '300' -> seconds; None/'' -> no limit."""
    if text in (None, "", "none"):
        return None
    text = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError) as e:
        raise NlakitError(f"bad duration {text!r}", "write it like 9m, 540s or 1h") from e


# ---------------------------------------------------------------------------------------------------------------
# the pair dataset written by datagen
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """(activation, explanation) pairs with their split. vectors: (N, D) float32."""

    vectors: torch.Tensor
    rows: list[dict]  # per pair: doc, pos, token, kind, split, explanations {source: text}

    def split(self, name: str) -> "Pairs":
        idx = [i for i, r in enumerate(self.rows) if r["split"] == name]
        return Pairs(self.vectors[idx], [self.rows[i] for i in idx])

    def head(self, n: int | None) -> "Pairs":
        """The first `n` pairs (all of them for None or 0)."""
        return self if not n else Pairs(self.vectors[:n], self.rows[:n])

    def texts(self, source: str) -> list[str]:
        try:
            return [r["explanations"][source] for r in self.rows]
        except KeyError as e:
            known = sorted(self.rows[0]["explanations"]) if self.rows else []
            raise NlakitError(f"explanation source {source!r} is not in this dataset", f"use one of {known}") from e

    def __len__(self) -> int:
        return len(self.rows)


PAIRS_VECTORS = "pairs.safetensors"
PAIRS_ROWS = "pairs.jsonl"
REFERENCE = "reference.safetensors"


def save_pairs(directory: Path, pairs: Pairs) -> None:
    from safetensors.torch import save_file

    with atomic_path(directory / PAIRS_VECTORS) as tmp:
        save_file({"vectors": pairs.vectors.contiguous()}, str(tmp))
    with atomic_path(directory / PAIRS_ROWS) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in pairs.rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def load_pairs(directory: str | Path) -> Pairs:
    from nlakit.io import read_jsonl, read_safetensors

    directory = Path(directory)
    if not (directory / PAIRS_VECTORS).exists():
        raise NlakitError(f"{directory} holds no datagen output ({PAIRS_VECTORS} missing)", "run `nlakit datagen --out DIR` first")
    fix = f"delete {directory} and run datagen again"
    vectors = read_safetensors(directory / PAIRS_VECTORS, fix)["vectors"].float()
    rows = read_jsonl(directory / PAIRS_ROWS)
    assert len(rows) == vectors.shape[0], "pairs.jsonl and pairs.safetensors disagree"
    return Pairs(vectors, rows)


def load_reference_file(directory: str | Path) -> Reference:
    from nlakit.bundle import load_reference

    return load_reference(Path(directory) / REFERENCE)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints (small files: adapters, heads, optimiser state, RNG, step)
# ---------------------------------------------------------------------------------------------------------------
def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    from nlakit.io import loading

    with loading(path, f"delete {path} to restart this stage from its beginning"):
        return torch.load(path, map_location="cpu", weights_only=False)  # our own checkpoint, never a user-supplied file


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


def write_stage_done(directory: Path, name: str, summary: dict) -> None:
    write_json(directory / f"{name}.done.json", summary)


def stage_done(directory: Path, name: str) -> dict | None:
    p = directory / f"{name}.done.json"
    return read_json(p, f"delete {p} to run the stage again") if p.exists() else None


def cosine_lr(step: int, total: int, base: float, warmup: int = 20, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def batches(n: int, batch_size: int, *, seed: int, epochs: float = 1.0):
    """Shuffled index batches over `epochs` passes (fractional epochs allowed), (step, idx) pairs."""
    g = torch.Generator().manual_seed(seed)
    total = int(math.ceil(n * epochs / batch_size))
    perm = torch.randperm(n, generator=g)
    k = 0
    for step in range(total):
        if k + batch_size > n:
            perm = torch.randperm(n, generator=g)
            k = 0
        yield step, total, perm[k : k + batch_size]
        k += batch_size
