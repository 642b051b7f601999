"""`nla_meta.yaml`: the sidecar that pins an NLA's contract (layer, scales, marker, templates).

Read and written exactly as `nla-checkpoint-format.md` §3 describes, so released checkpoints load and our
exports load elsewhere. nlakit-only facts (which target, reference mean, training summary) live under an
``nlakit:`` key that other readers ignore.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nlakit.errors import NlakitError
from nlakit.io import write_text

META_FILE = "nla_meta.yaml"

DEFAULT_INJECTION_CHAR = "●"  # one token in SmolLM2's vocab; SmolLM2 has none in U+3200–U+33FF

# Short enough for a 135M model, same structure as the released template: the marker sits alone
# inside <concept> tags and the answer comes inside <explanation> tags.
DEFAULT_AV_TEMPLATE = (
    "You will be shown one internal activation vector of a language model, inside <concept> tags. "
    "Describe in plain words, inside <explanation> tags, what text the model is reading at that point "
    "and what it expects to come next.\n\n"
    "<concept>{injection_char}</concept>"
)
DEFAULT_AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"


@dataclass(frozen=True)
class NLAMeta:
    """Everything the AV and AR must agree on. Field names follow the released sidecar."""

    d_model: int
    layer: int  # extraction block K: the output of decoder block K (HF hidden_states[K+1])
    injection_scale: float  # L2 norm the vector is rescaled to before injection (AV)
    mse_scale: float  # L2 norm both vectors get before MSE; sqrt(d) by default
    injection_char: str = DEFAULT_INJECTION_CHAR
    injection_token_id: int = -1
    left_neighbor_id: int = -1
    right_neighbor_id: int = -1
    critic_suffix_ids: tuple[int, ...] | None = None
    av_template: str = DEFAULT_AV_TEMPLATE
    ar_template: str = DEFAULT_AR_TEMPLATE
    base_checkpoint: str = ""
    role: str = "nla"  # "av", "ar" in released sidecars; "nla" for nlakit bundles
    stage: str = "init"
    nlakit: dict[str, Any] = field(default_factory=dict)  # nlakit-only facts (target spec, reference mean file, ...)

    def with_(self, **kw) -> "NLAMeta":
        return replace(self, **kw)

    # ---- YAML ----------------------------------------------------------------------------------------
    def to_yaml_dict(self, role: str | None = None) -> dict:
        role = role or self.role
        d: dict[str, Any] = {
            "kind": "nla_model",
            "schema_version": 2,
            "role": role,
            "stage": self.stage,
            "base_checkpoint": self.base_checkpoint,
            "d_model": self.d_model,
            "extraction_layer_index": self.layer,
            "extraction": {
                "injection_scale": None if role == "ar" else float(self.injection_scale),
                "mse_scale": float(self.mse_scale),
            },
            "tokens": {
                "injection_char": self.injection_char,
                "injection_token_id": self.injection_token_id,
                "injection_left_neighbor_id": self.left_neighbor_id,
                "injection_right_neighbor_id": self.right_neighbor_id,
                "critic_suffix_ids": None if role == "av" or self.critic_suffix_ids is None else list(self.critic_suffix_ids),
            },
            "prompt_templates": {"av": self.av_template, "ar": self.ar_template},
        }
        if role in ("ar", "nla"):
            d["critic"] = {"extraction_layer_index": self.layer}
        if self.nlakit:
            d["nlakit"] = self.nlakit
        return d

    def save(self, directory: str | Path, role: str | None = None) -> Path:
        text = yaml.safe_dump(self.to_yaml_dict(role), sort_keys=False, allow_unicode=True)
        return write_text(Path(directory) / META_FILE, text)

    @classmethod
    def load(cls, directory: str | Path) -> "NLAMeta":
        path = Path(directory) / META_FILE
        if not path.exists():
            raise NlakitError(f"{path} is missing", "pass an NLA directory that holds nla_meta.yaml (an nlakit bundle or a released AV/AR)")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise NlakitError(f"{path} is not valid YAML, corrupt or incomplete ({getattr(e, 'problem', None) or type(e).__name__}{where})",
                              "restore the file from the checkpoint") from e
        return cls.from_yaml_dict(raw, source=str(path))

    @classmethod
    def from_yaml_dict(cls, raw: Any, source: str = "nla_meta.yaml") -> "NLAMeta":
        if not isinstance(raw, dict) or raw.get("kind", "nla_model") != "nla_model":
            raise NlakitError(f"{source} is not an NLA model sidecar (kind must be nla_model)", "pass the sidecar of an AV or AR checkpoint")
        try:
            d_model = int(raw["d_model"])
        except (KeyError, TypeError, ValueError) as e:
            raise NlakitError(f"{source} has no integer d_model", "add d_model: <hidden size> to the sidecar") from e
        critic = raw.get("critic") or {}
        ar_block = raw.get("ar") or {}
        layer = critic.get("extraction_layer_index")
        if layer is None and critic.get("num_hidden_layers") is not None:  # schema v1
            layer = int(critic["num_hidden_layers"]) - 1
        if layer is None and ar_block.get("num_hidden_layers") is not None:  # docs/inference.md variant
            layer = int(ar_block["num_hidden_layers"]) - 1
        if layer is None:
            layer = raw.get("extraction_layer_index")
        if layer is None:
            raise NlakitError(f"{source} names no extraction layer", "add extraction_layer_index: K")
        ext = raw.get("extraction") or {}
        role = str(raw.get("role", "nla"))
        role = {"actor": "av", "critic": "ar"}.get(role, role)
        inj = _resolve_scale(ext.get("injection_scale"), d_model)
        if inj is None and role == "av":
            raise NlakitError(f"{source} has no injection_scale, which the AV needs", "set extraction.injection_scale to the norm used in training")
        mse = _resolve_scale(ext.get("mse_scale", "sqrt_d_model"), d_model)
        tok = raw.get("tokens") or {}
        templates = raw.get("prompt_templates") or {}
        av_t = templates.get("av", templates.get("actor", DEFAULT_AV_TEMPLATE))
        ar_t = templates.get("ar", templates.get("critic", DEFAULT_AR_TEMPLATE))
        suffix = tok.get("critic_suffix_ids")
        return cls(
            d_model=d_model, layer=int(layer), injection_scale=float(inj) if inj is not None else float("nan"),
            mse_scale=float(mse) if mse is not None else math.sqrt(d_model),
            injection_char=str(tok.get("injection_char", DEFAULT_INJECTION_CHAR)),
            injection_token_id=int(tok.get("injection_token_id", -1) if tok.get("injection_token_id") is not None else -1),
            left_neighbor_id=int(tok.get("injection_left_neighbor_id", -1) or -1),
            right_neighbor_id=int(tok.get("injection_right_neighbor_id", -1) or -1),
            critic_suffix_ids=tuple(int(x) for x in suffix) if suffix else None,
            av_template=str(av_t), ar_template=str(ar_t), base_checkpoint=str(raw.get("base_checkpoint", "")),
            role=role, stage=str(raw.get("stage", "init")), nlakit=dict(raw.get("nlakit") or {}),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _resolve_scale(value: Any, d_model: int) -> float | None:
    """Scale keys hold a number, 'sqrt_d_model', or raw/none/null (no normalisation)."""
    if value is None or (isinstance(value, str) and value.lower() in ("raw", "none", "null")):
        return None
    if isinstance(value, str) and value == "sqrt_d_model":
        return math.sqrt(d_model)
    return float(value)
