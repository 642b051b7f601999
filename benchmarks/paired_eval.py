"""Two NLAs scored on the same held-out positions: the paired difference of fve_nrm, with its 95% interval.

    # the same --data, --n-positions and --seed for both, so both runs pick the same positions
    nlakit eval --nla NEW --data heldout.jsonl.gz --n-positions 480 --seed 2 --out new.json
    nlakit eval --nla default --data heldout.jsonl.gz --n-positions 480 --seed 2 --out old.json
    python benchmarks/paired_eval.py new.json old.json --out docs/benchmarks/bundle_check.json

Two unpaired intervals that overlap say little when both NLAs read the same positions: the per-position difference
cancels what the positions share (a hard token is hard for both). The bootstrap is `nlakit.metrics.summarize`, the
one every table uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.errors import NlakitError  # noqa: E402
from nlakit.io import read_json, write_json  # noqa: E402
from nlakit.metrics import summarize  # noqa: E402


def paired(a: dict, b: dict, metric: str = "fve_nrm") -> dict:
    """`a` minus `b` per position, over the positions both `nlakit eval` results scored (matched by document and
    token index). Raises when they share none."""
    va = {(r["doc"], r["pos"]): r[metric] for r in a["rows"]}
    vb = {(r["doc"], r["pos"]): r[metric] for r in b["rows"]}
    keys = sorted(set(va) & set(vb))
    if not keys:
        raise NlakitError("the two results share no positions",
                          "run both `nlakit eval` calls with the same --data, --n-positions and --seed")
    diff = [va[k] - vb[k] for k in keys]
    return {"metric": metric, "n": len(keys), "a": summarize([va[k] for k in keys]), "b": summarize([vb[k] for k in keys]),
            "a_minus_b": summarize(diff), "a_better": sum(d > 0 for d in diff)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", help="results JSON of `nlakit eval` (the NLA to test)")
    ap.add_argument("b", help="results JSON of `nlakit eval` on the same positions (the one to beat)")
    ap.add_argument("--metric", default="fve_nrm", choices=("fve_nrm", "fve_raw", "cos"))
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args()
    a, b = (read_json(p, "pass a results file written by `nlakit eval --out`") for p in (args.a, args.b))  # .json or .json.gz
    res = {"results_a": args.a, "nla_a": a["nla"], "results_b": args.b, "nla_b": b["nla"], "config": a.get("config"),
           **paired(a, b, args.metric)}
    d = res["a_minus_b"]
    print(f"{args.metric} on {res['n']} shared positions: a {res['a']['mean']:.3f}, b {res['b']['mean']:.3f}, "
          f"a - b {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], a better at {res['a_better']}")
    if args.out:
        write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
