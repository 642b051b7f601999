"""HF generate vs the nlakit engine on the same inputs, plus extraction and AR throughput (`nlakit bench` without the CLI).

    # one H200, SmolLM2-135M in bf16: the numbers in docs/BENCHMARKS.md and docs/benchmarks/engine.json
    python benchmarks/engine.py --target /root/m/smol.gguf --device cuda --out $OUT/engine.json --time-budget 520  # ≈ 300 s
    # CPU smoke run on a tiny random model
    python benchmarks/engine.py --target tiny:llama --batch-sizes 2,4 --max-new-tokens 8 --extract-tokens 4000 --ar-tokens 4000

Needs only torch, transformers, pyyaml (and gguf for .gguf targets): no typer/rich. The JSON is rewritten after
every phase, so a run cut short by a time limit still leaves its finished rows behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.engine_bench import BenchConfig, run, sampling_rows  # noqa: E402


def _tri(v: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[v]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="smollm2")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-sizes", default="64,256,1024")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--n-batches", type=int, default=2)
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--no-hf-static", action="store_true")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--no-sampling", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--extract-tokens", type=int, default=2_000_000)
    p.add_argument("--ar-tokens", type=int, default=2_000_000)
    p.add_argument("--hf-extract-tokens", type=int, default=200_000)
    p.add_argument("--max-batch-tokens", type=int, default=65536)
    p.add_argument("--corpus", default=None)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--sync-every", type=int, default=16)
    p.add_argument("--attention", choices=("auto", "reduce", "matmul", "flex", "triton"), default="auto")
    p.add_argument("--time-budget", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per figure; the median is reported.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/benchmarks/engine.json")
    p.add_argument("--markdown", metavar="JSON", default=None, help="Print the markdown tables of a results JSON and exit.")
    a = p.parse_args(argv)
    if a.markdown:
        res = json.loads(Path(a.markdown).read_text())
        print(markdown(res))
        return res
    sizes = tuple(int(x) for x in a.batch_sizes.split(","))
    cfg = BenchConfig(target=a.target, device=a.device, dtype=a.dtype, batch_sizes=sizes,
                      max_new_tokens=a.max_new_tokens, n_batches=a.n_batches, layer=a.layer, hf=not a.no_hf,
                      hf_static=not a.no_hf_static,
                      ablations=not a.no_ablations, sampling=not a.no_sampling, profile=not a.no_profile,
                      extract_tokens=a.extract_tokens, ar_tokens=a.ar_tokens, hf_extract_tokens=a.hf_extract_tokens,
                      max_batch_tokens=a.max_batch_tokens, corpus=a.corpus, compile=_tri(a.compile),
                      cuda_graph=_tri(a.cuda_graph), sync_every=a.sync_every, attention=a.attention,
                      time_budget_s=a.time_budget, repeats=a.repeats, seed=a.seed,
                      command=" ".join(["python", "benchmarks/engine.py"] + [shlex.quote(x) for x in (argv or sys.argv[1:])]))

    def progress(stage: str, done: int, total: int | None) -> None:
        logging.getLogger("bench").info("%s %d/%s", stage, done, total)

    res = run(cfg, out_path=a.out, progress=progress)
    print(report(res))
    return res


def markdown(res: dict) -> str:
    """The docs/BENCHMARKS.md tables, from a results JSON alone."""
    def k(x):
        return "—" if x is None else _k(x)

    def x_(r, key):
        return f"{r[key]:.1f}×" if r.get(key) else "—"

    out = [f"`{res['command']}` — {res['gpu']}, {res['model']} ({res['dtype']}), {res['new_tokens']} new tokens, "
           f"torch {res['torch']}, transformers {res['transformers']}", "",
           "| batch | HF generate tok/s | HF static (compiled) tok/s | engine tok/s | engine / HF | engine / static "
           "| explanations/s HF → engine | greedy match |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        gm = f"{r['greedy_match_rate']:.1%}" if r.get("greedy_match_rate") is not None else "—"
        out.append(f"| {r['batch']} | {k(r.get('hf_tok_s'))} | {k(r.get('hf_static_tok_s'))} | {k(r.get('engine_tok_s'))} "
                   f"| {x_(r, 'ratio')} | {x_(r, 'ratio_static')} | {k(r.get('hf_expl_s'))} → {k(r.get('engine_expl_s'))} "
                   f"| {gm} |")
    top = max(res["rows"], key=lambda r: r["batch"]) if res["rows"] else {}
    if top.get("engine_s_runs"):
        runs = ", ".join(f"{t:.3f}" for t in top["engine_s_runs"])
        out += ["", f"Each figure is the median of {res['config'].get('repeats', 1)} timed runs. The engine's runs at batch "
                f"{top['batch']} took {runs} s; the median run spent {top['engine_outside_steps_ms']:.0f} ms beyond its "
                f"{top['engine_steps']} decode steps at {top['engine_step_ms']:.2f} ms"
                + (f" (the tail stepped {' → '.join(map(str, top['engine_sizes']))} slots)."
                   if len(top.get("engine_sizes") or []) > 1 else ".")]
    out += ["", f"| forward to layer L | nlakit (sorted, no mask, {res['dtype']}) | pre-engine HF path | roofline ceiling |",
            "|---|---:|---:|---:|",
            f"| extraction (layer {res['layer']}) | {k(res.get('extract_tok_s'))} | {k(res.get('extract_hf_tok_s'))} "
            f"| {k(res.get('extract_ceiling_tok_s'))} |",
            f"| AR scoring | {k(res.get('ar_tok_s'))} | {k(res.get('ar_hf_tok_s'))} | — |"]
    if res.get("ablations"):
        out += ["", "| engine at the largest batch | tok/s | step ms |", "|---|---:|---:|",
                f"| full engine | {k(max(res['rows'], key=lambda r: r['batch']).get('engine_tok_s'))} "
                f"| {max(res['rows'], key=lambda r: r['batch']).get('engine_step_ms', 0):.2f} |"]
        out += [f"| {a['name']} | {k(a.get('engine_tok_s'))} | {a.get('step_ms', 0):.2f} |" for a in res["ablations"]]
    if res.get("ceiling"):
        c = res["ceiling"]
        out += ["", f"Roofline at batch {c['batch']} (assumed {c['assumed_peak_tflops']:.0f} TFLOP/s, "
                f"{c['assumed_peak_tb_s']:.2f} TB/s): matmul {c['matmul_ms_per_step']:.3f} ms, KV read "
                f"{c['kv_read_ms_per_step']:.3f} ms (full static cache {c['kv_read_full_cache_ms_per_step']:.3f} ms), "
                f"weights {c['weights_ms_per_step']:.3f} ms per step → ceiling {k(c['tok_s'])} tok/s ({c['bound']}-bound); "
                f"for the engine's step shape (the whole static cache read, {c['generated_step_share']:.0%} of steps "
                f"emitting a generated token) {k(c.get('tok_s_this_step_shape'))} tok/s."]
    if res.get("profile"):
        p = res["profile"]
        out += ["", f"Profile ({p['source']}): {p['device_ms_per_step']:.3f} ms of kernels per step, "
                f"{p['kernels_per_step']:.0f} kernels: " + ", ".join(f"{g} {v:.3f} ms" for g, v in p["groups_ms"].items())]
    for key, what in (("extract_profile", "extraction"), ("ar_profile", "AR scoring")):
        if res.get(key):
            p = res[key]
            out += ["", f"Profile of {what} over {p['tokens']:,} tokens: {p['wall_ms']:.1f} ms wall, "
                    f"{p['device_ms']:.1f} ms of kernels ({p['kernels']:.0f} kernels, {k(p['device_tok_s'])} tok/s "
                    "on kernel time alone): " + ", ".join(f"{g} {v:.2f} ms" for g, v in p["groups_ms"].items())]
    return "\n".join(out)


def _k(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.1f}"


def report(res: dict) -> str:
    """A plain-text summary of a results dict."""
    lines = [f"{res['model']} ({res['dtype']}) on {res['gpu']}, {res['new_tokens']} new tokens, torch {res['torch']}, "
             f"transformers {res['transformers']}",
             f"{'batch':>6} {'HF tok/s':>10} {'static':>10} {'engine':>10} {'ratio':>7} {'vs static':>9} {'match':>6}  mode"]
    for r in res["rows"]:
        ratio = f"{r['ratio']:.1f}x" if r.get("ratio") else "-"
        rs = f"{r['ratio_static']:.1f}x" if r.get("ratio_static") else "-"
        match = f"{r['greedy_match_rate']:.2f}" if r.get("greedy_match_rate") is not None else "-"
        lines.append(f"{r['batch']:>6} {_k(r.get('hf_tok_s')):>10} {_k(r.get('hf_static_tok_s')):>10} "
                     f"{_k(r.get('engine_tok_s')):>10} {ratio:>7} {rs:>9} {match:>6}  {r.get('engine_mode', '')} "
                     f"(step {r.get('engine_step_ms', 0):.2f} ms, setup {r.get('engine_setup_s', 0):.0f} s)")
    lines.append(f"extraction: {_k(res.get('extract_tok_s'))} tok/s (eager {_k(res.get('extract_eager_tok_s'))}, compiled "
                 f"{_k(res.get('extract_compiled_tok_s'))}, HF path {_k(res.get('extract_hf_tok_s'))}, ceiling "
                 f"{_k(res.get('extract_ceiling_tok_s'))})")
    lines.append(f"AR scoring: {_k(res.get('ar_tok_s'))} tok/s (eager {_k(res.get('ar_eager_tok_s'))}, compiled "
                 f"{_k(res.get('ar_compiled_tok_s'))}, HF path {_k(res.get('ar_hf_tok_s'))})")
    for ab in res.get("ablations", []):
        lines.append(f"ablation {ab['name']}: {_k(ab.get('engine_tok_s'))} tok/s {ab.get('error', '')}")
    for srow in sampling_rows(res):
        lines.append(f"sampling: {json.dumps(srow)}")
    if res.get("ceiling"):
        lines.append(f"ceiling: {json.dumps(res['ceiling'])}")
    if res.get("profile"):
        lines.append(f"profile groups (ms/step): {json.dumps(res['profile']['groups_ms'])}")
    lines += [f"skipped: {s}" for s in res.get("skipped", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("torch", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    main()
