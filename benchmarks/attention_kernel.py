"""The engine's Triton decode-attention kernel alone, at the engine's shape, for each launch setting, inside CUDA graphs.

    # one H200 (no model or staging needed: random tensors of SmolLM2's batch-1024 decode step)
    python benchmarks/attention_kernel.py --out $OUT/attention_kernel.json
    python benchmarks/attention_kernel.py --markdown docs/benchmarks/attention_kernel.json   # the table, from the JSON
    # CPU smoke run: a tiny shape under Triton's interpreter, correctness only (no timing)
    python benchmarks/attention_kernel.py --device cpu --shape 3,6,2,16,9,70 --settings 32,1,1 --out /tmp/ak.json

Each call is the op as the engine makes it: one kernel that writes the step's key and value into the caches and
attends.
The engine replays its step as one CUDA graph, so each setting is timed the same way: one graph of `--calls` kernel
calls, replayed `--reps` times between CUDA events (the custom op's Python launch, ~64-98 us a call when timed
without a graph, is then not counted). In the same run the compiled reduce path (`attention="reduce"`) is timed the
same way as the baseline, and each row states its share of the HBM bandwidth that the bytes it must read imply.
`nlakit.kernels.TUNING` is what the engine launches with; pass the best row's setting there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

def _inputs(shape: tuple[int, ...], device: str, dtype):
    import torch

    B, H, KV, D, S, L = shape
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(B, 1, H, D, device=device, dtype=dtype, generator=g).transpose(1, 2)  # the step's q: a view
    kc, vc = (torch.randn(B, KV, L, D, device=device, dtype=dtype, generator=g) for _ in range(2))
    kp, vp = (torch.randn(KV, S, D, device=device, dtype=dtype, generator=g) for _ in range(2))
    t = torch.randint(0, L, (B,), device=device, generator=g)
    t[0] = L - 1  # one row sees its whole cache
    rmask = torch.arange(L, device=device)[None] <= t[:, None]
    return q, kc, vc, kp, vp, rmask


def _graph_us(fn, calls: int, reps: int) -> float:
    """Microseconds a call of fn, from a CUDA graph of `calls` calls replayed `reps` times."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        graph.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e3 / (reps * calls)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--shape", default="1024,9,3,64,77,74", help="B,H,KV,hd,S,L (default: SmolLM2 at batch 1024)")
    p.add_argument("--settings", default="", help="BLOCK_N,num_warps,num_stages;... (default: a grid)")
    p.add_argument("--calls", type=int, default=30, help="kernel calls per graph (the engine makes one a layer)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default="attention_kernel.json")
    p.add_argument("--markdown", default="", help="print the table of this results JSON and exit")
    a = p.parse_args(argv)
    if a.markdown:
        res = json.loads(Path(a.markdown).read_text())
        print(markdown(res))
        return res
    cpu = a.device == "cpu"
    if cpu:
        os.environ["TRITON_INTERPRET"] = "1"  # before nlakit.kernels is imported
    import torch

    from nlakit import kernels
    from nlakit.blocks import _attend_reduce
    from nlakit.engine_profile import _peaks

    shape = tuple(int(x) for x in a.shape.split(","))
    B, H, KV, D, S, L = shape
    dtype = torch.float32 if cpu else torch.bfloat16
    q, kc, vc, kp, vp, rmask = _inputs(shape, a.device, dtype)
    scale = D ** -0.5

    class _Heads:  # what _attend_reduce reads of an Arch
        n_kv, n_heads, head_dim, attn_softcap = KV, H, D, None

        @staticmethod
        def softcap(s):
            return s

    rows, t = torch.arange(B, device=a.device), rmask.sum(-1) - 1  # each row's newest visible position
    k_new, v_new = kc[rows, :, t][:, :, None].clone(), vc[rows, :, t][:, :, None].clone()  # rewrites what is there

    def kernel():  # the op as the engine calls it: write the step's key and value, then attend
        return kernels.decode_attention(q, k_new, v_new, kc, vc, kp, vp, rmask, rmask, rows, t, scale, 0.0, False)

    ref = _attend_reduce(_Heads, q, kc, vc, kp, vp, None, rmask, scale).float()
    settings = ([tuple(int(x) for x in s.split(",")) for s in a.settings.split(";") if s] if a.settings else
                list(itertools.product((16, 32, 64, 128), (1, 2, 4, 8), (1, 2, 3))))
    gpu = "cpu (Triton interpreter)" if cpu else torch.cuda.get_device_name()
    peaks = _peaks(gpu)  # the assumed vendor peaks the engine's roofline uses
    bw = peaks[1] / 1e12 if peaks else None
    # what the kernel must read: each row's keys and values up to its t (later positions hold nothing yet; the reduce
    # path reads all L), the shared prefix once, the queries
    read = (2 * KV * D * int((t + 1).sum()) + 2 * KV * S * D + B * H * D) * q.element_size()
    res = {"command": " ".join(["python", "benchmarks/attention_kernel.py"] + (argv or sys.argv[1:])), "gpu": gpu,
           "torch": torch.__version__, "shape": dict(zip("B H KV hd S L".split(), shape)), "bytes_read": read,
           "assumed_hbm_tb_s": bw, "floor_us": read / (bw * 1e12) * 1e6 if bw else None, "rows": []}
    if not cpu:
        reduce = torch.compile(lambda: _attend_reduce(_Heads, q, kc, vc, kp, vp, None, rmask, scale), fullgraph=True)
        res["reduce_us"] = _graph_us(reduce, a.calls, a.reps)
    default = dict(kernels.TUNING)
    for bn, nw, ns in settings:
        kernels.TUNING.update(BLOCK_N=bn, num_warps=nw, num_stages=ns)
        row = {"BLOCK_N": bn, "num_warps": nw, "num_stages": ns}
        try:
            row["max_abs_diff_vs_reduce"] = (kernel().float() - ref).abs().max().item()
            if not cpu:
                row["us"] = _graph_us(kernel, a.calls, a.reps)
                row["bandwidth_share"] = res["floor_us"] / row["us"] if bw else None
                row["vs_reduce"] = res["reduce_us"] / row["us"]
        except Exception as e:  # noqa: BLE001 - a setting the GPU cannot launch (shared memory): record it, go on
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        res["rows"].append(row)
        print(row, flush=True)
    kernels.TUNING.update(default)
    res["rows"].sort(key=lambda r: r.get("us", float("inf")))
    res["default"] = default
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return res


def markdown(res: dict) -> str:
    """The table of a results JSON: the fastest settings first, beside the reduce path and the HBM floor."""
    floor = f"HBM floor {res['floor_us']:.1f} us a call" if res.get("floor_us") else "no HBM floor (unknown GPU)"
    if res.get("reduce_us"):
        floor += f"; the compiled reduce path {res['reduce_us']:.1f} us a call"
    lines = [f"`{res['command']}` — {res['gpu']}, torch {res['torch']}, shape {res['shape']}", "", floor, "",
             "| BLOCK_N | warps | stages | us a call | share of bandwidth | vs reduce | max abs diff |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        def f(key, fmt, scale=1.0):
            return fmt % (r[key] * scale) if r.get(key) is not None else "—"

        lines.append(f"| {r['BLOCK_N']} | {r['num_warps']} | {r['num_stages']} | {f('us', '%.1f')} | "
                     f"{f('bandwidth_share', '%.0f%%', 100)} | {f('vs_reduce', '%.2fx')} | "
                     f"{f('max_abs_diff_vs_reduce', '%.1e')} |" + (f" {r['error']}" if r.get("error") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
