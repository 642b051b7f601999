"""Atomic file writes and small readers shared by every stage.

Every file nlakit writes goes to a temporary sibling first and is renamed into place, so a killed job
never leaves half a file behind.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from nlakit.errors import NlakitError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise NlakitError(f"cannot write {path}: it is a directory", f"pass a file name, e.g. {path / 'out'}{path.suffix or ''}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        blocker = next((a for a in path.parents if a.exists()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir() else (e.strerror or type(e).__name__)
        raise NlakitError(f"cannot write {path} ({why})", "pass an output path in a folder you can write to") from e
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


def read_json(path: str | os.PathLike, fix: str = "re-run the stage that writes it") -> Any:
    """A JSON file, plain or gzipped (`.gz`), with one clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise NlakitError(f"{path} does not exist", "pass the path of a results JSON written by nlakit")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return json.loads(raw.decode("utf-8"))
    except (EOFError, OSError, zlib.error) as e:  # truncated or not-really-gzip files
        raise NlakitError(f"{path} is corrupt or incomplete ({_reason(e)})", fix) from e
    except json.JSONDecodeError as e:
        raise NlakitError(f"{path} is not valid JSON, corrupt or incomplete ({e.msg}, line {e.lineno})", fix) from e
    except UnicodeDecodeError as e:
        raise NlakitError(f"{path} is not UTF-8 text, so not a JSON file", fix) from e


def read_safetensors(path: str | os.PathLike, fix: str) -> dict:
    """All tensors of a safetensors file; a missing, truncated or foreign file is one NlakitError naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NlakitError(f"{path} is missing", fix)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for truncation and garbage alike
        raise NlakitError(f"{path} is corrupt or incomplete, not a readable safetensors file ({_reason(e)})", fix) from e


def _reason(e: Exception) -> str:
    return " ".join(str(e).split())[:120] or type(e).__name__


def check_file(path: str | os.PathLike, fix: str) -> None:
    """Raise one NlakitError if a file a third-party loader is about to read is corrupt: safetensors headers and
    coverage, JSON syntax, Jinja syntax. Other suffixes are only checked to exist."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NlakitError(f"{path} is missing", fix)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:  # validates the header and that it covers the whole file
                f.keys()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jinja":
            import jinja2

            jinja2.Environment().parse(path.read_text(encoding="utf-8"))
    except Exception as e:
        raise NlakitError(f"{path} is corrupt or incomplete ({_reason(e)})", fix) from e


@contextmanager
def loading(what: str | os.PathLike, fix: str) -> Iterator[None]:
    """Turn any error a third-party loader raises while reading `what` into one NlakitError line."""
    try:
        yield
    except NlakitError:
        raise
    except Exception as e:
        raise NlakitError(f"could not load {what}: it is corrupt, incomplete or of another format ({type(e).__name__}: {_reason(e)})",
                          fix) from e


def check_dir(directory: str | os.PathLike, fix: str) -> None:
    """`check_file` on every weights, JSON and template file of a model or checkpoint directory."""
    for f in sorted(Path(directory).iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".json", ".jinja"):
            check_file(f, fix)


def write_jsonl(path: str | os.PathLike, rows: Any) -> Path:
    """Write dicts one per line, atomically; a `.gz` path is gzipped with mtime 0, so the same rows give the same bytes."""
    path = Path(path)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with atomic_path(path) as tmp:
        if path.suffix == ".gz":
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(data)
        else:
            tmp.write_bytes(data)
    return path


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Read a JSONL file (optionally .gz). Each line must be an object."""
    path = Path(path)
    if not path.exists():
        raise NlakitError(f"{path} does not exist", "pass an existing .jsonl or .jsonl.gz file")
    if path.is_dir():
        raise NlakitError(f"{path} is a directory, not a .jsonl file", "pass a .jsonl or .jsonl.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict] = []
    i = 0
    try:
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
    except (EOFError, OSError, zlib.error) as e:  # truncated or not-really-gzip files
        raise NlakitError(f"{path} is corrupt or incomplete after line {i} ({_reason(e)})", "re-create or re-download the file") from e
    except UnicodeDecodeError as e:
        raise NlakitError(f"{path}:{i + 1} is not UTF-8 text", "save the file as UTF-8") from e
    return rows
