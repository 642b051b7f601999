"""An NLA bundle: AV + AR + sidecar + reference statistics, saved small and loaded anywhere.

Two on-disk formats:

**nlakit bundle** (what `nlakit train` writes and the package ships)::

    bundle/
      nla_meta.yaml            role: nla; nlakit: {format, target, av, ar}
      reference.safetensors    training-set mean of normalised vectors etc. (FVE is centred on it)
      baselines.safetensors    optional: ridge baselines fitted at training time (token, token + bag of 8)
      av/                      PEFT LoRA adapter over the target (adapter_config.json + adapter_model.safetensors)
      ar/                      PEFT LoRA adapter over blocks 0..K + value_head.safetensors

  The target's own weights are not copied: `nlakit.targets.load_target(meta.nlakit["target"])` supplies them.

**released format** (`nla-checkpoint-format.md` §2): an AV directory (full HF causal LM + tokenizer + sidecar) and
an AR directory (K+1-block backbone without final norm or LM head + ``value_head.safetensors`` + sidecar).
`load_released` reads it, `export_released` writes it (bf16 by default).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from nlakit.errors import NlakitError
from nlakit.io import atomic_path, check_dir, loading, read_safetensors, write_json
from nlakit.meta import META_FILE, NLAMeta
from nlakit.metrics import Reference
from nlakit.reconstructor import Reconstructor, truncate_config, truncated_backbone
from nlakit.targets import Target, load_target, resolve_device, resolve_dtype
from nlakit.verbalizer import Explanation, Verbalizer

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "nlakit-bundle/1"
REFERENCE_FILE = "reference.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"
BASELINES_FILE = "baselines.safetensors"
BUNDLE_FIX = "re-save or re-download the NLA bundle"
RELEASED_FIX = "re-download or re-export the checkpoint"
DEFAULT_BUNDLE = Path(__file__).parent / "data" / "default_nla"


@dataclass
class NLA:
    """A ready-to-use NLA. `explain` runs the AV, `reconstruct` the AR; `reference` centres FVE."""

    av: Verbalizer
    ar: Reconstructor
    meta: NLAMeta
    reference: Reference | None = None
    source: str = ""
    baselines: dict | None = None  # fitted ridge baselines shipped with the NLA ({name: baselines.LinearMap})

    @property
    def layer(self) -> int:
        return self.meta.layer

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    def explain(self, vectors: torch.Tensor, **kw) -> list[Explanation]:
        return self.av.explain(vectors, **kw)

    def reconstruct(self, texts: list[str], **kw) -> torch.Tensor:
        return self.ar.reconstruct(texts, **kw)

    def require_reference(self) -> Reference:
        if self.reference is None:
            raise NlakitError(f"the NLA at {self.source or '?'} has no reference statistics, so FVE has no centre",
                              "pass --train-data TRAIN.jsonl (training-like text) to compute them, or use an nlakit bundle")
        return self.reference

    def save(self, directory: str | Path) -> Path:
        return save_bundle(self, directory)


# ---------------------------------------------------------------------------------------------------------------
# nlakit bundles
# ---------------------------------------------------------------------------------------------------------------
def save_reference(ref: Reference, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(ref.tensors(), str(tmp))


def load_reference(path: Path) -> Reference:
    return Reference.from_tensors(_read_safetensors(path))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(path, BUNDLE_FIX)


def _save_module(module: torch.nn.Module, directory: Path) -> str:
    """Save a PEFT adapter (small) or, for a plain module, its full state dict. Returns the kind saved."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(module, "peft_config"):
        module.save_pretrained(str(directory))  # adapter_config.json + adapter_model.safetensors (inside a fresh temp dir)
        f = directory / "adapter_model.safetensors"
        tensors = _read_safetensors(f)  # store adapters in bf16: half the size, and the precision LoRA deltas need
        save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}, str(f))
        return "lora"
    state, seen = {}, set()
    for k, v in module.state_dict().items():
        if v.data_ptr() in seen:  # tied weights (lm_head = embeddings) are stored once; loading re-fills both
            continue
        seen.add(v.data_ptr())
        state[k] = v.detach().contiguous().cpu()
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    return "full"


def _load_full(module: torch.nn.Module, path: Path) -> None:
    """Load a full state dict saved by `_save_module`; a mismatch is a user error (wrong sidecar or target)."""
    state = _read_safetensors(path)
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise NlakitError(f"{path} has tensors of the wrong shape ({bad[0]}: {tuple(state[bad[0]].shape)}, model has "
                          f"{tuple(own[bad[0]].shape)})", "load the bundle with the target and sidecar it was saved with")
    missing, unexpected = module.load_state_dict(state, strict=False)
    stored_once = {n for n, _ in module.named_parameters()}  # a tied weight is named once (the embeddings)
    missing = [k for k in missing if k in stored_once]
    if missing or unexpected:
        raise NlakitError(f"{path} does not fit the model built from the sidecar (missing {missing[:3]}, unexpected {unexpected[:3]})",
                          "keep nla_meta.yaml (layer, d_model, target) together with the weights it was saved with")


def save_bundle(nla: NLA, directory: str | Path) -> Path:
    """Write an nlakit bundle (see module docstring). Writes into a temp dir, then renames it into place."""
    import shutil
    import tempfile

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        av_kind = _save_module(nla.av.model, tmp / "av")
        ar_kind = _save_module(nla.ar.backbone, tmp / "ar")
        with atomic_path(tmp / "ar" / VALUE_HEAD_FILE) as t:
            save_file({"weight": nla.ar.value_head.weight.detach().float().contiguous().cpu()}, str(t))
        if nla.reference is not None:
            save_reference(nla.reference, tmp / REFERENCE_FILE)
        if nla.baselines:
            from nlakit.baselines import save_stored

            save_stored(nla.baselines, tmp / BASELINES_FILE)
        extra = dict(nla.meta.nlakit)
        extra.update(format=BUNDLE_FORMAT, av=av_kind, ar=ar_kind,
                     reference=REFERENCE_FILE if nla.reference is not None else None,
                     baselines=BASELINES_FILE if nla.baselines else None)
        nla.meta.with_(nlakit=extra, role="nla").save(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            if old.exists():
                shutil.rmtree(old)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def load_nla(path: str | Path = "default", *, device: str | None = "cpu", dtype: str | torch.dtype = "float32",
             target: Target | None = None, ar: str | Path | None = None) -> NLA:
    """Load an NLA: ``"default"`` (the bundled one), an nlakit bundle directory, or a released AV directory with its
    AR directory `ar` (default: the sibling found by name, ``…-av`` → ``…-ar``, or ``av`` → ``ar`` as `export_released`
    writes them)."""
    if str(path) == "default":
        path = DEFAULT_BUNDLE
        if not (path / META_FILE).exists():
            raise NlakitError("no default NLA is bundled with this install", "pass --nla DIR (an nlakit bundle or a released AV directory)")
    path = Path(path)
    if not path.exists():
        raise NlakitError(f"NLA path {path} does not exist", "pass an nlakit bundle directory, a released AV directory, or 'default'")
    meta = NLAMeta.load(path)
    if meta.nlakit.get("format") == BUNDLE_FORMAT:
        if ar is not None:
            raise NlakitError(f"{path} is an nlakit bundle, which holds its own AR", "drop --ar (it is for released AV directories)")
        return _load_bundle(path, meta, device=device, dtype=dtype, target=target)
    if meta.role == "av":
        ar_dir = Path(ar).expanduser() if ar is not None else sibling_ar(path)
        if ar_dir is None or not ar_dir.exists():
            raise NlakitError(f"{path} is a released AV but " + (f"its AR directory {ar_dir} does not exist" if ar is not None else
                              "no AR directory was found next to it (…-av → …-ar, av → ar)"),
                              "pass --ar DIR (the AR directory released with it); in Python, load_released(av_dir, ar_dir)")
        return load_released(path, ar_dir, device=device, dtype=dtype)
    raise NlakitError(f"{path} is neither an nlakit bundle nor a released AV directory (role {meta.role!r})",
                      "pass the bundle root, or the AV directory of a released pair")


def sibling_ar(av_dir: Path) -> Path | None:
    """The AR directory released beside an AV directory, by name: ``x-av`` → ``x-ar``, ``av`` → ``ar``."""
    if av_dir.name.endswith("-av"):
        return av_dir.with_name(av_dir.name[:-3] + "-ar")
    if av_dir.name == "av":
        return av_dir.with_name("ar")
    return None


def _load_bundle(path: Path, meta: NLAMeta, *, device, dtype, target: Target | None) -> NLA:
    from nlakit.peft_compat import load_adapter

    spec = meta.nlakit.get("target")
    if target is None:
        if not spec:
            raise NlakitError(f"{path / META_FILE} names no target model", "add nlakit.target to the sidecar")
        target = load_target(spec, device=device, dtype=dtype)
    if target.d_model != meta.d_model:
        raise NlakitError(f"the bundle expects d_model={meta.d_model} but target {target.name} has {target.d_model}",
                          "load the bundle with the target it was trained on")
    target.check_layer(meta.layer)
    av_model = copy.deepcopy(target.model)
    if meta.nlakit.get("av") == "lora":
        _require(path / "av" / "adapter_config.json")
        check_dir(path / "av", BUNDLE_FIX)  # PEFT would raise a long traceback on a truncated adapter
        with loading(path / "av", BUNDLE_FIX):
            av_model = load_adapter(av_model, str(path / "av"))
    else:
        _load_full(av_model, path / "av" / "model.safetensors")
    backbone = truncated_backbone(target.model, meta.layer)
    if meta.nlakit.get("ar") == "lora":
        _require(path / "ar" / "adapter_config.json")
        check_dir(path / "ar", BUNDLE_FIX)
        with loading(path / "ar", BUNDLE_FIX):
            backbone = load_adapter(backbone, str(path / "ar"))
    else:
        _load_full(backbone, path / "ar" / "model.safetensors")
    head = torch.nn.Linear(meta.d_model, meta.d_model, bias=False)
    head.weight.data.copy_(_head_weight(path / "ar" / VALUE_HEAD_FILE, meta.d_model))
    av = Verbalizer(av_model.eval(), target.tokenizer, meta)
    ar = Reconstructor(backbone.eval(), target.tokenizer, meta, head).to(target.device)
    ar.requires_grad_(False)
    av.model.requires_grad_(False)
    ref_file = meta.nlakit.get("reference")
    ref = load_reference(path / ref_file) if ref_file else None
    base_file = meta.nlakit.get("baselines")
    stored = None
    if base_file:
        from nlakit.baselines import load_stored

        stored = load_stored(_read_safetensors(path / base_file))
    return NLA(av=av, ar=ar, meta=meta, reference=ref, source=str(path), baselines=stored)


def _require(path: Path) -> None:
    if not path.exists():
        raise NlakitError(f"{path} is missing", BUNDLE_FIX)


def _head_weight(path: Path, d: int) -> torch.Tensor:
    t = _read_safetensors(path)
    if set(t) != {"weight"}:
        raise NlakitError(f"{path} holds {sorted(t)}, expected exactly one tensor 'weight'", "use the value head saved with this AR")
    w = t["weight"]
    if tuple(w.shape) != (d, d):
        raise NlakitError(f"{path} has shape {tuple(w.shape)}, expected ({d}, {d})", "use the AR that matches this sidecar's d_model")
    return w.float()


# ---------------------------------------------------------------------------------------------------------------
# released checkpoint format
# ---------------------------------------------------------------------------------------------------------------
def load_released(av_dir: str | Path, ar_dir: str | Path, *, device: str | None = "cpu", dtype: str | torch.dtype = "float32",
                  reference: Reference | None = None) -> NLA:
    """Load a released AV/AR pair (`nla-checkpoint-format.md` §2–5), checking that the two halves agree."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    av_dir, ar_dir = Path(av_dir), Path(ar_dir)
    for d in (av_dir, ar_dir):
        if not d.is_dir():
            raise NlakitError(f"{d} is not a directory", "pass the AV and AR checkpoint directories")
        _require(d / "config.json")
        check_dir(d, RELEASED_FIX)  # truncated weights, config or tokenizer files: one line naming the file
    av_meta, ar_meta = NLAMeta.load(av_dir), NLAMeta.load(ar_dir)
    if av_meta.d_model != ar_meta.d_model or av_meta.layer != ar_meta.layer:
        raise NlakitError(f"AV ({av_dir.name}: d_model {av_meta.d_model}, layer {av_meta.layer}) and AR ({ar_dir.name}: "
                          f"d_model {ar_meta.d_model}, layer {ar_meta.layer}) do not match", "pair the AV with the AR released beside it")
    with loading(av_dir, RELEASED_FIX):
        av_tok = AutoTokenizer.from_pretrained(str(av_dir))
        av_model = AutoModelForCausalLM.from_pretrained(str(av_dir), dtype=torch_dtype).to(device).eval()
    with loading(ar_dir, RELEASED_FIX):
        ar_tok = AutoTokenizer.from_pretrained(str(ar_dir))
        cfg = AutoConfig.from_pretrained(str(ar_dir))
    ar_tok.padding_side = "right"
    hidden = getattr(getattr(av_model.config, "text_config", None) or av_model.config, "hidden_size")
    if hidden != av_meta.d_model:
        raise NlakitError(f"{av_dir / 'config.json'} has hidden_size {hidden} but its sidecar says d_model {av_meta.d_model}",
                          "use the config and sidecar from the same checkpoint")
    cfg = getattr(cfg, "text_config", None) or cfg
    if cfg.num_hidden_layers != ar_meta.layer + 1:
        raise NlakitError(f"{ar_dir / 'config.json'} has {cfg.num_hidden_layers} layers but the sidecar names layer {ar_meta.layer}",
                          f"the AR must keep exactly K+1 = {ar_meta.layer + 1} blocks")
    backbone = AutoModel.from_config(cfg)
    state = {}
    for f in sorted(ar_dir.glob("model*.safetensors")):
        if f.name == "model-megatron-compat.safetensors":
            continue  # dummy norm / lm_head written for Megatron; loaders ignore it
        for k, v in _read_safetensors(f).items():
            state[k[len("model."):] if k.startswith("model.") else k] = v
    if not state:
        raise NlakitError(f"{ar_dir} has no model*.safetensors", "copy the AR weights into the directory")
    for attr in ("norm", "final_layernorm", "ln_f"):
        if hasattr(backbone, attr):
            setattr(backbone, attr, torch.nn.Identity())
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    unexpected = [k for k in unexpected if not k.startswith(("norm.", "lm_head."))]
    if missing or unexpected:
        raise NlakitError(f"{ar_dir} weights do not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})",
                          "use the weights and config.json from the same AR checkpoint")
    head = torch.nn.Linear(ar_meta.d_model, ar_meta.d_model, bias=False)
    head.weight.data.copy_(_head_weight(ar_dir / VALUE_HEAD_FILE, ar_meta.d_model))
    av = Verbalizer(av_model, av_tok, av_meta)
    ar = Reconstructor(cast_keeping_rotary(backbone, torch_dtype).eval(), ar_tok, ar_meta, head).to(device)
    av_model.requires_grad_(False)
    ar.requires_grad_(False)
    if reference is None and (av_dir / REFERENCE_FILE).exists():
        reference = load_reference(av_dir / REFERENCE_FILE)
    return NLA(av=av, ar=ar, meta=av_meta, reference=reference, source=str(av_dir))


def cast_keeping_rotary(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module.to(dtype)`, except rotary `inv_freq` buffers, which stay fp32 as HF builds them (a bf16 `inv_freq` moves
    every rotary angle: AR vectors then differ from the reference by cos 0.9999, max abs diff ~2)."""
    keep = {n: b.detach().clone() for n, b in module.named_buffers() if n.endswith("inv_freq")}
    module.to(dtype)
    for name, buf in keep.items():
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, attr, buf)
    return module


def export_released(nla: NLA, out_dir: str | Path, *, dtype: str | torch.dtype = "bfloat16") -> tuple[Path, Path]:
    """Write `out_dir/av` and `out_dir/ar` in the released format (bf16 by default, as the exporter checklist asks).

    Both `config.json` files carry `torch_dtype`; the sidecars' `base_checkpoint` is the base model's hub id where nlakit
    knows it, and the GGUF file a built-in target was read from is recorded separately (`nlakit.base_gguf`). Everything
    is written into a temporary folder first and renamed into place."""
    import shutil
    import tempfile

    torch_dtype = resolve_dtype(dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out_dir))
    try:
        _export_into(nla, tmp / "av", tmp / "ar", torch_dtype)
        for name in ("av", "ar"):
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
            (tmp / name).rename(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "av", out_dir / "ar"


def released_sidecar(meta: NLAMeta, role: str) -> NLAMeta:
    """The sidecar of a released half: hub id as base_checkpoint, the nlakit target spec and GGUF file kept aside."""
    from nlakit.targets import BUILTIN_TARGETS, HUB_IDS, builtin_gguf

    spec = meta.nlakit.get("target") or ""
    base = meta.base_checkpoint
    gguf = Path(base).name if base.endswith(".gguf") else (Path(spec).name if spec.endswith(".gguf") else None)
    if spec in BUILTIN_TARGETS:
        try:
            gguf = builtin_gguf(spec).name
        except NlakitError:
            pass  # the package is not installed here; the spec still names it
    hub = HUB_IDS.get(spec) or ("" if base.endswith(".gguf") else base)
    extra = {k: v for k, v in {"target": spec or None, "base_gguf": gguf}.items() if v}
    return meta.with_(role=role, base_checkpoint=hub, nlakit=extra)


def _write_config(path: Path, config, dtype_name: str) -> None:
    d = config.to_dict()
    d.pop("_name_or_path", None)  # the release scrub removes it
    d["torch_dtype"] = dtype_name
    write_json(path, d)


def _export_into(nla: NLA, av_dir: Path, ar_dir: Path, torch_dtype: torch.dtype) -> None:
    dtype_name = str(torch_dtype).removeprefix("torch.")
    # AV: the full causal LM
    av_model = copy.deepcopy(nla.av.model).to(torch_dtype)
    av_model.save_pretrained(str(av_dir), safe_serialization=True)
    _write_config(av_dir / "config.json", av_model.config, dtype_name)
    nla.av.tokenizer.save_pretrained(str(av_dir))
    released_sidecar(nla.meta, "av").save(av_dir, role="av")
    # AR: backbone tensors under model.*, no norm / lm_head; config with K+1 layers
    K = nla.meta.layer
    state = {f"model.{k}": v.detach().to(torch_dtype).contiguous().cpu() for k, v in nla.ar.backbone.state_dict().items()
             if not k.startswith("norm.") and "rotary_emb" not in k}
    ar_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(ar_dir / "model.safetensors"), metadata={"format": "pt"})
    _write_config(ar_dir / "config.json", truncate_config(nla.av.model.config, K + 1), dtype_name)
    save_file({"weight": nla.ar.value_head.weight.detach().to(torch_dtype).contiguous().cpu()}, str(ar_dir / VALUE_HEAD_FILE))
    tok = copy.deepcopy(nla.ar.tokenizer)
    tok.padding_side = "right"
    tok.save_pretrained(str(ar_dir))
    released_sidecar(nla.meta, "ar").save(ar_dir, role="ar")
    if nla.reference is not None:  # not part of the released format; harmless extra that keeps FVE centred
        save_reference(nla.reference, av_dir / REFERENCE_FILE)
