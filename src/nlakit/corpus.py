"""Documents from wherever a user keeps them: JSONL, JSONL.gz, plain text, Parquet, or a folder of those.

Every verb that reads documents (extract, eval, train, datagen, the baselines' --train-data) goes through
`read_rows` / `read_texts`, so one file name means the same thing everywhere:

- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line; the text is in ``text`` (or ``text_key``). Other fields travel
  along (training reads ``lang`` and ``kind`` when present; neither is required).
- ``.parquet``: one row per document; the text column is ``text`` (or ``text_key``). Read with pyarrow.
- any other UTF-8 text file (``.txt``, ``.md``, ``.txt.gz``, …): the whole file is one document, or every non-empty
  line is one with ``per_line=True`` (``--per-line`` on the command line).
- a folder: every file above inside it (recursively, sorted by path; hidden files skipped).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.io import read_jsonl

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".md", ".text")
DOC_SUFFIXES = JSONL_SUFFIXES + (".parquet",) + TEXT_SUFFIXES
FORMATS = "a .jsonl / .jsonl.gz file, a .parquet file, a UTF-8 text file, or a folder of those"


def read_rows(source: str | Path, *, text_key: str = "text", limit: int | None = None, per_line: bool = False,
              require_text: bool = True, key_fix: str | None = None) -> list[dict]:
    """Documents as dicts with the text under ``"text"``. `require_text=False` drops rows without a string text
    instead of refusing them; `key_fix` is the fix named when the text field is missing (default: --text-key, for the
    verbs that have it). Raises one NlakitError line for a missing, empty, binary or ill-formed source."""
    key_fix = key_fix or f"pass --text-key NAME, or add {text_key!r} to every row"
    path = Path(source).expanduser()
    if not path.exists():
        raise NlakitError(f"{path} does not exist", f"pass {FORMATS}")
    files = _files(path) if path.is_dir() else [path]
    rows: list[dict] = []
    for f in files:
        left = None if limit is None else limit - len(rows)
        if left is not None and left <= 0:
            break
        rows += _read_file(f, text_key, left, per_line, require_text, key_fix)
    if not rows:
        raise NlakitError(f"{path} holds no documents", f'pass {FORMATS} with at least one non-empty text')
    return rows


def read_texts(source: str | Path, *, text_key: str = "text", limit: int | None = None, per_line: bool = False,
               key_fix: str | None = None) -> list[str]:
    """The texts of `read_rows`."""
    return [r["text"] for r in read_rows(source, text_key=text_key, limit=limit, per_line=per_line, key_fix=key_fix)]


def _files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(DOC_SUFFIXES)
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise NlakitError(f"the folder {folder} holds no .jsonl, .jsonl.gz, .parquet, .txt or .md files",
                          f"pass {FORMATS}")
    return files


def _read_file(path: Path, text_key: str, limit: int | None, per_line: bool, require_text: bool, key_fix: str) -> list[dict]:
    name = path.name
    if name.endswith(JSONL_SUFFIXES):
        rows = read_jsonl(path, limit=limit)
    elif name.endswith(".parquet"):
        rows = _read_parquet(path, text_key, limit, key_fix)
    else:
        return _read_plain(path, limit, per_line)
    out = []
    for i, r in enumerate(rows, 1):
        text = r.get(text_key)
        if not isinstance(text, str) or not text.strip():
            if require_text:
                raise NlakitError(f"{path}: {'line' if name.endswith(JSONL_SUFFIXES) else 'row'} {i} has no non-empty string "
                                  f"field {text_key!r}", key_fix)
            continue
        out.append({**r, "text": text})
    return out


def _read_parquet(path: Path, text_key: str, limit: int | None, key_fix: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow comes with datasets
        raise NlakitError("reading Parquet needs pyarrow", "pip install pyarrow") from e
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise NlakitError(f"{path} is not a readable Parquet file, corrupt or incomplete ({type(e).__name__})",
                          "re-create or re-download the file") from e
    if text_key not in table.column_names:
        raise NlakitError(f"{path} has no column {text_key!r} (columns: {', '.join(table.column_names[:8])})",
                          key_fix)
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _read_plain(path: Path, limit: int | None, per_line: bool) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise NlakitError(f"{path} is not UTF-8 text, JSONL or Parquet", f"pass {FORMATS}") from e
    except (EOFError, OSError) as e:
        raise NlakitError(f"{path} is corrupt or incomplete ({type(e).__name__})", "re-create or re-download the file") from e
    if "\x00" in text:
        raise NlakitError(f"{path} is a binary file, not text, JSONL or Parquet", f"pass {FORMATS}")
    docs = [line for line in text.splitlines() if line.strip()] if per_line else ([text] if text.strip() else [])
    return [{"text": t, "id": f"{path.name}:{i}" if per_line else path.name} for i, t in enumerate(docs[:limit], 1)]
