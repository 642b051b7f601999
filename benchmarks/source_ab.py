"""Two warm-start sources, one AR each on the same data: the gold ceiling of each, paired position by position.

The AR's supervised stage is trained twice from one datagen (the second run's data/ links to the first's), once per
source; each stage's ``ar_sft.done.json`` keeps the gold-text fve_nrm of every held-out position, so the two read the
same 1,024 positions and their difference is paired.

    # on the GPU (about 7 minutes on one H200: datagen once, then two ARs of ~2.7 minutes)
    python benchmarks/source_ab.py run --target /root/m/smol.gguf --out /root/a --set bundle_target=smollm2 \
        --data train.jsonl.gz --eval-data heldout.jsonl.gz        # writes $OUT/template_exact.json, $OUT/template.json
    # here: the paired difference, by kind of text
    python benchmarks/source_ab.py compare template_exact.json template.json --eval-data heldout.jsonl.gz \
        --out docs/benchmarks/template_exact_gpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from nlakit.io import read_json, write_json  # noqa: E402
from nlakit.metrics import summarize  # noqa: E402
from nlakit.train.heldout import by_kind  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "smollm2-l20.yaml"


def run(config: Path, out: Path, sources: list[str], overrides: dict, settings: list[str], dest: Path) -> None:
    """The AR stage once per source, the first on fresh data, the rest on a link to it; done files copied to `dest`."""
    from nlakit.train.config import load_config, parse_settings
    from nlakit.train.pipeline import train_all

    for i, source in enumerate(sources):
        run_dir = out if i == 0 else out.with_name(f"{out.name}_{source}")
        if i > 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / "data").exists():
                (run_dir / "data").symlink_to((out / "data").resolve(), target_is_directory=True)
        cfg = load_config(config, {**overrides, "out": str(run_dir), "source": source, "rl.steps": 0}, parse_settings(settings))
        train_all(cfg, stop_after="ar")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_dir / "ar_sft.done.json", dest / f"{source}.json")
        print(f"done {source}: gold fve_nrm {read_json(dest / f'{source}.json')['eval_gold_fve_nrm']['mean']:.4f}", flush=True)


def eval_kinds(target: str, eval_data: str, n: int) -> list[str]:
    """The kind of text of each held-out position, in the order training's evaluation scores them (tokenizer only)."""
    from nlakit.targets import load_target
    from nlakit.train.datagen import eval_selection

    tgt = load_target(target, device="cpu")
    return [doc.get("kind", "text") for doc, _, pos in eval_selection(tgt, eval_data, n=n) for _ in pos]


def compare(a_file: Path, b_file: Path, kinds: list[str] | None) -> dict:
    """`a` minus `b`, per held-out position of the gold ceiling, overall and by kind."""
    a, b = read_json(a_file), read_json(b_file)
    va, vb = a["eval_gold_fve_nrm_by_position"], b["eval_gold_fve_nrm_by_position"]
    if len(va) != len(vb):
        raise SystemExit(f"{a_file} scored {len(va)} positions and {b_file} {len(vb)}: run both from one datagen "
                         "(`source_ab.py run` does)")
    na, nb = a["config"]["source"], b["config"]["source"]
    diff = [x - y for x, y in zip(va, vb)]
    res = {"n": len(diff), na: summarize(va), nb: summarize(vb), f"{na}_minus_{nb}": summarize(diff),
           f"{na}_better": sum(d > 0 for d in diff), "ar_steps": {na: a["steps"], nb: b["steps"]},
           "final_loss": {na: a["final_loss"], nb: b["final_loss"]},
           "gold_curve": {na: a.get("gold_curve"), nb: b.get("gold_curve")}}
    if kinds is not None:
        if len(kinds) != len(diff):
            raise SystemExit(f"--eval-data gives {len(kinds)} positions, the runs scored {len(diff)}: pass the held-out "
                             "file the runs were evaluated on")
        rows = [{"kind": k} for k in kinds]
        per_a, per_b, per_d = (by_kind(torch.tensor(v, dtype=torch.float64), rows) for v in (va, vb, diff))
        res["by_kind"] = {k: {"n": per_d[k]["n"], na: per_a[k]["mean"], nb: per_b[k]["mean"], "diff": per_d[k]}
                          for k in per_d}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="train the AR once per source from one datagen")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--out", type=Path, required=True, help="run directory of the first source; the others beside it")
    r.add_argument("--sources", default="template_exact,template")
    r.add_argument("--target")
    r.add_argument("--data")
    r.add_argument("--eval-data")
    r.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--dest", type=Path, default=Path(os.environ.get("OUT", ".")), help="where the done files go [$OUT]")
    c = sub.add_parser("compare", help="paired difference of two runs' gold ceilings")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--eval-data", help="the held-out file both were scored on: adds the per-kind breakdown")
    c.add_argument("--target", default="smollm2", help="its tokenizer picks the held-out positions [smollm2]")
    c.add_argument("--command", default="", help="the command that produced the runs, stored with the result")
    c.add_argument("--hardware", default="")
    c.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.verb == "run":
        overrides = {"target": args.target, "data": args.data, "eval_data": args.eval_data}
        run(args.config, args.out, args.sources.split(","), overrides, args.settings, args.dest)
        return
    n = len(read_json(args.a)["eval_gold_fve_nrm_by_position"])
    res = compare(args.a, args.b, eval_kinds(args.target, args.eval_data, n) if args.eval_data else None)
    res = {**res, "command": args.command, "hardware": args.hardware}
    if args.out:
        write_json(args.out, res)
    key = next(k for k in res if k.endswith("_minus_" + read_json(args.b)["config"]["source"]))
    d = res[key]
    print(f"{key}: {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] on {d['n']} positions")
    for k, v in (res.get("by_kind") or {}).items():
        print(f"  {k:>13} n={v['n']:>4} {v['diff']['mean']:+.4f} [{v['diff']['ci95'][0]:+.4f}, {v['diff']['ci95'][1]:+.4f}]")


if __name__ == "__main__":
    main()
