"""GRPO variants at equal GPU-minutes, each started from the same supervised checkpoints, in one process.

    # after a run has finished its supervised stages (RUN holds data/, ar_sft.pt, av_sft.pt, meta/):
    python benchmarks/rl_ablation.py --run /root/run --target /root/m/smol.gguf --minutes 2.5 --out /root/abl \
        --variant base --variant lr=1e-4 --variant ppo_epochs=2 --ar-variant epochs=4 --export $OUT
    # --eval-every 100: also the in-run held-out curve of each variant (rl.eval_n positions, not counted in its minutes)
    # here: the markdown table from the exported JSON
    python benchmarks/rl_ablation.py --table docs/benchmarks/rl_ablation.json

A variant is a name and `key=value` pairs of `RLConfig` fields (several joined by commas: `lr=1e-4,kl_coef=0.05`);
`base` is the run's own RL settings. An `--ar-variant` (`ARConfig` fields: `epochs=4`, `rank=64,lr=1e-3`) retrains the
AR warm start in a copy of the run, with the same data, sidecar and AV warm start, and then runs the base GRPO settings
from it; its row also says what the new AR reads from the gold template text. Each variant copies the run's supervised stages into its own directory, trains
GRPO for `--minutes` of its steps' own time (`rl.max_minutes`; model load happens once, before), and is scored on the
same held-out positions (`final_eval_positions`) with the co-trained AR. Two throwaway steps first pay the engine's
one-time compile (`--no-warmup` skips them), so no variant's minutes include it; the second of them is profiled
phase by phase into `OUT/warm-up/rl_profile.json` (and copied to the export).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.io import write_json  # noqa: E402
from nlakit.metrics import summarize  # noqa: E402
from nlakit.train.config import build, load_config, parse_settings  # noqa: E402
from nlakit.train.pipeline import train_all  # noqa: E402
from nlakit.train.rl import eval_curve, step_split  # noqa: E402

SUPERVISED = ("data", "meta", "ar_sft.pt", "ar_sft.done.json", "av_sft.pt", "av_sft.done.json", "timings.json")


def parse_variant(text: str, section: str = "rl") -> tuple[str, dict]:
    """'base' -> ('base', {}); 'lr=1e-4,kl_coef=0.05' -> (the text, {'lr': 1e-4, 'kl_coef': 0.05}), typed by RLConfig
    (`section` "ar": ARConfig, and the name says so: 'ar.epochs=4')."""
    if text == "base" and section == "rl":
        return text, {}
    flag = "--variant" if section == "rl" else f"--{section}-variant"
    changes = {k.removeprefix(f"{section}."): v for k, v in parse_settings(text.split(","), prefix=f"{section}.", flag=flag).items()}
    build({"out": "-", section: changes})  # unknown keys, bad values: one error
    return (text if section == "rl" else f"{section}.{text}"), changes


def dir_name(name: str) -> str:
    return name.replace("=", "_").replace(",", "+")


def copy_stages(run: Path, dest: Path, items: tuple[str, ...]) -> None:
    """The named files and folders of `run` copied into `dest` (a folder already there is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in items:
        src, dst = run / item, dest / item
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)
        elif src.is_file():
            shutil.copy(src, dst)


def run_variant(name: str, changes: dict, run: Path, out: Path, cfg, target, minutes: float, eval_every: int = 0) -> dict:
    vdir = out / dir_name(name)
    if not (vdir / "results.json").exists():
        copy_stages(run, vdir, SUPERVISED)
    rl = dataclasses.replace(dataclasses.replace(cfg.rl, steps=100000, eval_every=eval_every, max_minutes=minutes), **changes)
    vcfg = dataclasses.replace(cfg, out=str(vdir), rl=rl, time_budget=None, total_minutes=None, baselines=())  # `minutes` alone ends RL
    t0 = time.monotonic()
    res = _score(train_all(vcfg, target=target))  # RL ends (finished) after `minutes` of its steps, then the final eval
    res["wall_sec"] = time.monotonic() - t0
    return {"name": name, "changes": changes, **res}


def retrain_ar(name: str, run: Path, out: Path, cfg, target) -> Path:
    """A copy of `run`'s data, sidecar and AV warm start with the AR warm start trained again under `cfg.ar`. Returns
    the copy, a run directory whose supervised stages are done (its GRPO settings are the base ones)."""
    sup = out / dir_name(name) / "supervised"
    if not (sup / "ar_sft.done.json").exists():
        copy_stages(run, sup, ("data", "meta", "av_sft.pt", "av_sft.done.json"))
        train_all(dataclasses.replace(cfg, out=str(sup), rl=dataclasses.replace(cfg.rl, steps=0), time_budget=None, baselines=(),
                                      final_eval_positions=8), target=target)  # only the AR stage is not done
    return sup


def warm_up(run: Path, out: Path, cfg, target) -> None:
    """Two throwaway GRPO steps (scored on 8 positions, not reported), so that the engine's one-time compile is paid
    here and not inside the first variant's minutes. The second step, compiled, is profiled phase by phase
    (warm-up/rl_profile.json)."""
    run_variant("warm-up", {"steps": 2, "max_minutes": None, "profile_step": 2}, run, out,
                dataclasses.replace(cfg, final_eval_positions=8), target, minutes=0)


def _score(final: dict) -> dict:
    fe = final.get("final_eval") or {}
    hist = final.get("rl_history", [])
    split = step_split(hist)  # the steady steps' mean
    return {"rl_steps": final["rl"]["steps_done"], "rl_minutes": sum(h["sec"] for h in hist) / 60,
            "first_step_sec": hist[0]["sec"] if hist else None,  # the process's first variant also pays the compile
            "curve": eval_curve(hist),
            "sec_per_step": split.pop("sec"), "split_sec": split,
            "fve_nrm": (fe.get("fve_nrm") or {}).get("mean"), "fve_nrm_ci95": (fe.get("fve_nrm") or {}).get("ci95"),
            "fve_nrm_by_position": fe.get("fve_nrm_by_position"),
            "cos": (fe.get("cos") or {}).get("mean"), "parse_rate": fe.get("parse_rate"), "n": fe.get("n"),
            "frozen_ar_fve_nrm": ((final.get("final_eval_frozen_ar") or {}).get("fve_nrm") or {}).get("mean"),
            "ar_sft_minutes": (final.get("timings_sec") or {}).get("ar_sft", 0.0) / 60,
            "ar_gold_fve_nrm_sft": ((final.get("ar_sft") or {}).get("eval_gold_fve_nrm") or {}).get("mean"),
            "ar_gold_fve_nrm_rl": (((final.get("final_eval_gold_ceiling") or {}).get("eval_gold_fve_nrm") or {}).get("mean"))}


def paired_to_first(rows: list[dict]) -> list[str]:
    """Each row's fve_nrm minus the first row's, position by position on the same held-out positions, as
    "+0.012 [+0.004, +0.020]" ("—" for the first row, or where either run stored no per-position values)."""
    first = rows[0].get("fve_nrm_by_position") if rows else None
    cells = ["—"]
    for r in rows[1:]:
        mine = r.get("fve_nrm_by_position")
        if not first or not mine or len(mine) != len(first):
            cells.append("—")
            continue
        d = summarize([a - b for a, b in zip(mine, first)])
        cells.append(f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    return cells


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    rows = d["rows"]
    lines = [f"GRPO variants, {d['minutes']} RL-minutes each from the same supervised checkpoints ({d['gpu']}); held-out "
             f"fve_nrm on {rows[0]['n'] if rows else '?'} positions, co-trained AR; paired: minus the first row, "
             "position by position.", "",
             "| variant | steps | first step s | s/step | fve_nrm | 95% CI | paired, 95% CI | frozen-SFT-AR fve_nrm | AR on gold text, SFT → RL | parse rate |",
             "|---|---:|---:|---:|---:|---|---|---:|---|---:|"]

    def num(v) -> str:
        return "—" if v is None else f"{v:.3f}"

    for r, paired in zip(rows, paired_to_first(rows)):
        ci = r["fve_nrm_ci95"] or [float("nan")] * 2
        first = f"{r['first_step_sec']:.1f}" if r.get("first_step_sec") is not None else "—"
        gold = f"{num(r.get('ar_gold_fve_nrm_sft'))} → {num(r.get('ar_gold_fve_nrm_rl'))}"
        lines.append(f"| `{r['name']}` | {r['rl_steps']} | {first} | {r['sec_per_step']:.2f} | {r['fve_nrm']:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | "
                     f"{paired} | {num(r['frozen_ar_fve_nrm'])} | {gold} | {r['parse_rate']:.2f} |")
    curves = [r for r in rows if r.get("curve")]
    if curves:  # in-run held-out evals (--eval-every), on the first eval_n positions
        lines += ["", f"Held-out fve_nrm during GRPO (first {d.get('eval_n')} positions, greedy), by step:", ""]
        lines += [f"- `{r['name']}`: " + ", ".join(f"{c['step']}: {c['eval_fve_nrm']:.3f}" for c in r["curve"]) for r in curves]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a run directory whose supervised stages are done")
    ap.add_argument("--config", default=str(ROOT / "configs" / "smollm2-l20.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="settings", help="KEY=VALUE over the config, e.g. av.epochs=3")
    ap.add_argument("--target", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--minutes", type=float, default=2.5, help="RL wall minutes per variant")
    ap.add_argument("--variant", action="append", default=[], help="RLConfig changes, e.g. lr=1e-4,kl_coef=0.05 (or base)")
    ap.add_argument("--ar-variant", action="append", default=[],
                    help="ARConfig changes, e.g. epochs=4: the AR warm start trained again, then base GRPO from it")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="GRPO steps between in-run held-out evals (rl.eval_n positions, as in the full pipeline); 0 = none")
    ap.add_argument("--export", default=None)
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                    help="first compile the engine with two throwaway steps (--no-warmup: the first variant pays it)")
    ap.add_argument("--table", default=None, help="print the markdown table of an ablation JSON")
    args = ap.parse_args()
    if args.table:
        print(table(Path(args.table)))
        return
    import torch

    from nlakit.targets import load_target

    run, out = Path(args.run), Path(args.out)
    cfg = load_config(args.config, {"out": str(run), "target": args.target}, parse_settings(args.settings))
    target = load_target(cfg.target, device=cfg.device)
    variants = [parse_variant(text) for text in args.variant or ([] if args.ar_variant else ["base"])]  # bad ones: before any work
    ar_variants = [parse_variant(text, "ar") for text in args.ar_variant]
    if args.warmup:
        warm_up(run, out, cfg, target)
        if args.export and (out / "warm-up" / "rl_profile.json").exists():
            copy_stages(out / "warm-up", Path(args.export), ("rl_profile.json",))
    rows = []
    runs = [(name, changes, {}) for name, changes in variants] + [(name, {}, changes) for name, changes in ar_variants]
    for name, changes, ar_changes in runs:
        vcfg = dataclasses.replace(cfg, ar=dataclasses.replace(cfg.ar, **ar_changes))
        vrun = retrain_ar(name, run, out, vcfg, target) if ar_changes else run  # an AR variant's own supervised stages
        rows.append({**run_variant(name, changes, vrun, out, vcfg, target, args.minutes, args.eval_every), "ar_changes": ar_changes})
        print(json.dumps(rows[-1]), flush=True)
        result = {"command": "python benchmarks/rl_ablation.py " + " ".join(sys.argv[1:]), "minutes": args.minutes,
                  "eval_n": cfg.rl.eval_n if args.eval_every else None,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU", "rows": rows}
        write_json(out / "rl_ablation.json", result)
        if args.export:
            copy_stages(out, Path(args.export), ("rl_ablation.json",))
    print(table(out / "rl_ablation.json"))


if __name__ == "__main__":
    main()
