"""`nlakit extract TEXT_OR_FILE --layer L --out FILE`: layer-L activations → safetensors shard(s).

Wraps `nlakit.activations.extract` and `nlakit.activations.save_shard`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from nlakit.commands._common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    LiteralOpt,
    PerLineOpt,
    console,
    open_target,
    progress_bar,
    read_texts,
)


def shard_paths(out: Path, n_shards: int) -> list[Path]:
    """`out` itself for one shard, else `stem-00000-of-00003.safetensors` beside it."""
    if n_shards == 1:
        return [out]
    stem = out.name.removesuffix(".safetensors")
    return [out.with_name(f"{stem}-{i:05d}-of-{n_shards:05d}.safetensors") for i in range(n_shards)]


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        source: str = typer.Argument(..., help="A text, or a file or folder of documents: .jsonl / .jsonl.gz ({\"text\": …} per "
                                                 "line), .parquet, or plain text (one document per file; --per-line: per line)."),
        layer: int = typer.Option(..., "--layer", help="Block K: the vector is the output of decoder block K (HF hidden_states[K+1])."),
        out: Path = typer.Option(..., "--out", help="Output .safetensors file (numbered siblings when sharded)."),
        target: str = typer.Option("smollm2", "--target", help="Target model: smollm2, gemma3-270m, an HF dir, a .gguf, tiny:llama."),
        positions: str = typer.Option("all", "--positions", help="all, last, 3,5,-1, span:START-END or match:WORD."),
        text_key: str = typer.Option("text", "--text-key", help="JSONL field holding the text."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Read at most this many documents."),
        per_line: bool = PerLineOpt,
        literal: bool = LiteralOpt,
        shard_docs: int = typer.Option(10_000, "--shard-docs", min=1, help="Documents per shard."),
        include_sinks: bool = typer.Option(False, "--include-sinks", help="Keep attention-sink positions (position 0, BOS)."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
        batch_size: int = BatchOpt,
    ):
        """Extract layer-L residual activations of text into safetensors shard(s)."""
        from nlakit.activations import extract as extract_fn
        from nlakit.activations import save_shard

        texts = read_texts(source, text_key, limit, per_line=per_line, literal=literal)
        tgt = open_target(target, device, dtype)
        tgt.check_layer(layer)
        chunks = [texts[i : i + shard_docs] for i in range(0, len(texts), shard_docs)]
        paths = shard_paths(out, len(chunks))
        n_rows, done = 0, 0
        with progress_bar() as progress:
            for chunk, path in zip(chunks, paths):
                def tick(n: int) -> None:
                    nonlocal done
                    done += n
                    if progress is not None:
                        progress("extract", done, len(texts))

                docs = extract_fn(tgt, chunk, layer, positions, batch_size=batch_size, include_sinks=include_sinks, progress=tick)
                save_shard(path, docs, {"target": tgt.spec, "d_model": tgt.d_model})
                n_rows += sum(len(d.positions) for d in docs)
        console.print(f"wrote {n_rows} vectors (d_model {tgt.d_model}, layer {layer}) from {len(texts)} text(s) to "
                      + ", ".join(str(p) for p in paths))
