"""`nlakit train all`: datagen -> AR supervised -> AV supervised -> RL -> held-out eval -> bundle, under a time budget.

    nlakit train all --target smollm2 --layer 20 --out runs/smol --time-budget 9m --resume

Every stage is resumable: finished stages leave ``<stage>.done.json`` and are skipped, RL continues from
``rl_state.pt``. When the budget runs out mid-RL the run checkpoints, writes the bundle so far and exits; call it
again to continue. The bundle (``out/bundle``: LoRA adapters in bf16, AR head, sidecar, reference) stays small.

Under torchrun (``torchrun --nproc-per-node N -m nlakit train all ...``) every stage splits its work over the ranks
(docs/DISTRIBUTED.md); rank 0 alone writes files, logs and runs the evaluations, the others wait at barriers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from nlakit import distributed
from nlakit.baselines import fit_stored, load_stored, save_stored
from nlakit.bundle import BASELINES_FILE, BUNDLE_FIX, NLA, save_bundle
from nlakit.errors import NlakitError
from nlakit.io import read_safetensors, write_json
from nlakit.meta import NLAMeta
from nlakit.targets import Target, eos_ids, load_target
from nlakit.train.ar_sft import ARConfig, gold_ceiling, new_ar, train_ar
from nlakit.train.av_sft import AVConfig, train_av
from nlakit.train.common import (Budget, MergedAV, Pairs, cast_frozen, check_frozen_dtype, load_lora_state, load_pairs, load_reference_file, parse_duration,
                                 stage_done)
from nlakit.train.datagen import DatagenConfig, datagen
from nlakit.train.heldout import baseline_rows, evaluate_heldout, pair_samples
from nlakit.train.rl import RLConfig, train_rl
from nlakit.verbalizer import new_meta_for

log = logging.getLogger(__name__)

TIMINGS_EVERY_SEC = 30.0  # how often a running stage's time so far is written to timings.json


def default_corpus(name: str) -> str:
    """`$NLAKIT_CORPUS/<name>`, else `../shared/corpus/<name>` or `shared/corpus/<name>` from the working directory."""
    cands = []
    if os.environ.get("NLAKIT_CORPUS"):
        cands.append(Path(os.environ["NLAKIT_CORPUS"]) / name)
    cands += [Path("../shared/corpus") / name, Path("shared/corpus") / name]
    for c in cands:
        if c.exists():
            return str(c)
    flag = "--eval-data" if "heldout" in name else "--data"
    raise NlakitError(f"no {'held-out' if flag == '--eval-data' else 'training'} documents given, and no corpus file {name} "
                      f"found (looked in {', '.join(map(str, cands))})", f"pass {flag} FILE_OR_FOLDER (.jsonl, .jsonl.gz, .parquet "
                      "or plain text; docs/INPUTS.md), or set NLAKIT_CORPUS to the folder holding it")


@dataclass(frozen=True)
class TrainConfig:
    out: str
    target: str = "smollm2"
    bundle_target: str | None = None  # the target the bundle names (default: `target` as given), e.g. smollm2 for a copied GGUF
    layer: int = 20
    data: str | None = None  # training JSONL; default: the shared corpus
    eval_data: str | None = None  # held-out JSONL for evaluation only; default: the shared corpus's heldout file
    source: str = "template"  # warm-start explanation source (see datagen)
    injection_scale: float | None = None  # default: a round number a bit above the mean training norm
    device: str | None = "auto"
    dtype: str | None = None  # autocast dtype; default bfloat16 on CUDA, none on CPU
    time_budget: str | None = None
    total_minutes: float | None = None  # the pipeline's GPU-minutes (its stages' own times): RL's steps end (finished) at this
    reserve_minutes: float = 1.5  # ... less the stages before RL and this reserve (RL's setup and evals, final eval, baselines)
    n_docs: int = 6000
    positions_per_doc: int = 6
    split: tuple[float, float, float] = (0.4, 0.3, 0.3)  # shares of the documents for AV SFT / AR SFT / RL, by document
    describe: bool = True
    eval_positions: int = 512
    final_eval_positions: int = 1024
    datagen_batch: int = 32
    baselines: tuple[str, ...] = ("mean", "ridge_token", "ridge_token_bag8", "oracle_echo4", "oracle_echo8", "oracle_echo32")
    baseline_train_positions: int = 24000  # training pairs the ridge baselines are fitted on (the bundle ships two)
    ar: ARConfig = field(default_factory=ARConfig)
    av: AVConfig = field(default_factory=AVConfig)
    rl: RLConfig = field(default_factory=RLConfig)


def auto_injection_scale(norm_mean: float) -> float:
    """'A round number a bit above the mean L2 norm of the dataset vectors' (the released recipe)."""
    mag = 10 ** math.floor(math.log10(max(norm_mean, 1e-6)))
    step = mag / 2 if norm_mean / mag < 5 else mag
    return float(math.ceil(norm_mean * 1.1 / step) * step)


class RunLog:
    """Appends JSON lines to out/log.jsonl and forwards each record to an optional callback (the CLI's progress)."""

    def __init__(self, out: Path, callback: Callable[[dict], None] | None = None):
        self.path = out / "log.jsonl"
        self.callback = callback

    def __call__(self, rec: dict) -> None:
        if not distributed.is_main():  # one log per run, whatever the number of processes
            return
        rec = {"time": time.time(), **rec}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self.callback:
            self.callback(rec)


def train_all(cfg: TrainConfig, callback: Callable[[dict], None] | None = None, target: Target | None = None,
              stop_after: str | None = None) -> dict:
    """Run (or continue) the whole pipeline. Returns the results dict also written to out/results.json.

    `stop_after="ar"`: end once the AR's supervised stage is done (datagen first if needed; `nlakit train ar`)."""
    budget = Budget(parse_duration(cfg.time_budget))
    distributed.require_shares({"ar.batch_size": cfg.ar.batch_size, "av.batch_size": cfg.av.batch_size,
                                **({"rl.n_prompts": cfg.rl.n_prompts} if cfg.rl.steps > 0 else {})})  # before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(out, callback)
    from nlakit.train.config import save_config

    if distributed.is_main():
        save_config(cfg, out)  # the resolved settings of this call (repeat the run with --config OUT/config.yaml)
    t0 = time.monotonic()
    target = target or load_target(cfg.target, device=cfg.device)
    dtype = cfg.dtype or ("bfloat16" if target.device.startswith("cuda") else None)
    ar_cfg, av_cfg, rl_cfg = (replace(cfg.ar, source=cfg.source, dtype=dtype), replace(cfg.av, source=cfg.source, dtype=dtype),
                              replace(cfg.rl, dtype=dtype))
    if dtype is None and "bfloat16" in (ar_cfg.frozen_dtype, av_cfg.frozen_dtype, rl_cfg.frozen_dtype):
        log.info("frozen_dtype: bfloat16 applies under bf16 autocast; this run is fp32, so its frozen weights stay fp32")
        ar_cfg, av_cfg, rl_cfg = (s if s.frozen_dtype != "bfloat16" else replace(s, frozen_dtype=None) for s in (ar_cfg, av_cfg, rl_cfg))
    for key, stage in (("ar", ar_cfg), ("av", av_cfg), ("rl", rl_cfg)):  # before any work
        check_frozen_dtype(f"{key}.frozen_dtype", stage.frozen_dtype, stage.dtype)
    timings: dict[str, float] = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}

    running: dict = {}  # the stage now running: its name, start and when its time so far was last written

    def start(name: str) -> float:
        now = time.monotonic()
        running.update(name=name, t=now, written=now)
        return now

    def timed(name: str, t_start: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.monotonic() - t_start
        running.clear()
        if distributed.is_main():
            write_json(out / "timings.json", timings)

    def progress(rec: dict) -> None:
        """The run log, and every TIMINGS_EVERY_SEC the running stage's time so far into timings.json, so that a call
        killed mid-stage still counts its minutes (total_minutes) when the next call resumes."""
        now = time.monotonic()
        if running and now - running["written"] >= TIMINGS_EVERY_SEC and distributed.is_main():
            name = running["name"]
            write_json(out / "timings.json", {**timings, name: timings.get(name, 0.0) + now - running["t"]})
            running["written"] = now
        runlog(rec)

    # 0. data
    t = start("datagen")
    data_dir = out / "data"
    if not stage_done(data_dir, "datagen"):
        dg = DatagenConfig(data=cfg.data or default_corpus("train.jsonl.gz"), out=str(data_dir), layer=cfg.layer,
                           n_docs=cfg.n_docs, positions_per_doc=cfg.positions_per_doc, split=tuple(cfg.split), describe=cfg.describe,
                           eval_data=cfg.eval_data or default_corpus("heldout.jsonl.gz"), eval_positions=cfg.eval_positions,
                           batch_size=cfg.datagen_batch, dtype=dtype)
        datagen(dg, target, progress=lambda stage, i, n: progress({"stage": f"datagen/{stage}", "done": i, "of": n}))
        timed("datagen", t)
    pairs, ref = load_pairs(data_dir), load_reference_file(data_dir)
    eval_pairs = load_pairs(data_dir / "eval") if (data_dir / "eval" / "pairs.safetensors").exists() else None
    baseline_train = _baseline_train(pairs, cfg.baseline_train_positions)
    stored_file = data_dir / BASELINES_FILE
    if baseline_train is not None and not stored_file.exists() and distributed.is_main():
        save_stored(fit_stored(target, pair_samples(baseline_train)), stored_file)
    distributed.barrier()
    stored = load_stored(read_safetensors(stored_file, BUNDLE_FIX)) if stored_file.exists() else None

    # the sidecar is fixed once and reused on resume
    meta_dir = out / "meta"
    if (meta_dir / "nla_meta.yaml").exists():
        meta = NLAMeta.load(meta_dir)
    else:
        meta = new_meta_for(target.tokenizer, d_model=target.d_model, layer=cfg.layer,
                            injection_scale=cfg.injection_scale or auto_injection_scale(ref.norm_mean), base_checkpoint=target.name)
        tok = target.tokenizer
        end = tok.eos_token_id if tok.eos_token_id is not None else eos_ids(tok, target.model)[0]  # what SFT targets end with
        meta = meta.with_(nlakit={"target": cfg.bundle_target or cfg.target, "source": cfg.source, "stop_ids": sorted(set(eos_ids(tok, target.model)) | {int(end)}),
                                  "sft_end_token": tok.convert_ids_to_tokens(int(end))})
        if distributed.is_main():
            meta.save(meta_dir)
    distributed.barrier()

    # 1. AR supervised
    t = start("ar_sft")
    ar = train_ar(ar_cfg, target, meta, pairs, eval_pairs, ref, out, budget, progress)
    timed("ar_sft", t)
    if not stage_done(out, "ar_sft"):
        return _stopped(cfg, out, "ar_sft", timings)
    if stop_after == "ar":
        return _stopped(cfg, out, "ar_sft", timings, done=True)
    # 2. AV supervised
    t = start("av_sft")
    av = train_av(av_cfg, target, meta, pairs, eval_pairs, ar, ref, out, budget, progress)
    timed("av_sft", t)
    if not stage_done(out, "av_sft"):
        return _stopped(cfg, out, "av_sft", timings)
    # 3. RL (co-trains the AR)
    t = start("rl")

    def write_bundle(step: int) -> None:
        if not distributed.is_main():
            return
        save_bundle(NLA(av=av, ar=ar, meta=meta.with_(stage="rl", nlakit={**meta.nlakit, "rl_steps": step}), reference=ref,
                        baselines=stored), out / "bundle")

    rl_cfg = _rl_time_cap(rl_cfg, cfg, timings)
    rl_summary = train_rl(rl_cfg, av, ar, pairs, eval_pairs, ref, out, budget, progress, on_checkpoint=write_bundle)
    timed("rl", t)
    results = {"config": asdict(cfg), "target": target.name, "layer": cfg.layer, "device": _device_name(target.device),
               "datagen": stage_done(data_dir, "datagen"), "ar_sft": stage_done(out, "ar_sft"), "av_sft": stage_done(out, "av_sft"),
               "rl": {k: v for k, v in rl_summary.items() if k != "history"}, "rl_history": rl_summary["history"],
               "timings_sec": timings, "finished": rl_summary["finished"]}
    # 4. final held-out evaluation: co-trained AR, and the frozen SFT-time AR (so the RL gain is attributed honestly)
    if rl_summary["finished"] and eval_pairs is not None and not budget.out(margin=20) and distributed.is_main():
        t = start("final_eval")
        n = cfg.final_eval_positions
        decoder = MergedAV(av, _dt(dtype)).sync().verbalizer  # the same AV, LoRA merged: the engine's fast path
        results["final_eval"] = evaluate_heldout(decoder, ar, eval_pairs, ref, max_new_tokens=rl_cfg.max_new_tokens,
                                                 dtype=_dt(dtype), n=n)
        sft_ar = new_ar(target, meta, ar_cfg.rank)
        cast_frozen("ar.frozen_dtype", ar_cfg.frozen_dtype, ar_cfg.dtype, sft_ar.backbone)  # as it was trained
        state = torch.load(out / "ar_sft.pt", map_location="cpu", weights_only=False)
        load_lora_state(sft_ar.backbone, state["lora"])
        sft_ar.value_head.load_state_dict(state["head"])
        results["final_eval_frozen_ar"] = evaluate_heldout(decoder, sft_ar.eval(), eval_pairs, ref, max_new_tokens=rl_cfg.max_new_tokens,
                                                           dtype=_dt(dtype), n=n, n_examples=0)
        results["final_eval_gold_ceiling"] = gold_ceiling(ar, eval_pairs, ref, cfg.source, _dt(dtype))
        del decoder
        timed("final_eval", t)
        if cfg.baselines and baseline_train is not None:  # every baseline on the same held-out positions
            t = start("baselines")
            results["baselines"] = baseline_rows(target, cfg.layer, ref, baseline_train, eval_pairs.head(n), tuple(cfg.baselines),
                                                 ar=ar, ar_dtype=_dt(dtype))
            results["n_train_positions_baselines"] = len(baseline_train)
            timed("baselines", t)
    results["wall_sec_this_call"] = time.monotonic() - t0
    write_bundle(rl_summary["steps_done"])
    if distributed.is_main():
        write_json(out / "results.json", results)
    return results


def _rl_time_cap(rl_cfg: RLConfig, cfg: TrainConfig, timings: dict[str, float]) -> RLConfig:
    """`rl_cfg` with max_minutes lowered so that the stages before RL plus RL's steps end `reserve_minutes` before
    `total_minutes` (unchanged without a total)."""
    if cfg.total_minutes is None:
        return rl_cfg
    before = sum(timings.get(k, 0.0) for k in ("datagen", "ar_sft", "av_sft")) / 60
    cap = max(0.0, cfg.total_minutes - before - cfg.reserve_minutes)
    if cap == 0.0:
        log.warning("the stages before RL took %.1f of total_minutes=%s (reserve %s), so RL takes no steps; to train RL "
                    "anyway, raise it or lift it (--set total_minutes=null)", before, cfg.total_minutes, cfg.reserve_minutes)
    return replace(rl_cfg, max_minutes=cap if rl_cfg.max_minutes is None else min(rl_cfg.max_minutes, cap))


def _baseline_train(pairs: Pairs, n: int) -> Pairs | None:
    """A seeded sample of `n` training pairs (all splits) for the ridge baselines; None for data without token windows."""
    if n <= 0 or not pairs.rows or "window_ids" not in pairs.rows[0]:
        return None
    idx = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:n].sort().values.tolist()
    return Pairs(pairs.vectors[idx], [pairs.rows[i] for i in idx])


def _stopped(cfg: TrainConfig, out: Path, stage: str, timings: dict, done: bool = False) -> dict:
    """Results of a call whose budget ran out inside a supervised stage (its partial checkpoint is on disk), or with
    `done`, of a call asked to stop after that stage (its summary included)."""
    results = {"config": asdict(cfg), "finished": False, ("stopped_after" if done else "stopped_in"): stage,
               "rl": {"steps_done": 0}, "timings_sec": timings}
    if done:
        results[stage] = stage_done(out, stage)
    if distributed.is_main():
        write_json(out / "results.json", results)
    return results


def _dt(name):
    return {"bfloat16": torch.bfloat16}.get(name or "")


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
