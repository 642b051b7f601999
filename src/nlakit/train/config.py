"""Run configs as YAML files: `nlakit train all --config configs/smollm2-l20.yaml [--flag value ...]`.

A config file holds any subset of `TrainConfig`'s fields; the stage sections ``ar:``, ``av:`` and ``rl:`` hold
fields of `ARConfig`, `AVConfig` and `RLConfig`. Defaults < file < command-line flags. Every problem in a file
(unknown keys, wrong types) is reported at once, each with its fix. The resolved config is written into the run
directory as ``config.yaml``, so a run can be repeated with ``--config RUN/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from nlakit.errors import NlakitError
from nlakit.io import atomic_path
from nlakit.train.ar_sft import ARConfig
from nlakit.train.av_sft import AVConfig
from nlakit.train.pipeline import TrainConfig
from nlakit.train.rl import RLConfig

SECTIONS = {"ar": ARConfig, "av": AVConfig, "rl": RLConfig}
CONFIG_FILE = "config.yaml"


def _accepts(tp, value) -> bool:
    """Does `value` (from YAML) fit the annotation `tp`? (int where float is wanted is fine.)"""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        return isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    return True


def _check_section(cls, data: Any, where: str, problems: list[str]) -> dict:
    if not isinstance(data, dict):
        problems.append(f"{where or 'the file'} must be a mapping of keys to values, not {type(data).__name__}")
        return {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in known:
            problems.append(f"unknown key {name!r} (known: {', '.join(sorted(known))})")
        elif key in SECTIONS and cls is TrainConfig:
            out[key] = _check_section(SECTIONS[key], value if value is not None else {}, f"{key}.", problems)
        elif not _accepts(hints[key], value):
            problems.append(f"{name} = {value!r} should be {_type_name(hints[key])}")
        else:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _type_name(tp) -> str:
    args = typing.get_args(tp)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def build(values: dict) -> TrainConfig:
    """A TrainConfig from checked values (sections as dicts); raises NlakitError listing every problem."""
    problems: list[str] = []
    checked = _check_section(TrainConfig, values, "", problems)
    if "out" not in checked:
        problems.append("no run directory: set `out:` in the file or pass --out DIR")
    if problems:
        raise NlakitError("bad training config: " + "; ".join(problems),
                          "fix the keys named above (see configs/smollm2-l20.yaml for every key)")
    kw = {k: v for k, v in checked.items() if k not in SECTIONS}
    for key, cls in SECTIONS.items():
        kw[key] = cls(**checked.get(key, {}))
    return TrainConfig(**kw)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults < the YAML file at `path` < `overrides` (flat TrainConfig keys, or ``"rl.steps"``-style keys)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise NlakitError(f"config file {path} does not exist", "pass --config with the path of a YAML file, e.g. configs/smollm2-l20.yaml")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise NlakitError(f"{path} is not valid YAML ({str(e).splitlines()[0]})", "fix the YAML syntax at the line named") from e
        if not isinstance(values, dict):
            raise NlakitError(f"{path} holds a {type(values).__name__}, not a mapping of settings", "write one `key: value` per line")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, field = key.rpartition(".")
        if section:
            sub = values.get(section)
            values[section] = {**(sub if isinstance(sub, dict) else {}), field: value}
        else:
            values[key] = value
    return build(values)


def to_dict(cfg: TrainConfig) -> dict:
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: TrainConfig, directory: str | Path) -> Path:
    """Write the resolved config to `directory`/config.yaml (atomically)."""
    path = Path(directory) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path
