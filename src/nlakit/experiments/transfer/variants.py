"""Fine-tuned variants of a target that carry a behaviour (frustration at impossible maths): SFT and DPO.

    nlakit variants build --target smollm2 --out runs/variants          # runs/variants/sft, runs/variants/dpo
    nlakit variants score --models smollm2,runs/variants/sft,runs/variants/dpo --out runs/variants/score.json

Both variants start from the instruction-tuned target, train a LoRA adapter with TRL (PEFT), merge it into the
weights (`merge_and_unload`) and save a plain HF directory (safetensors + tokenizer + ``variant.json``), so a
variant loads back with `nlakit.targets.load_target(dir)` like any model. The TRL/LoRA/merge/save path is shared
with the language-switch variant (`nlakit.experiments.common.train_sft`).

- **SFT**: `trl.SFTTrainer` on (prompt, frustrated response) pairs in chat format; loss on the completion only.
- **DPO**: `trl.DPOTrainer`, sigmoid loss (Rafailov et al. 2023), chosen = frustrated, rejected = calm, the frozen
  reference being the same model with the adapter disabled.

`nlakit.experiments.transfer.score.score_models` checks that the behaviour changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.experiments.common import (
    LORA_MODULES,
    VARIANT_FORMAT,
    VARIANT_META,
    FinetuneConfig,
    Progress,
    VariantResult,
    chat_pair,
    check_lengths,
    load_base,
    lora_config,
    progress_callback,
    quiet_datasets,
    quiet_trainer,
    save_variant,
    train_sft,
    trainable_copy,
    trainer_args,
    variant_info,
)
from nlakit.experiments.transfer.behaviour import BehaviourExample, dataset_digest, load_dataset
from nlakit.peft_compat import quiet_peft

log = logging.getLogger(__name__)

__all__ = ["BUILDERS", "LORA_MODULES", "VARIANT_FORMAT", "VARIANT_META", "VariantConfig", "VariantResult", "build_dpo", "build_sft",
           "build_variants", "variant_info"]


@dataclass(frozen=True)
class VariantConfig(FinetuneConfig):
    """Everything `build_sft` / `build_dpo` need: the shared LoRA knobs plus each method's own. Saved in ``variant.json``."""

    sft_lr: float = 2e-4
    dpo_lr: float = 1e-4  # LoRA DPO: higher than full-weight DPO recipes (5e-7..5e-6); untuned here
    dpo_beta: float = 0.1

    def problems(self) -> list[str]:
        return super().problems() + [f"{n}={getattr(self, n)} must be > 0" for n in ("sft_lr", "dpo_lr", "dpo_beta")
                                     if getattr(self, n) <= 0]


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers


def _train_examples(cfg: VariantConfig) -> list[BehaviourExample]:
    examples = load_dataset(cfg.dataset, split="train")
    if cfg.n_train is not None:
        examples = examples[: cfg.n_train]
    return examples


def _dataset_meta(cfg: VariantConfig, examples: list[BehaviourExample]) -> dict:
    return {"path": cfg.dataset or "shipped", "digest": dataset_digest(examples), "n_train": len(examples)}


# ---------------------------------------------------------------------------------------------------------------------
# The two variants


def build_sft(cfg: VariantConfig, *, target=None, progress: Progress | None = None) -> VariantResult:
    """SFT variant: LoRA on (prompt -> frustrated response), completion-only loss, merged and saved to ``out_dir/sft``.

    Args:
        cfg: the variant config.
        target: an already-loaded base `Target` (left untouched); loaded from ``cfg.target`` when None.
        progress: optional ``(task, step, total)`` callback.
    Returns:
        A `VariantResult` with the saved directory.
    """
    examples = _train_examples(cfg)
    target = load_base(cfg, target)
    rows = [chat_pair(e.prompt, e.frustrated) for e in examples]
    return train_sft(cfg, target, rows, kind="sft", lr=cfg.sft_lr, dataset=_dataset_meta(cfg, examples), progress=progress)


def build_dpo(cfg: VariantConfig, *, target=None, progress: Progress | None = None) -> VariantResult:
    """DPO variant: sigmoid DPO with chosen = frustrated, rejected = calm; reference = the base (adapter off).

    Args:
        cfg: the variant config (``dpo_lr``, ``dpo_beta``).
        target: an already-loaded base `Target` (left untouched); loaded from ``cfg.target`` when None.
        progress: optional ``(task, step, total)`` callback.
    Returns:
        A `VariantResult` with the saved directory (``out_dir/dpo``).
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    examples = _train_examples(cfg)
    target = load_base(cfg, target)
    check_lengths(target, [chat_pair(e.prompt, e.frustrated) for e in examples], cfg.max_length)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": e.prompt}],
                               "chosen": [{"role": "assistant", "content": e.frustrated}],
                               "rejected": [{"role": "assistant", "content": e.calm}]} for e in examples])
    model = trainable_copy(target)
    out = Path(cfg.out_dir) / "dpo"
    args = DPOConfig(**trainer_args(cfg, target.device, out, cfg.dpo_lr), beta=cfg.dpo_beta, loss_type=["sigmoid"])
    t0 = time.time()
    with quiet_datasets():
        with quiet_peft():  # TRL wraps the model with PEFT, which reads a deprecated transformers property
            trainer = quiet_trainer(DPOTrainer(model=model, args=args, train_dataset=data, processing_class=target.tokenizer,
                                               peft_config=lora_config(cfg, model), callbacks=[progress_callback("dpo", progress)]))
            trainer.train()
    return save_variant(trainer, target, out, "dpo", cfg, _dataset_meta(cfg, examples), time.time() - t0)


BUILDERS: dict[str, Callable[..., VariantResult]] = {"sft": build_sft, "dpo": build_dpo}


def build_variants(cfg: VariantConfig, kinds: tuple[str, ...] = ("sft", "dpo"), *, target=None,
                   progress: Progress | None = None) -> list[VariantResult]:
    """Build each requested variant from one loaded base (loaded once)."""
    unknown = [k for k in kinds if k not in BUILDERS]
    if unknown or not kinds:
        raise NlakitError(f"unknown variant kinds {unknown}" if unknown else "no variant kinds given", f"use a subset of {list(BUILDERS)}")
    _train_examples(cfg)  # validate the dataset before loading a model
    target = load_base(cfg, target)
    return [BUILDERS[k](cfg, target=target, progress=progress) for k in kinds]
