"""Data-parallel scaling of `train all`: datagen, AR SFT and RL-rollout tokens/s on 1, 2, 4, 8 GPUs (docs/DISTRIBUTED.md).

    # one node with 8 GPUs: fills the scaling table of docs/DISTRIBUTED.md
    python benchmarks/scaling.py --config configs/smollm2-l20.yaml --gpus 1,2,4,8 --n-docs 4000 --rl-steps 30 \\
        --out runs/scaling --json docs/benchmarks/scaling.json
    # CPU smoke run: 1 and 2 gloo processes on the tiny model
    python benchmarks/scaling.py --config tiny.yaml --gpus 1,2 --out /tmp/scaling

Each GPU count runs `torchrun --standalone --nproc-per-node N -m nlakit train all` on the same config into its own
directory (an existing finished directory is read, not rerun), then reads three rates from what the run wrote:
- datagen: tokens read (``data/datagen.done.json``) / datagen seconds (``timings.json``);
- AR SFT: explanation tokens trained (the ``ar`` split's texts, tokenized, times the epochs) over the steps between
  the stage's first and last log lines / the time between those lines (model loading and the evaluation excluded);
- RL rollouts: tokens generated (mean length x n_prompts x group per step) / generation seconds (``gen_sec``).
Efficiency = (rate on N / rate on the smallest N) / (N / smallest N). The table is printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.io import read_json, read_jsonl, write_json  # noqa: E402


def run(n: int, config: str, out: Path, extra: list[str]) -> None:
    if (out / "results.json").exists() and read_json(out / "results.json").get("finished"):
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "nlakit",
           "train", "all", "--config", config, "--out", str(out), *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def ar_tokens(out: Path, cfg: dict) -> int:
    """Explanation tokens in one pass over the ``ar`` split (what AR SFT reads), with the target's tokenizer."""
    from nlakit.targets import load_target

    tok = load_target(cfg["target"], device="cpu").tokenizer
    rows = [r for r in read_jsonl(out / "data" / "pairs.jsonl") if r["split"] == "ar"]
    texts = [r["explanations"].get(cfg.get("source", "template"), r["explanations"]["template"]) for r in rows]
    max_length = cfg["ar"].get("max_length", 256)
    return sum(min(len(ids), max_length) for ids in tok(texts, add_special_tokens=True)["input_ids"])


def rates(out: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    timings, results = read_json(out / "timings.json"), read_json(out / "results.json")
    datagen = read_json(out / "data" / "datagen.done.json")
    log = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r.get("stage") == "ar_sft"]
    first, last = log[0], log[-1]
    steps_timed = last["step"] - first["step"]
    ar_per_step = ar_tokens(out, cfg) * cfg["ar"]["epochs"] / last["of"]
    history = results["rl_history"]
    rl_tokens = sum(h["length"] for h in history) * cfg["rl"]["n_prompts"] * cfg["rl"]["group"]
    return {"datagen_tokens_per_s": datagen["tokens"] / timings["datagen"],
            "ar_tokens_per_s": ar_per_step * steps_timed / (last["time"] - first["time"]) if steps_timed else None,
            "rl_rollout_tokens_per_s": rl_tokens / sum(h["gen_sec"] for h in history) if history else None}


def table(rows: dict[int, dict]) -> str:
    keys = ("datagen_tokens_per_s", "ar_tokens_per_s", "rl_rollout_tokens_per_s")
    base_n = min(rows)
    lines = ["| GPUs | datagen tokens/s | AR SFT tokens/s | RL rollout tokens/s | efficiency (datagen / AR / RL) |",
             "|---|---|---|---|---|"]
    for n, r in sorted(rows.items()):
        eff = [(r[k] / rows[base_n][k]) / (n / base_n) if r[k] and rows[base_n][k] else None for k in keys]
        lines.append(f"| {n} | " + " | ".join(f"{r[k]:,.0f}" if r[k] else "—" for k in keys) + " | "
                     + " / ".join(f"{e:.2f}" if e is not None else "—" for e in eff) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--gpus", default="1,2,4,8", help="process counts, comma-separated")
    p.add_argument("--out", required=True, help="one run directory per count goes under it (gpus1, gpus2, ...)")
    p.add_argument("--n-docs", type=int, default=None)
    p.add_argument("--rl-steps", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the measurements here")
    a = p.parse_args(argv)
    extra = (["--n-docs", str(a.n_docs)] if a.n_docs else []) + (["--rl-steps", str(a.rl_steps)] if a.rl_steps else [])
    rows = {}
    for n in (int(x) for x in a.gpus.split(",")):
        out = Path(a.out) / f"gpus{n}"
        run(n, a.config, out, extra)
        rows[n] = rates(out)
    print(table(rows))
    if a.json:
        write_json(a.json, {"config": a.config, "extra_flags": extra, "rows": rows, "table": table(rows)})
    return rows


if __name__ == "__main__":
    main()
