"""Train the default NLA (SmolLM2-135M-Instruct, layer 20) on one GPU in ≤10-minute chunks, then evaluate it.

    # each call continues the run in --out; small artefacts are copied to --export after every call
    python benchmarks/train_eval.py --target /root/m/smol.gguf --out /root/run --budget 540 --export $OUT
    # once RL is done: held-out evaluation with every baseline, written to docs/benchmarks/train_eval.json
    python benchmarks/train_eval.py --target /root/m/smol.gguf --out /root/run --evaluate --export $OUT

The settings below are the ones the shipped default was trained with; they are written into the run's
results.json, and docs/BENCHMARKS.md quotes them with the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.train.ar_sft import ARConfig  # noqa: E402
from nlakit.train.av_sft import AVConfig  # noqa: E402
from nlakit.train.pipeline import TrainConfig, train_all  # noqa: E402
from nlakit.train.rl import RLConfig  # noqa: E402

GPU_CONFIG = dict(
    layer=20, n_docs=12000, positions_per_doc=6, eval_positions=1024, final_eval_positions=1024, datagen_batch=64,
    ar=ARConfig(rank=24, lr=5e-4, head_lr=1e-3, batch_size=128, epochs=2.0),
    av=AVConfig(rank=24, lr=5e-4, batch_size=64, epochs=2.0, eval_max_new_tokens=96),
    rl=RLConfig(steps=400, n_prompts=32, group=8, temperature=1.0, max_new_tokens=96, lr=5e-5, kl_coef=0.02,
                ar_lr=1e-4, ar_head_lr=2e-4, micro_batch=256, save_every=25, eval_every=50, eval_n=256),
)


def export(out: Path, dest: Path) -> None:
    """Copy the small artefacts (bundle, results, logs) to `dest` (flat names: the device returns ≤2 folders down)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "log.jsonl", "timings.json", "ar_sft.done.json", "av_sft.done.json"):
        if (out / name).exists():
            shutil.copy(out / name, dest / name)
    b = out / "bundle"
    if b.exists():
        for f in ("nla_meta.yaml", "reference.safetensors", "av/adapter_model.safetensors", "av/adapter_config.json",
                  "ar/adapter_model.safetensors", "ar/adapter_config.json", "ar/value_head.safetensors"):
            if (b / f).exists():
                (dest / "bundle" / Path(f).parent).mkdir(parents=True, exist_ok=True)
                shutil.copy(b / f, dest / "bundle" / f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="smollm2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--eval-data", default=None)
    ap.add_argument("--source", default="template")
    ap.add_argument("--budget", type=float, default=540)
    ap.add_argument("--rl-steps", type=int, default=None)
    ap.add_argument("--n-docs", type=int, default=None)
    ap.add_argument("--export", default=None)
    ap.add_argument("--evaluate", action="store_true", help="run the held-out evaluation with baselines")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig(out=args.out, target=args.target, data=args.data, eval_data=args.eval_data, source=args.source,
                      time_budget=f"{args.budget}s", device="cuda", **GPU_CONFIG)
    if args.rl_steps is not None:
        cfg = replace(cfg, rl=replace(cfg.rl, steps=args.rl_steps))
    if args.n_docs is not None:
        cfg = replace(cfg, n_docs=args.n_docs)
    t0 = time.time()

    def show(rec: dict) -> None:
        if rec.get("stage") in ("rl", "rl_eval") or rec.get("stage", "").endswith("sft") and rec.get("step", 1) % 100 == 0:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k != "time"}), flush=True)
        elif rec.get("stage", "").startswith("datagen") and rec["done"] == rec["of"]:
            print(f"{rec['stage']} done {rec['of']} at {time.time() - t0:.0f}s", flush=True)

    res = train_all(cfg, callback=show)
    print(json.dumps({k: res.get(k) for k in ("timings_sec", "finished")}, default=str))
    for k in ("ar_sft", "av_sft"):
        d = res.get(k) or {}
        print(k, json.dumps({kk: d.get(kk) for kk in ("eval_gold_fve_nrm", "eval_shuffled_fve_nrm", "final_loss")}, default=str))
        if "eval" in d:
            print(k, "eval", json.dumps({kk: d["eval"].get(kk) for kk in ("fve_nrm", "parse_rate", "mean_tokens", "copy_rate_4gram")}))
    for k in ("final_eval", "final_eval_frozen_ar", "final_eval_gold_ceiling"):
        if k in res:
            print(k, json.dumps({kk: v for kk, v in res[k].items() if kk != "examples"}, default=str)[:600])
    if args.export:
        export(Path(args.out), Path(args.export))
    print(f"wall {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
