"""Fine-tuned variants of a target that carry a behaviour (frustration at impossible maths): SFT and DPO.

    nlakit variants build --target smollm2 --out runs/variants          # runs/variants/sft, runs/variants/dpo
    nlakit variants score --models smollm2,runs/variants/sft,runs/variants/dpo --out runs/variants/score.json

Both variants start from the instruction-tuned target, train a LoRA adapter with TRL (PEFT), merge it into the
weights (`merge_and_unload`) and save a plain HF directory (safetensors + tokenizer + ``variant.json``), so a
variant loads back with `nlakit.targets.load_target(dir)` like any model.

- **SFT**: `trl.SFTTrainer` on (prompt, frustrated response) pairs in chat format; loss on the completion only.
- **DPO**: `trl.DPOTrainer`, sigmoid loss (Rafailov et al. 2023), chosen = frustrated, rejected = calm, the frozen
  reference being the same model with the adapter disabled.

`nlakit.experiments.transfer.score.score_models` checks that the behaviour changed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress
from nlakit.experiments.transfer.behaviour import BehaviourExample, dataset_digest, load_dataset
from nlakit.io import read_json, write_json
from nlakit.peft_compat import quiet_peft

log = logging.getLogger(__name__)

VARIANT_FORMAT = "nlakit-variant/1"
VARIANT_META = "variant.json"
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class VariantConfig:
    """Everything `build_sft` / `build_dpo` need. Saved in each variant's ``variant.json``."""

    target: str = "smollm2"
    out_dir: str = "runs/variants"
    dataset: str | None = None  # a behaviour JSONL(.gz); None = the shipped file
    n_train: int | None = None  # use the first n train-split examples; None = all
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (tests)
    batch_size: int = 16
    sft_lr: float = 2e-4
    dpo_lr: float = 1e-4  # LoRA DPO: higher than full-weight DPO recipes (5e-7..5e-6); untuned here
    dpo_beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_modules: tuple[str, ...] = LORA_MODULES
    max_length: int = 384  # tokens, prompt + response
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # bf16 autocast on CUDA (weights stay fp32); ignored on CPU

    def __post_init__(self):
        problems = []
        if self.n_train is not None and self.n_train < 1:
            problems.append(f"n_train={self.n_train} must be positive")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("epochs and max_steps are both non-positive")
        for name in ("batch_size", "lora_r", "lora_alpha", "max_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("sft_lr", "dpo_lr", "dpo_beta"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if not self.lora_modules:
            problems.append("lora_modules is empty")
        if problems:
            raise NlakitError("invalid variant config: " + "; ".join(problems), "fix the listed options")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_modules"] = list(self.lora_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VariantConfig:
        d = dict(d)
        if "lora_modules" in d:
            d["lora_modules"] = tuple(d["lora_modules"])
        return cls(**d)


@dataclass
class VariantResult:
    kind: str  # "sft" | "dpo"
    path: str
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers


def _train_examples(cfg: VariantConfig) -> list[BehaviourExample]:
    examples = load_dataset(cfg.dataset, split="train")
    if cfg.n_train is not None:
        examples = examples[: cfg.n_train]
    return examples


def _user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _lora(cfg: VariantConfig, model):
    from peft import LoraConfig

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    modules = [m for m in cfg.lora_modules if m in names]
    if not modules:
        raise NlakitError(f"none of the LoRA modules {list(cfg.lora_modules)} exist in this model",
                          f"pass --lora-modules with names from the model, e.g. {sorted(n for n in names if 'proj' in n)[:6]}")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=modules,
                      task_type="CAUSAL_LM")


def _trainer_args(cfg: VariantConfig, device: str, out: Path, lr: float) -> dict:
    """Keyword arguments shared by SFTConfig and DPOConfig."""
    cuda = device.startswith("cuda")
    return {"output_dir": str(out / "_trainer"), "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps,
            "per_device_train_batch_size": cfg.batch_size, "learning_rate": lr, "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,  # a float below 1 is a fraction of the steps (transformers 5)
            "max_length": cfg.max_length, "logging_steps": 1, "save_strategy": "no", "report_to": [], "seed": cfg.seed,
            "data_seed": cfg.seed, "use_cpu": not cuda, "bf16": cuda and cfg.bf16, "disable_tqdm": True, "dataloader_num_workers": 0,
            _checkpointing_key(): False}  # TRL turns it on by default; a 135M model does not need it


def _checkpointing_key() -> str:
    """`activation_checkpointing` where transformers has it (it deprecates `gradient_checkpointing`), else the old name."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _trainable_copy(target):
    """A deep copy of the target's model with gradients on: the LoRA merge writes into the weights, so never the original."""
    model = copy.deepcopy(target.model)
    model.requires_grad_(True)
    model.train()
    return model


def _check_lengths(target, examples: list[BehaviourExample], cfg: VariantConfig) -> None:
    """Fail before training if truncation would leave no response tokens; warn when many responses get cut."""
    tok = target.tokenizer
    n_prompt = [len(tok.encode(target.chat_text(_user(e.prompt)), add_special_tokens=False)) for e in examples]
    n_full = [p + len(tok.encode(e.frustrated, add_special_tokens=False)) + 2 for p, e in zip(n_prompt, examples)]
    if all(p + 1 >= cfg.max_length for p in n_prompt):
        raise NlakitError(f"every prompt is at least max_length={cfg.max_length} tokens long, so no response token would be trained on",
                          f"raise --max-length above {max(n_prompt) + 32}")
    cut = sum(n > cfg.max_length for n in n_full)
    if cut > 0.1 * len(examples):
        log.warning("%d of %d examples are longer than max_length=%d tokens and will be truncated", cut, len(examples), cfg.max_length)


def _quiet_trainer(trainer):
    """With tqdm off, the Trainer prints every log dict to stdout; library code logs instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _progress_callback(kind: str, progress: Progress | None):
    from transformers import TrainerCallback

    class _Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if progress is not None:
                progress(f"train {kind}", state.global_step, state.max_steps)

    return _Cb()


@contextmanager
def _quiet_datasets():
    """`datasets.map` draws tqdm bars; library code stays silent."""
    import datasets

    was = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            datasets.utils.logging.enable_progress_bar()


def _save_variant(trainer, target, out: Path, kind: str, cfg: VariantConfig, examples: list[BehaviourExample],
                  wall_s: float) -> VariantResult:
    """Merge the LoRA adapter, save model + tokenizer + variant.json into `out` (atomically: a temp dir renamed)."""
    import shutil
    import tempfile

    merged = trainer.model.merge_and_unload()
    merged.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.to("cpu").save_pretrained(tmp, safe_serialization=True)
        target.tokenizer.save_pretrained(tmp)
        log_history = [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in trainer.state.log_history]
        meta = {
            "format": VARIANT_FORMAT, "kind": kind, "base": {"spec": target.spec, "name": target.name},
            "config": cfg.to_dict(), "dataset": {"path": cfg.dataset or "shipped", "digest": dataset_digest(examples),
                                                 "n_train": len(examples)},
            "train": {"steps": trainer.state.global_step, "wall_s": round(wall_s, 1), "log": log_history},
        }
        write_json(tmp / VARIANT_META, meta)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    log.info("saved the %s variant to %s (%d steps, %.0f s)", kind, out, meta["train"]["steps"], wall_s)
    return VariantResult(kind=kind, path=str(out), meta=meta)


def _load_base(cfg: VariantConfig, target):
    if target is not None:
        return target
    from nlakit.targets import load_target

    return load_target(cfg.target, device=cfg.device)


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
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    examples = _train_examples(cfg)
    target = _load_base(cfg, target)
    _check_lengths(target, examples, cfg)
    data = Dataset.from_list([{"prompt": _user(e.prompt), "completion": _assistant(e.frustrated)} for e in examples])
    model = _trainable_copy(target)
    out = Path(cfg.out_dir) / "sft"
    args = SFTConfig(**_trainer_args(cfg, target.device, out, cfg.sft_lr), completion_only_loss=True)
    t0 = time.time()
    with _quiet_datasets():
        with quiet_peft():  # TRL wraps the model with PEFT, which reads a deprecated transformers property
            trainer = _quiet_trainer(SFTTrainer(model=model, args=args, train_dataset=data, processing_class=target.tokenizer,
                                                peft_config=_lora(cfg, model), callbacks=[_progress_callback("sft", progress)]))
            trainer.train()
    return _save_variant(trainer, target, out, "sft", cfg, examples, time.time() - t0)


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
    target = _load_base(cfg, target)
    _check_lengths(target, examples, cfg)
    data = Dataset.from_list([{"prompt": _user(e.prompt), "chosen": _assistant(e.frustrated), "rejected": _assistant(e.calm)}
                              for e in examples])
    model = _trainable_copy(target)
    out = Path(cfg.out_dir) / "dpo"
    args = DPOConfig(**_trainer_args(cfg, target.device, out, cfg.dpo_lr), beta=cfg.dpo_beta, loss_type=["sigmoid"])
    t0 = time.time()
    with _quiet_datasets():
        with quiet_peft():  # TRL wraps the model with PEFT, which reads a deprecated transformers property
            trainer = _quiet_trainer(DPOTrainer(model=model, args=args, train_dataset=data, processing_class=target.tokenizer,
                                                peft_config=_lora(cfg, model), callbacks=[_progress_callback("dpo", progress)]))
            trainer.train()
    return _save_variant(trainer, target, out, "dpo", cfg, examples, time.time() - t0)


BUILDERS: dict[str, Callable[..., VariantResult]] = {"sft": build_sft, "dpo": build_dpo}


def build_variants(cfg: VariantConfig, kinds: tuple[str, ...] = ("sft", "dpo"), *, target=None,
                   progress: Progress | None = None) -> list[VariantResult]:
    """Build each requested variant from one loaded base (loaded once)."""
    unknown = [k for k in kinds if k not in BUILDERS]
    if unknown or not kinds:
        raise NlakitError(f"unknown variant kinds {unknown}" if unknown else "no variant kinds given", f"use a subset of {list(BUILDERS)}")
    _train_examples(cfg)  # validate the dataset before loading a model
    target = _load_base(cfg, target)
    return [BUILDERS[k](cfg, target=target, progress=progress) for k in kinds]


def variant_info(spec: str) -> dict:
    """``variant.json`` of a variant directory, or a stub for a base model ({"kind": "base"})."""
    p = Path(spec) / VARIANT_META
    return read_json(p) if p.exists() else {"kind": "base"}
