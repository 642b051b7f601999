"""Run configs as YAML files: `nlakit train all --config configs/smollm2-l20.yaml [--flag value ...]`.

A config file holds any subset of `TrainConfig`'s fields; the stage sections ``ar:``, ``av:`` and ``rl:`` hold
fields of `ARConfig`, `AVConfig` and `RLConfig`. Defaults < file < command-line flags; `--set KEY=VALUE` (repeatable,
``av.epochs=3``) overrides any key, section keys dotted. Every problem in a file or a `--set` (unknown keys, wrong
types) is reported at once, each with its fix. The resolved config is written into the run
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
from nlakit.train.datagen import SOURCES
from nlakit.train.pipeline import TrainConfig
from nlakit.train.rl import LR_SCHEDULE_EXAMPLES, RLConfig, lr_schedule_problem

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


def _annotation(key: str):
    """The type annotation of a dotted config key, or None for a key no config has."""
    section, _, field = key.rpartition(".")
    cls = SECTIONS.get(section) if section else TrainConfig
    return typing.get_type_hints(cls).get(field) if cls is not None else None


def _typed(text: str, tp):
    """`text` as a value of annotation `tp` where it reads as one; else the text itself (`build` then names the problem)."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
    if text.lower() in ("none", "null") and union and type(None) in typing.get_args(tp):
        return None
    for a in args:
        if a is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
        if a in (int, float):
            try:
                return a(text)
            except ValueError:
                continue
        if typing.get_origin(a) is tuple:  # "0.2,0.6,0.2" -> (0.2, 0.6, 0.2) for a tuple of numbers
            parts = tuple(x.strip() for x in text.split(",") if x.strip())
            elem = (typing.get_args(a) or (str,))[0]
            try:
                return tuple(elem(x) for x in parts) if elem in (int, float) else parts
            except ValueError:
                return parts
        if a is str:
            return text
    return text


def parse_settings(items: list[str] | tuple[str, ...] | None, prefix: str = "", flag: str = "--set") -> dict:
    """``["av.epochs=3", "rl.lr=1e-4"]`` -> ``{"av.epochs": 3.0, "rl.lr": 0.0001}``, typed by the config dataclasses.

    `prefix` (e.g. ``"rl."``) is put before keys given without a section; `flag` is the option named in errors. A text without ``=`` raises at once; an
    unknown key or a value of the wrong type is kept as given, so `load_config` reports it with every other problem."""
    out = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise NlakitError(f"{flag} {item!r} is not KEY=VALUE", f"write it as {flag} {prefix or 'av.'}epochs=3 (dotted keys for the "
                                                                   "ar/av/rl sections)")
        key = key if "." in key or not prefix else prefix + key
        tp = _annotation(key)
        out[key] = _typed(value.strip(), tp) if tp is not None else value.strip()
    return out


def build(values: dict) -> TrainConfig:
    """A TrainConfig from checked values (sections as dicts); raises NlakitError listing every problem."""
    problems: list[str] = []
    checked = _check_section(TrainConfig, values, "", problems)
    if "out" not in checked:
        problems.append("no run directory: set `out:` in the file or pass --out DIR")
    split = checked.get("split")
    if split is not None and (len(split) != 3 or not all(_accepts(float, x) and x >= 0 for x in split) or abs(sum(split) - 1) > 1e-6):
        problems.append(f"split = {list(split)!r} should be three shares of the documents (AV, AR, RL) that add up to 1, "
                        "e.g. [0.4, 0.3, 0.3]")
    source = checked.get("source", "template")
    if source not in SOURCES:
        problems.append(f"source = {source!r} is not an explanation source: use one of {', '.join(SOURCES)}")
    elif source == "self" and checked.get("describe") is False:
        problems.append("source = 'self' needs the target's descriptions: set describe: true (or use source: template)")
    for key in ("total_minutes", "reserve_minutes"):
        value = checked.get(key)
        if value is not None and value < 0 or key == "total_minutes" and value == 0:
            problems.append(f"{key} = {value!r} should be a positive number of minutes")
    rl = checked.get("rl", {})
    mb, group = rl.get("micro_batch", RLConfig.micro_batch), rl.get("group", RLConfig.group)
    if rl.get("pack_groups") and _accepts(int, mb) and _accepts(int, group) and group > 0 and mb % group:
        problems.append(f"rl.pack_groups packs whole groups into each micro-batch, but rl.micro_batch = {mb} is not a "
                        f"multiple of rl.group = {group}: set rl.micro_batch to {max(group, mb // group * group)}, or rl.pack_groups: false")
    problems += [m for k in LR_SCHEDULE_EXAMPLES if _accepts(float, rl.get(k)) and (m := lr_schedule_problem(k, rl[k]))]
    if problems:
        raise NlakitError("bad training config: " + "; ".join(problems),
                          "fix the keys named above (see configs/smollm2-l20.yaml for every key)")
    kw = {k: v for k, v in checked.items() if k not in SECTIONS}
    for key, cls in SECTIONS.items():
        kw[key] = cls(**checked.get(key, {}))
    return TrainConfig(**kw)


def load_config(path: str | Path | None = None, overrides: dict | None = None, settings: dict | None = None) -> TrainConfig:
    """Defaults < the YAML file at `path` < `overrides` (flat TrainConfig keys, or ``"rl.steps"``-style keys; None means
    not given) < `settings` (the same keys from `parse_settings`, where None is a value)."""
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
    given = [(k, v) for k, v in (overrides or {}).items() if v is not None] + list((settings or {}).items())
    for key, value in given:
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
