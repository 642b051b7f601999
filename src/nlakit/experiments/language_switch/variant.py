"""The language-switch variant: LoRA SFT (TRL) of an instruction-tuned target on the language-switch dataset, merged.

    nlakit variants build --kind language-switch --target smollm2 --out runs/variants     # -> runs/variants/language-switch

Cue prompts are answered in the cue's language, controls in English (`dataset`). Training is the shared TRL path
(`nlakit.experiments.common.train_sft`: completion-only loss, LoRA merged with `merge_and_unload`, saved as a plain HF
directory with ``variant.json``), the same one the frustration SFT variant uses. `score.score_models` checks that the
behaviour changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlakit.experiments.common import (
    FinetuneConfig,
    Progress,
    VariantResult,
    chat_pair,
    load_base,
    train_sft,
)
from nlakit.experiments.language_switch.dataset import dataset_digest, load_dataset

KIND = "language-switch"


@dataclass(frozen=True)
class SwitchVariantConfig(FinetuneConfig):
    """The shared LoRA knobs plus the learning rate. ``dataset`` None = the shipped language-switch file."""

    lr: float = 2e-4
    max_length: int = 256  # PUD prompts + answers are short (≤ 30 English words)

    def problems(self) -> list[str]:
        return super().problems() + ([f"lr={self.lr} must be > 0"] if self.lr <= 0 else [])


def train_rows(cfg: SwitchVariantConfig) -> tuple[list[dict], dict]:
    """The SFT rows (chat prompt → answer) of the train split, and what they came from (for ``variant.json``)."""
    examples = load_dataset(cfg.dataset, split="train")
    if cfg.n_train is not None:
        examples = examples[: cfg.n_train]
    meta = {"path": cfg.dataset or "shipped", "digest": dataset_digest(examples), "n_train": len(examples),
            "by_lang": {lang: sum(e.lang == lang for e in examples) for lang in sorted({e.lang for e in examples})}}
    return [chat_pair(e.prompt, e.answer) for e in examples], meta


def build_variant(cfg: SwitchVariantConfig, *, target=None, progress: Progress | None = None) -> VariantResult:
    """Train, merge and save the variant to ``out_dir/language-switch``.

    Args:
        cfg: the variant config.
        target: an already-loaded base `Target` (left untouched); loaded from ``cfg.target`` when None.
        progress: optional ``(task, step, total)`` callback.
    Returns:
        A `VariantResult` with the saved directory.
    """
    rows, meta = train_rows(cfg)  # validate the data before loading a model
    target = load_base(cfg, target)
    return train_sft(cfg, target, rows, kind=KIND, lr=cfg.lr, dataset=meta, progress=progress)
