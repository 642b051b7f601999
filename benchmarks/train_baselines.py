"""Baseline rows for docs/benchmarks/train_eval.json, on exactly the held-out positions the NLA was scored on.

    python benchmarks/train_baselines.py --out docs/benchmarks/train_eval.json \
        --nla-results docs/benchmarks/runs/default_nla_results.json

The NLA rows (`av_sft`, `av_rl`) come from the GPU training run's own held-out evaluation (results.json of
`benchmarks/train_eval.py`, copied into docs/benchmarks/runs/). This script rebuilds the same 1,024 held-out
positions (`nlakit.train.datagen.eval_selection`: same seed, same documents, positions >= 33), extracts the gold
layer-20 vectors on this machine, fits the ridge baselines on training-corpus positions, and scores every baseline
with the same metric code (`nlakit.metrics.score`). It runs on CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from nlakit import baselines as B  # noqa: E402
from nlakit.activations import extract  # noqa: E402
from nlakit.bundle import load_nla  # noqa: E402
from nlakit.evaluate import aggregate_row  # noqa: E402
from nlakit.io import read_jsonl, write_json  # noqa: E402
from nlakit.metrics import score  # noqa: E402
from nlakit.targets import load_target  # noqa: E402
from nlakit.train.datagen import _doc_text, eval_selection  # noqa: E402

ORDER = ["mean", "ridge_token", "ridge_token_bag8", "oracle_echo4", "oracle_echo8", "oracle_echo32", "echo_ar8", "echo_ar32"]


def samples_at(target, layer: int, texts: list[str], positions: list[list[int]], max_tokens: int) -> B.Samples:
    # cut each text after its last chosen token: causal attention makes the vectors identical, and it saves CPU time
    cut = []
    for text, pos in zip(texts, positions):
        offsets = target.encode([text], max_length=max_tokens).offsets[0]
        short = text[: offsets[max(pos)][1]]
        same = target.encode([short]).input_ids[0].tolist() == target.encode([text], max_length=max_tokens).input_ids[0, : max(pos) + 1].tolist()
        cut.append(short if same else text)  # keep the full text where cutting would change the tokenisation
    texts = cut
    by_text = dict(zip(texts, positions))
    docs = extract(target, texts, layer, positions=lambda text, n: by_text[text], include_sinks=True, max_length=max_tokens)
    return B.Samples.from_docs(docs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="smollm2")
    ap.add_argument("--nla", default="default")
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--data", default="../shared/corpus/train.jsonl.gz")
    ap.add_argument("--eval-data", default="../shared/corpus/heldout.jsonl.gz")
    ap.add_argument("--n-positions", type=int, default=1024)
    ap.add_argument("--n-train-docs", type=int, default=400)
    ap.add_argument("--nla-results", default=None, help="results.json of the GPU training run (NLA rows)")
    ap.add_argument("--out", default="docs/benchmarks/train_eval.json")
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(0)
    target = load_target(args.target)
    nla = load_nla(args.nla, target=target)
    ref = nla.require_reference()

    sel = eval_selection(target, args.eval_data, n=args.n_positions)
    test = samples_at(target, args.layer, [t for _, t, _ in sel], [p for _, _, p in sel], 256)
    docs = read_jsonl(args.data)
    random.Random(7).shuffle(docs)
    train_texts, train_pos = [], []
    for d in docs[: args.n_train_docs]:
        text = _doc_text(target, d)
        n = len(target.encode([text], max_length=256).input_ids[0])
        cand = list(range(33, n))
        if cand:
            train_texts.append(text)
            train_pos.append(sorted(random.Random(d["id"]).sample(cand, min(3, len(cand)))))
    train = samples_at(target, args.layer, train_texts, train_pos, 256)
    print(f"positions: {len(test)} held-out, {len(train)} training ({time.time() - t0:.0f}s)", flush=True)

    preds = B.compute(tuple(ORDER), target=target, ar=nla.ar, layer=args.layer, ref=ref, train=train, test=test,
                      progress=lambda name: print(f"  {name} done ({time.time() - t0:.0f}s)", flush=True))
    rows = [aggregate_row(name, score(preds[name].vectors, test.vectors, ref, direction_only=preds[name].direction_only))
            for name in ORDER if name in preds]
    nla_rows, extra = [], {}
    if args.nla_results:
        res = json.loads(Path(args.nla_results).read_text())
        for name, ev in (("av_sft", res["av_sft"]["eval"]), ("av_rl", res.get("final_eval")),
                         ("av_rl_frozen_sft_ar", res.get("final_eval_frozen_ar"))):
            if ev:
                nla_rows.append({"name": name, "fve_nrm": ev["fve_nrm"]["mean"], "fve_nrm_ci95": ev["fve_nrm"]["ci95"],
                                 "fve_raw": None, "cos": ev["cos"]["mean"] if "cos" in ev else None, "n": ev["n"],
                                 "measured_on": res.get("device", "GPU")})
        extra = {"gpu": res.get("device"), "timings_sec": res.get("timings_sec"), "rl_steps": res.get("rl", {}).get("steps_done"),
                 "av_rl_parse_rate": (res.get("final_eval") or {}).get("parse_rate"),
                 "av_rl_mean_tokens": (res.get("final_eval") or {}).get("mean_tokens"),
                 "av_rl_copy_rate_4gram": (res.get("final_eval") or {}).get("copy_rate_4gram"),
                 "gold_template_ceiling": (res.get("final_eval_gold_ceiling") or {}).get("eval_gold_fve_nrm"),
                 "examples": (res.get("final_eval") or {}).get("examples", [])}
    out = {"command": "python benchmarks/train_baselines.py " + " ".join(sys.argv[1:]),
           "gpu": extra.get("gpu"), "baselines_hardware": f"CPU ({platform.machine()}), fp32",
           "n_positions": len(test), "n_train_positions": len(train), "rows": rows + nla_rows,
           "note": ("baseline rows computed here on the same held-out positions as the NLA rows; NLA rows measured on the GPU "
                    "(bf16 autocast) during training; fve_raw is not logged for NLA rows by the training evaluation"),
           **{k: v for k, v in extra.items() if k != "gpu"}, "seconds": time.time() - t0}
    write_json(args.out, out)
    for r in out["rows"]:
        ci = r["fve_nrm_ci95"]
        print(f"{r['name']:<22} fve_nrm {r['fve_nrm']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  "
              f"fve_raw {r['fve_raw'] if r['fve_raw'] is None else round(r['fve_raw'], 3)}  cos {r['cos']:.3f}")


if __name__ == "__main__":
    main()
