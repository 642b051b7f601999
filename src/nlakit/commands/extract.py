"""`nlakit extract TEXT_OR_FILE --layer L --out FILE`: layer-L activations → safetensors shard(s).

Wraps `nlakit.activations.extract` and `nlakit.activations.save_shard`. Under torchrun each rank extracts its share of
every shard's batches and rank 0 merges them into the files one process writes (docs/DISTRIBUTED.md).
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
        from nlakit import distributed
        from nlakit.activations import extract as extract_fn
        from nlakit.activations import save_shard

        texts = read_texts(source, text_key, limit, per_line=per_line, literal=literal)
        tgt = open_target(target, device, dtype)
        tgt.check_layer(layer)
        chunks = [texts[i : i + shard_docs] for i in range(0, len(texts), shard_docs)]
        paths = shard_paths(out, len(chunks))
        n_rows, done = 0, 0
        with progress_bar(distributed.is_main()) as progress:
            for chunk, path in zip(chunks, paths):
                def tick(n: int) -> None:
                    nonlocal done
                    done = min(done + n * distributed.world(), len(texts))  # rank 0's pace stands for every rank's
                    if progress is not None:
                        progress("extract", done, len(texts))

                docs = extract_fn(tgt, chunk, layer, positions, batch_size=batch_size, include_sinks=include_sinks, progress=tick,
                                  shard=True)
                parts = distributed.gather({i: d for i, d in enumerate(docs) if d is not None}, path.parent, path.name)
                if parts is not None:  # rank 0: every rank's documents, back in input order
                    merged = {i: d for part in parts for i, d in part.items()}
                    docs = [merged[i] for i in range(len(chunk))]
                    save_shard(path, docs, {"target": tgt.spec, "d_model": tgt.d_model})
                    n_rows += sum(len(d.positions) for d in docs)
                distributed.barrier()
        if not distributed.is_main():
            return
        console.print(f"wrote {n_rows} vectors (d_model {tgt.d_model}, layer {layer}) from {len(texts)} text(s) to "
                      + ", ".join(str(p) for p in paths))
