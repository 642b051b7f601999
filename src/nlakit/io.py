"""Atomic file writes and small readers shared by every stage.

Every file nlakit writes goes to a temporary sibling first and is renamed into place, so a killed job
never leaves half a file behind.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from nlakit.errors import NlakitError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__float__"):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise NlakitError(f"{path} does not exist", "pass the path of a results JSON written by nlakit")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise NlakitError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})", "re-run the stage that writes it") from e


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Read a JSONL file (optionally .gz). Each line must be an object."""
    path = Path(path)
    if not path.exists():
        raise NlakitError(f"{path} does not exist", "pass an existing .jsonl or .jsonl.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise NlakitError(f"{path}:{i} is not valid JSON ({e.msg})", "fix or remove that line") from e
            if not isinstance(row, dict):
                raise NlakitError(f"{path}:{i} is not a JSON object", 'write one object per line, e.g. {"text": "..."}')
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows
