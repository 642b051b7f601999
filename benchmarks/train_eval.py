"""Train the default NLA from its config file on one GPU, then write the benchmark JSON.

    # one process for the whole pipeline (the shipped run: started detached in one device call, watched from the next)
    python benchmarks/train_eval.py --target /root/m/smol.gguf --out /root/run --budget 1650 --export /root/exp --export-bundle
    # or in <=10-minute calls that each continue the run in --out (each call reloads and recompiles: ~1 minute lost)
    python benchmarks/train_eval.py --target /root/m/smol.gguf --out /root/run --budget 540 --export $OUT
    # here, from the exported results: docs/benchmarks/train_eval.json and the plots
    python benchmarks/train_eval.py --render RESULTS.json --docs docs/benchmarks

On a machine that drops commands after 10 minutes, start the first form with `setsid nohup ... &` and poll it
with `while kill -0 PID; do sleep 10; done` (not `pgrep -f train_eval.py`, which also matches the polling shell).

The settings are `configs/smollm2-l20.yaml` (`nlakit train all --config configs/smollm2-l20.yaml` runs the same
pipeline in one call); this script only adds the device chunking, the export and the rendering.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nlakit.io import read_json, write_json  # noqa: E402
from nlakit.train.config import load_config, parse_settings  # noqa: E402
from nlakit.train.rl import eval_curve, step_split  # noqa: E402
from nlakit.train.pipeline import train_all  # noqa: E402

CONFIG = ROOT / "configs" / "smollm2-l20.yaml"
EXPORT_FILES = ("results.json", "log.jsonl", "timings.json", "config.yaml", "ar_sft.done.json", "av_sft.done.json")


def export(out: Path, dest: Path, bundle: bool = False) -> None:
    """Pack the small artefacts into `dest`: run.tar.gz (results, logs, config) and, with `bundle`, the bundle as
    bundle_av.tar + bundle_rest.tar (the device returns at most 8 files of at most 16 MB)."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / "run.tar.gz", "w:gz") as t:
        for name in EXPORT_FILES:
            if (out / name).exists():
                t.add(out / name, arcname=name)
    b = out / "bundle"
    for attempt in range(3):  # mid-run, save_bundle may be swapping a new checkpoint's bundle into place
        if not (bundle and b.exists()):
            break
        try:
            with tarfile.open(dest / "bundle_av.tar", "w") as t:
                t.add(b / "av", arcname="bundle/av")
            with tarfile.open(dest / "bundle_rest.tar", "w") as t:
                for f in sorted(b.iterdir()):
                    if f.name != "av":
                        t.add(f, arcname=f"bundle/{f.name}")
            break
        except (FileNotFoundError, tarfile.TarError):
            time.sleep(2)


def _row(name: str, ev: dict, device: str | None) -> dict:
    return {"name": name, "fve_nrm": ev["fve_nrm"]["mean"], "fve_nrm_ci95": ev["fve_nrm"]["ci95"],
            "fve_raw": (ev.get("fve_raw") or {}).get("mean"), "cos": ev["cos"]["mean"], "n": ev["n"], "measured_on": device,
            "by_kind": {k: v["mean"] for k, v in (ev.get("by_kind") or {}).items()}}


def benchmark_json(res: dict, command: str) -> dict:
    """docs/benchmarks/train_eval.json from a finished run's results.json (the schema BENCHMARKS.md §1 reads)."""
    dev = res.get("device")
    rows = [{**r, "by_kind": {k: v["mean"] for k, v in r.get("by_kind", {}).items()}, "measured_on": dev}
            for r in res.get("baselines", [])]
    for name, ev in (("av_sft", (res.get("av_sft") or {}).get("eval")), ("av_rl", res.get("final_eval")),
                     ("av_rl_frozen_sft_ar", res.get("final_eval_frozen_ar"))):
        if ev:
            rows.append(_row(name, ev, dev))
    hist = res.get("rl_history", [])
    timings = res.get("timings_sec", {})
    fe = res.get("final_eval") or {}
    gold = res.get("final_eval_gold_ceiling") or {}
    return {
        "command": command, "gpu": dev, "config": res.get("config"), "n_positions": fe.get("n"),
        "n_train_positions_baselines": res.get("n_train_positions_baselines"), "rows": rows,
        "gpu_minutes": sum(timings.values()) / 60, "gpu_minutes_per_stage": {k: v / 60 for k, v in timings.items()},
        "rl_steps": (res.get("rl") or {}).get("steps_done"),
        "rl_step_split_sec": step_split(hist),
        "rl_engine_mode": next((h["engine_mode"] for h in hist if "engine_mode" in h), None),
        "rl_pass_modes": (res.get("rl") or {}).get("pass_modes"),  # reference / policy / AR: cuda graphs or eager (why)
        "rl_pass_layout": (res.get("rl") or {}).get("pass_layout"),  # a row per rollout, or packed groups (rl.pack_groups)
        "rl_curve": eval_curve(hist),
        "rl_train_curve": [{"step": h["step"], "fve_nrm": h.get("fve_nrm"), "kl": h.get("kl"), "length": h.get("length")}
                           for h in hist[::10]],
        "ar_gold_curve": (res.get("ar_sft") or {}).get("gold_curve"),  # {positions, points: [{step, epochs, gold_fve_nrm}]}
        "gold_template_ceiling": {"after_sft": ((res.get("ar_sft") or {}).get("eval_gold_fve_nrm") or {}).get("mean"),
                                  "after_rl": (gold.get("eval_gold_fve_nrm") or {}).get("mean")},
        "av_rl_parse_rate": fe.get("parse_rate"), "av_rl_mean_tokens": fe.get("mean_tokens"),
        "av_rl_copy_rate_4gram": fe.get("copy_rate_4gram"), "examples": fe.get("examples", []),
    }


KINDS = ("prose", "fiction", "chat", "math", "code", "multilingual")


def _md_cell(text: str, n: int = 160) -> str:
    text = " ".join(str(text).replace("|", "\\|").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def markdown(bench: dict) -> str:
    """The tables of BENCHMARKS.md §1, from train_eval.json alone."""
    out = [f"Held-out positions: {bench['n_positions']} (every row on the same positions); ridge and oracle baselines fitted "
           f"on {bench['n_train_positions_baselines']:,} training positions. GPU: {bench['gpu']}.", "",
           "| predictor | fve_nrm | 95% CI | fve_raw | cos | n |", "|---|---:|---|---:|---:|---:|"]
    for r in bench["rows"]:
        raw = "—" if r.get("fve_raw") is None else f"{r['fve_raw']:.3f}"
        out.append(f"| `{r['name']}` | {r['fve_nrm']:.3f} | [{r['fve_nrm_ci95'][0]:.3f}, {r['fve_nrm_ci95'][1]:.3f}] | {raw} | "
                   f"{r['cos']:.3f} | {r['n']} |")
    out += ["", "**fve_nrm by kind of text** (same positions; n per kind in the results JSON):", "",
            "| predictor | " + " | ".join(KINDS) + " |", "|---|" + "---:|" * len(KINDS)]
    for r in bench["rows"]:
        out.append(f"| `{r['name']}` | " + " | ".join(f"{r['by_kind'].get(k, float('nan')):.3f}" for k in KINDS) + " |")
    t = bench["gpu_minutes_per_stage"]
    out += ["", f"**GPU-minutes per stage** (total {bench['gpu_minutes']:.1f}; compile and capture included): "
            + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + ".", ""]
    gold, curve = bench.get("gold_template_ceiling") or {}, bench.get("ar_gold_curve")
    if gold.get("after_sft") is not None:
        line = (f"**The AR fed the gold template text** (held-out fve_nrm, all positions): {gold['after_sft']:.3f} after its SFT"
                + (f", {gold['after_rl']:.3f} after RL" if gold.get("after_rl") is not None else "") + ".")
        if curve:
            line += (f" During its SFT (first {curve['positions']} positions): "
                     + ", ".join(f"step {c['step']} ({c['epochs']:.2f} epochs): {c['gold_fve_nrm']:.3f}" for c in curve["points"]) + ".")
        out += [line, ""]
    sp = bench["rl_step_split_sec"]
    out += [f"**GRPO step time** (mean over steps 6–{bench['rl_steps']}, {bench['config']['rl']['n_prompts']} activations × "
            f"{bench['config']['rl']['group']} samples, engine `{bench['rl_engine_mode']}`"
            + ("".join(f", {k} `{v}`" for k, v in bench["rl_pass_modes"].items()) if bench.get("rl_pass_modes") else "")
            + (f", reference and policy rows: {bench['rl_pass_layout']}" if bench.get("rl_pass_layout") else "")
            + "):", "",
            "| generation | reward (AR) | reference log-probs | policy update | AR update | weight sync | whole step |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            "| " + " | ".join(f"{sp[k]:.3f} s" for k in ("gen_sec", "reward_sec", "ref_sec", "policy_sec", "ar_sec", "sync_sec", "sec"))
            + " |", "",
            "**Held-out fve_nrm during RL** (first 256 positions, greedy): "
            + ", ".join(f"step {c['step']}: {c['eval_fve_nrm']:.3f}" for c in bench["rl_curve"]) + ".", "",
            "![held-out fve_nrm against GRPO step and GPU-minutes](benchmarks/train_eval_curve.png)", "",
            f"**{len(bench['examples'])} seeded held-out examples** (`examples` in the JSON):", "",
            "| fve_nrm | cos | kind | token | context (end) | explanation |", "|---:|---:|---|---|---|---|"]
    for e in bench["examples"]:
        out.append(f"| {e['fve_nrm']:.2f} | {e['cos']:.2f} | {e.get('kind') or ''} | `{e['token']!r}` | "
                   f"…{_md_cell(e['context_tail'][-70:], 80)} | {_md_cell(e['explanation'], 240)} |")
    return "\n".join(out) + "\n"


def splice(doc: Path, text: str, tag: str = "train_eval") -> None:
    """Replace the block between <!-- tag:begin --> and <!-- tag:end --> in `doc` with `text`."""
    begin, end = f"<!-- {tag}:begin (generated by benchmarks/train_eval.py --render) -->", f"<!-- {tag}:end -->"
    body = doc.read_text(encoding="utf-8")
    if begin not in body:
        return
    head, rest = body.split(begin, 1)
    doc.write_text(head + begin + "\n" + text + end + rest.split(end, 1)[1], encoding="utf-8")


def render(results: Path, docs: Path) -> None:
    """Write train_eval.json and the two curves (fve_nrm against RL step and against GPU-minutes) into `docs`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = read_json(results)  # .json or .json.gz
    bench = benchmark_json(res, res.get("command", "python benchmarks/train_eval.py"))
    write_json(docs / "train_eval.json", bench)
    by_name = {r["name"]: r["fve_nrm"] for r in bench["rows"]}
    curve = [(0, by_name["av_sft"])] if "av_sft" in by_name else []
    curve += [(c["step"], c["eval_fve_nrm"]) for c in bench["rl_curve"]]
    t = bench["gpu_minutes_per_stage"]
    before_rl = sum(v for k, v in t.items() if k in ("datagen", "ar_sft", "av_sft"))
    per_step = t.get("rl", 0) / max(1, bench["rl_steps"] or 1)
    refs = {name: by_name[name] for name in ("ridge_token", "oracle_echo4") if name in by_name}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, xs, label in ((axes[0], [s for s, _ in curve], "GRPO step"),
                          (axes[1], [before_rl + s * per_step for s, _ in curve], "GPU-minutes (whole pipeline)")):
        ax.plot(xs, [f for _, f in curve], marker="o", color="C0", label="NLA (held-out, first 256 positions)")
        final = by_name.get("av_rl")
        if final is not None and bench["rl_steps"]:
            x_end = bench["rl_steps"] if ax is axes[0] else before_rl + bench["rl_steps"] * per_step
            ax.plot([x_end], [final], marker="*", ms=12, color="C0", ls="none", label="NLA, final (all positions)")
        for i, (name, v) in enumerate(refs.items()):
            ax.axhline(v, ls="--", color=f"C{i + 1}", label=f"{name} (full eval set)")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out fve_nrm")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.savefig(docs / "train_eval_curve.png", dpi=110)
    splice(docs.parent / "BENCHMARKS.md", markdown(bench))
    print(f"wrote {docs / 'train_eval.json'} and {docs / 'train_eval_curve.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--set", action="append", default=[], dest="settings", help="KEY=VALUE over the config, e.g. av.epochs=3")
    ap.add_argument("--target", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--eval-data", default=None)
    ap.add_argument("--budget", type=float, default=540, help="seconds for this call")
    ap.add_argument("--rl-steps", type=int, default=None)
    ap.add_argument("--rl-minutes", type=float, default=None, help="end RL (finished) after this many minutes of steps")
    ap.add_argument("--export", default=None, help="folder for run.tar.gz (and the bundle tars with --export-bundle)")
    ap.add_argument("--export-bundle", action="store_true")
    ap.add_argument("--export-only", default=None, metavar="RUN_DIR",
                    help="no training: pack RUN_DIR as it stands now (its log, done files and the bundle of its last RL "
                         "checkpoint) into --export; a watching call does this so that a run lost with its machine "
                         "leaves its curve and a bundle behind")
    ap.add_argument("--render", default=None, help="results.json to turn into train_eval.json + plots (no training)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args()
    if args.render:
        render(Path(args.render), Path(args.docs))
        return
    if args.export_only:
        if not args.export:
            raise SystemExit("--export-only needs --export DIR (where the packed files go)")
        export(Path(args.export_only), Path(args.export), bundle=args.export_bundle)
        return
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, {"out": args.out, "target": args.target, "data": args.data, "eval_data": args.eval_data,
                                    "time_budget": f"{args.budget}s", "rl.steps": args.rl_steps,
                                    "rl.max_minutes": args.rl_minutes}, parse_settings(args.settings))
    t0 = time.time()

    def show(rec: dict) -> None:
        stage = rec.get("stage", "")
        if stage in ("rl", "rl_eval") and (stage == "rl_eval" or rec["step"] % 10 == 0 or rec["step"] <= 3):
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k != "time"}), flush=True)
        elif stage == "ar_sft_curve" or stage.endswith("sft") and rec.get("step", 1) % 100 == 0:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k != "time"}), flush=True)
        elif stage.startswith("datagen") and rec["done"] == rec["of"]:
            print(f"{stage} done {rec['of']} at {time.time() - t0:.0f}s", flush=True)

    res = train_all(cfg, callback=show)
    res["command"] = "python benchmarks/train_eval.py " + " ".join(sys.argv[1:])
    write_json(Path(cfg.out) / "results.json", res)
    print(json.dumps({k: res.get(k) for k in ("timings_sec", "finished")}, default=str))
    for k in ("ar_sft", "av_sft"):
        d = res.get(k) or {}
        print(k, json.dumps({kk: d.get(kk) for kk in ("eval_gold_fve_nrm", "eval_shuffled_fve_nrm", "final_loss")}, default=str))
        if "eval" in d:
            print(k, "eval", json.dumps({kk: d["eval"].get(kk) for kk in ("fve_nrm", "parse_rate", "mean_tokens", "copy_rate_4gram")}))
    for k in ("final_eval", "final_eval_frozen_ar", "final_eval_gold_ceiling"):
        if k in res:
            print(k, json.dumps({kk: v for kk, v in res[k].items() if kk not in ("examples", "fve_nrm_by_position", "eval_gold_fve_nrm_by_position")}, default=str)[:800])
    for r in res.get("baselines", []):
        print(f"baseline {r['name']:<18} fve_nrm {r['fve_nrm']:.3f} {r['fve_nrm_ci95']}")
    if args.export:
        export(Path(cfg.out), Path(args.export), bundle=args.export_bundle)
    print(f"wall {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
