"""`nlakit bench`: HF generate vs the nlakit engine on the same inputs, plus extraction and AR throughput.

    nlakit bench --target tiny:llama --batch-sizes 2,4 --max-new-tokens 8 --extract-tokens 2000 --ar-tokens 2000
    nlakit bench --target smollm2 --device cuda --out docs/benchmarks/engine.json

Wraps `nlakit.engine_bench.run`; prints one table and writes the results JSON (after every phase) with --out.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from nlakit.errors import NlakitError


def _tristate(value: str, name: str) -> Optional[bool]:
    v = value.lower()
    if v not in ("auto", "on", "off"):
        raise NlakitError(f"--{name} {value!r} is not auto, on or off", f"pass --{name} auto|on|off")
    return None if v == "auto" else v == "on"


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise NlakitError(f"--batch-sizes {value!r} is not a list of positive integers", "pass e.g. --batch-sizes 64,256,1024")
    return sizes


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        target: str = typer.Option("tiny:llama", "--target", help="smollm2, gemma3-270m, HF dir, .gguf, tiny:llama, ..."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
        dtype: str = typer.Option("auto", "--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16."),
        batch_sizes: str = typer.Option("64,256,1024", "--batch-sizes", help="Comma-separated batch sizes."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
        n_batches: int = typer.Option(2, "--n-batches", min=1, help="Rows per batch size = batch x this."),
        layer: Optional[int] = typer.Option(None, "--layer", help="Extraction layer (default: two thirds of the depth)."),
        hf: bool = typer.Option(True, "--hf/--no-hf", help="Time plain HF generate (default cache)."),
        hf_static: bool = typer.Option(True, "--hf-static/--no-hf-static", help="Time HF generate with a static cache (CUDA)."),
        sampling: bool = typer.Option(True, "--sampling/--no-sampling", help="Also time the engine at temperature 1."),
        extract_tokens: int = typer.Option(2_000_000, "--extract-tokens", min=1),
        ar_tokens: int = typer.Option(2_000_000, "--ar-tokens", min=1),
        hf_extract_tokens: int = typer.Option(200_000, "--hf-extract-tokens", min=1, help="Tokens for the HF-path baselines."),
        max_batch_tokens: int = typer.Option(65536, "--max-batch-tokens", min=1),
        corpus: Optional[str] = typer.Option(None, "--corpus",
                                             help="A .jsonl(.gz) with 'text' (default: shared corpus, else synthetic)."),
        profile: bool = typer.Option(True, "--profile/--no-profile", help="Profile decode steps at the largest batch."),
        ablations: bool = typer.Option(True, "--ablations/--no-ablations",
                                       help="Time the engine without fusion / CUDA graph / compile (CUDA)."),
        compile: str = typer.Option("auto", "--compile", help="torch.compile the decode step: auto (CUDA), on, off."),
        cuda_graph: str = typer.Option("auto", "--cuda-graph", help="CUDA graph for the decode step: auto, on, off."),
        sync_every: int = typer.Option(16, "--sync-every", min=1, help="Decode steps between checks for finished rows."),
        attention: str = typer.Option("auto", "--attention",
                                      help="The engine's decode attention: auto, reduce, matmul, flex or triton."),
        time_budget: float = typer.Option(0.0, "--time-budget", help="Seconds; optional phases are skipped when low (0 = none)."),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs per figure; the median is reported."),
        seed: int = typer.Option(0, "--seed"),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the results JSON here (e.g. docs/benchmarks/engine.json)."),
        as_json: bool = typer.Option(False, "--json", help="Print the results JSON instead of the table."),
    ):
        """Tokens/s of HF generate and the engine on the same vectors, explanations/s, ratio, greedy match, extraction and AR."""
        from nlakit.engine_bench import BenchConfig, run
        from nlakit.commands._common import progress_bar

        cfg = BenchConfig(target=target, device=device, dtype=dtype, batch_sizes=_sizes(batch_sizes),
                          max_new_tokens=max_new_tokens, n_batches=n_batches, layer=layer, hf=hf, hf_static=hf_static,
                          sampling=sampling, extract_tokens=extract_tokens, ar_tokens=ar_tokens,
                          hf_extract_tokens=hf_extract_tokens, max_batch_tokens=max_batch_tokens, corpus=corpus,
                          profile=profile, ablations=ablations,
                          compile=_tristate(compile, "compile"), cuda_graph=_tristate(cuda_graph, "cuda-graph"),
                          sync_every=sync_every, attention=attention, time_budget_s=time_budget, repeats=repeats, seed=seed,
                          command=" ".join(["nlakit", "bench"] + [shlex.quote(a) for a in sys.argv[2:]]))
        with progress_bar(not as_json) as progress:
            res = run(cfg, out_path=out, progress=progress)
        if as_json:
            typer.echo(json.dumps(res, indent=2, ensure_ascii=False))
            return
        _print(res, out)


def _print(res: dict, out: Optional[Path]) -> None:
    from rich.table import Table

    from nlakit.commands._common import console
    from nlakit.engine_bench import sampling_rows

    def k(x, unit=""):
        if x is None:
            return "—"
        return f"{x / 1e6:.2f}M{unit}" if x >= 1e6 else f"{x / 1e3:.1f}k{unit}" if x >= 1e3 else f"{x:.1f}{unit}"

    def r(x, nd=2):
        return "—" if x is None else f"{x:.{nd}f}"

    t = Table(title=f"AV generation, {res['model']} ({res['dtype']}) on {res['gpu']}, {res['new_tokens']} new tokens",
              title_justify="left")
    for col in ("batch", "HF tok/s", "HF static tok/s", "engine tok/s", "ratio", "vs static", "expl/s HF → engine",
                "greedy match", "engine mode"):
        t.add_column(col, justify="right" if col != "engine mode" else "left")
    for row in res["rows"]:
        t.add_row(str(row["batch"]), k(row.get("hf_tok_s")), k(row.get("hf_static_tok_s")), k(row.get("engine_tok_s")),
                  r(row.get("ratio"), 1) + "x", r(row.get("ratio_static"), 1) + "x",
                  f"{k(row.get('hf_expl_s'))} → {k(row.get('engine_expl_s'))}", r(row.get("greedy_match_rate")),
                  row.get("engine_mode", ""))
    console.print(t)
    console.print(f"extraction (layer {res['layer']}): {k(res.get('extract_tok_s'))} tok/s "
                  f"(HF path {k(res.get('extract_hf_tok_s'))}); AR scoring: {k(res.get('ar_tok_s'))} tok/s "
                  f"(HF path {k(res.get('ar_hf_tok_s'))})")
    for s in sampling_rows(res):
        same = s.get("same_as_largest_batch_rate")
        console.print(f"sampling (T=1, batch {s['batch']}, {s['mode']}): {k(s['engine_tok_s'])} tok/s, reproducible: "
                      f"{s['reproducible']}" + (f", rows as at the largest batch: {same:.0%}" if same is not None else ""))
    if res.get("ceiling"):
        c = res["ceiling"]
        console.print(f"roofline ceiling at batch {c['batch']}: {k(c['tok_s'])} tok/s ({c['bound']}-bound; matmul "
                      f"{c['matmul_ms_per_step']:.3f} ms, KV {c['kv_read_ms_per_step']:.3f} ms per step)")
    for s in res.get("skipped", []):
        console.print(f"[dim]skipped: {s}[/]")
    if out is not None:
        console.print(f"results: {out}")
