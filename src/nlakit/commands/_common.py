"""Shared pieces of the CLI verbs: Rich consoles, progress bars, option types, and loading a target or NLA.

Only CLI code imports this module (Rich lives here, never in the library).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from nlakit.errors import NlakitError

console = Console()  # results (stdout)
err_console = Console(stderr=True)  # progress and notes (stderr), so --json output stays clean

# Reusable options (Typer reads the metadata from the default value).
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda or auto.")
DtypeOpt = typer.Option("float32", "--dtype", help="Weights dtype: float32 or bfloat16.")
LiteralOpt = typer.Option(False, "--literal", help="Take the argument as the text itself, even if a file of that name exists.")
PerLineOpt = typer.Option(False, "--per-line", help="Plain-text files: one document per non-empty line (default: one per file).")
BatchOpt = typer.Option(16, "--batch-size", min=1, help="Texts per forward pass.")
NlaOpt = typer.Option("default", "--nla", help="NLA bundle directory, a released AV directory, or 'default' (the bundled one).")
ArOpt = typer.Option(None, "--ar", help="The AR directory of a released pair, when --nla is its AV directory (default: the "
                                        "sibling named …-ar, or ar beside av).")
TargetOpt = typer.Option(None, "--target", help="Target model (smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama). "
                                                "Default: the one the NLA names.")


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yield a `progress(stage, completed, total)` callback that drives one Rich bar per stage.

    The bars start on the first update, so a command that fails before any work prints only its error line."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(SpinnerColumn(), TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=False)
    tasks: dict[str, int] = {}

    def update(stage: str, completed: int, total: int | None) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=completed, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def open_target(spec: str, device: str, dtype: str):
    from nlakit.targets import load_target

    with err_console.status(f"loading target {spec} …"):
        return load_target(spec, device=device, dtype=dtype)


def nla_dir(nla: str) -> Path:
    """The directory an --nla value points at (raising the loader's clean error when there is none)."""
    from nlakit.bundle import DEFAULT_BUNDLE, load_nla
    from nlakit.meta import META_FILE

    path = DEFAULT_BUNDLE if nla == "default" else Path(nla).expanduser()
    if not (path / META_FILE).exists():
        load_nla(nla)  # raises NlakitError naming the problem (no default bundle, missing dir, no sidecar)
        raise NlakitError(f"{path} has no {META_FILE}", "pass an NLA bundle directory")  # pragma: no cover
    return path


def open_nla(nla: str, target: str | None, device: str, dtype: str, ar: str | None = None):
    """Load an NLA (`ar`: the AR dir of a released pair) and the target it explains: --target, else the one the sidecar names."""
    from nlakit.bundle import load_nla
    from nlakit.meta import NLAMeta

    path = nla_dir(nla)
    meta = NLAMeta.load(path)
    spec = target or meta.nlakit.get("target")
    if not spec:
        raise NlakitError(f"{path} does not name the target model it explains", "pass --target MODEL")
    tgt = open_target(spec, device, dtype)
    with err_console.status(f"loading NLA {path} …"):
        return load_nla(path, device=device, dtype=dtype, target=tgt, ar=ar), tgt


TEXT_FIELD_FIX = "give every row a 'text' field (JSONL) or column (Parquet)"  # for verbs without --text-key


def read_texts(source: str, text_key: str = "text", limit: int | None = None, *, per_line: bool = False,
               literal: bool = False, key_fix: str | None = None) -> list[str]:
    """A TEXT-or-FILE argument → texts. An existing file or folder is read (`nlakit.corpus`: JSONL, JSONL.gz,
    Parquet, plain text); `literal` takes the words themselves. A one-word argument that looks like a file name but
    names nothing is refused rather than silently explained as text."""
    from nlakit.corpus import DOC_SUFFIXES, FORMATS
    from nlakit.corpus import read_texts as read_docs

    if literal:
        return [source]
    if source.strip() and Path(source).expanduser().exists():
        return read_docs(source, text_key=text_key, limit=limit, per_line=per_line, key_fix=key_fix)
    if looks_like_path(source, DOC_SUFFIXES):
        raise NlakitError(f"{source!r} looks like a file name, but no such file or folder exists",
                          f"check the path ({FORMATS}), or pass --literal to read these words as the text")
    return [source]


def read_one_text(source: str, what: str, *, literal: bool = False) -> str:
    """A TEXT-or-FILE argument of a verb that reads one text: a file is read whole (a JSONL must hold one document)."""
    if literal or not source.strip() or not Path(source).expanduser().exists():
        return read_texts(source, literal=literal)[0]
    texts = read_texts(source, key_fix=TEXT_FIELD_FIX)
    if len(texts) != 1:
        raise NlakitError(f"{source} holds {len(texts)} documents, but {what} reads one text",
                          "pass one text, or a file holding one document (`nlakit eval` scores many)")
    return texts[0]


def looks_like_path(source: str, suffixes: tuple[str, ...]) -> bool:
    """One word ending in a document suffix (notes.txt) or starting like a path (/x, ./x, ~/x): not text to explain."""
    s = source.strip()
    return bool(s) and not any(c.isspace() for c in s) and (s.lower().endswith(suffixes) or s.startswith(("/", "./", "../", "~/")))


def read_doc_file(source: str, what: str, text_key: str = "text", limit: int | None = None, per_line: bool = False,
                  key_fix: str | None = TEXT_FIELD_FIX) -> list[str]:
    """An option that must name documents (--data, --train-data): read them, never take the value as text."""
    from nlakit.corpus import read_texts as read_docs

    if not Path(source).expanduser().exists():
        from nlakit.corpus import FORMATS

        raise NlakitError(f"{what} {source} does not exist", f"pass {FORMATS}")
    return read_docs(source, text_key=text_key, limit=limit, per_line=per_line, key_fix=key_fix)


def fmt(x, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def score_table(aggregate: list[dict], title: str = "scores"):
    """A Rich table of aggregate rows (NLA first, then the baselines)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("predictor")
    for col in ("fve_nrm", "95% CI", "fve_raw", "cos", "n"):
        table.add_column(col, justify="right")
    for row in aggregate:
        lo, hi = row["fve_nrm_ci95"]
        style = "bold" if row["name"] == "nla" else None
        table.add_row(row["name"], fmt(row["fve_nrm"]), f"[{fmt(lo, 2)}, {fmt(hi, 2)}]", fmt(row["fve_raw"]), fmt(row["cos"]),
                      str(row["n"]), style=style)
    return table


def run_and_report(kind: str, run, cfg, out: Path) -> tuple[dict, Path, Path]:
    """Run an experiment under a progress bar, write OUT/<kind>.json and its HTML report; (results, json, html)."""
    from nlakit.io import write_json
    from nlakit.report import write_report

    with progress_bar() as progress:
        results = run(cfg, progress=progress)
    json_path = write_json(Path(out) / f"{kind}.json", results)
    return results, json_path, write_report(kind, json_path, Path(out) / f"{kind}.html")
