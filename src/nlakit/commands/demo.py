"""`nlakit demo`: the offline quick-start — explain a few tokens of a built-in example with the bundled NLA.

Writes a self-contained `report.html` (clickable tokens, explanation per token, cosine/FVE bars beside the
baselines) and `report.json`. Runs on CPU; the first run also converts the SmolLM2 GGUF to a cached dense copy.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import ArOpt, console, open_nla, progress_bar

EXAMPLE = ("Marie Curie was born in Warsaw in 1867. She moved to Paris to study physics, and in 1903 she shared "
           "the Nobel Prize in Physics with her husband Pierre. Later she discovered two new elements, polonium and")
WORDS = ("Warsaw", "Paris", "physics", "Nobel", "husband", "polonium", "and")


def example_positions(target, text: str, words: tuple[str, ...]) -> list[int]:
    """The last token of the last occurrence of each word."""
    from nlakit.activations import resolve_positions

    offsets = target.encode([text]).offsets[0]
    out = sorted({resolve_positions(f"match:{w}", text, offsets)[-1] for w in words if w in text})
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("report.html"), "--out", help="Where to write the HTML report (the JSON goes beside it)."),
        text: str = typer.Option(EXAMPLE, "--text", help="Text to read instead of the built-in example."),
        nla: str = typer.Option("default", "--nla", help="NLA bundle directory, a released AV directory, or 'default'."),
        ar: str | None = ArOpt,
        train_data: str | None = typer.Option(None, "--train-data", help="Training JSONL for the ridge baselines "
                                              "(default: the shared corpus when it is found; otherwise they are skipped)."),
        n_train_positions: int = typer.Option(300, "--n-train-positions", min=2),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    ):
        """Explain a handful of tokens of a built-in example and write a self-contained report.html."""
        from nlakit.commands.explain import _print, _save
        from nlakit.commands._common import read_doc_file
        from nlakit.evaluate import EvalConfig, explain_text

        if train_data is None:
            from nlakit.errors import NlakitError
            from nlakit.train.pipeline import default_corpus

            try:
                train_data = default_corpus("train.jsonl.gz")
            except NlakitError:
                console.print("[dim]no training corpus found: the ridge baselines are skipped (pass --train-data)[/]")
        train_texts = read_doc_file(train_data, "--train-data", limit=max(8, n_train_positions // 2)) if train_data else None
        model, tgt = open_nla(nla, None, device, "float32", ar)
        with progress_bar(True) as progress:
            positions = example_positions(tgt, text, WORDS) or "last"
            cfg = EvalConfig(n_positions=1, n_train_positions=n_train_positions, max_new_tokens=max_new_tokens)
            results = explain_text(model, tgt, text, positions, train_texts, cfg, progress=progress)
        _save(results, out.with_suffix(".json"), out)
        _print(results)
        console.print(f"[green]wrote[/] {out} (open it in a browser) and {out.with_suffix('.json')}")
