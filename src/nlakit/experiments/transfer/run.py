"""The transfer experiment: one loop over models; each model is read directly (a) and, for variants, through maps (b)."""

from __future__ import annotations

import logging
import platform
import random
import time
from dataclasses import dataclass, field

import torch

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress
from nlakit.experiments.transfer.config import POSITION_TYPES, TransferConfig
from nlakit.experiments.transfer.maps import MAP_FITTERS
from nlakit.experiments.transfer.positions import ModelRun, load_prompts, map_positions, map_texts, paired, run_model
from nlakit.experiments.transfer.tables import frustration_table, keyed, lead_summary, summary_cells

log = logging.getLogger(__name__)


def _hardware(device: str) -> dict:
    import os

    info = {"device": device, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class _Ctx:
    """What every model's scoring needs, and the tables it appends to."""

    cfg: TransferConfig
    nla: object
    ref: object  # nlakit.metrics.Reference of the NLA
    ecfg: object  # nlakit.evaluate.EvalConfig for explain + reconstruct
    prompts: list[dict]
    progress: Progress | None
    keys: list = field(default_factory=list)  # the degradation table's rows, in order
    degradation: list = field(default_factory=list)
    baselines: list = field(default_factory=list)
    sweep: list = field(default_factory=list)
    frustration: list = field(default_factory=list)
    lead: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # one per (model, position): explanation, fve, frustration flag

    def stage(self, suffix: str):
        """A progress callback that labels `score_vectors`' stages with `suffix`."""
        if self.progress is None:
            return None
        return lambda st, d, n: self.progress(f"{st} {suffix}", d, n)


def _read_direct(ctx: _Ctx, label: str, kind: str, target, run: ModelRun, train_samples) -> dict:
    """(a) The base NLA on this model's vectors, the baselines on the same rows, frustration in the explanations."""
    from nlakit import baselines as B
    from nlakit.evaluate import score_vectors
    from nlakit.experiments.transfer.frustration import lexicon_hits
    from nlakit.metrics import score

    cfg = ctx.cfg
    direct = score_vectors(ctx.nla, run.vectors, reference=ctx.ref, cfg=ctx.ecfg, progress=ctx.stage(label))
    expl = [r["explanation"] for r in direct["rows"]]
    hits = [bool(lexicon_hits(e)) for e in expl]
    ctx.degradation += keyed(ctx.keys, {"model": label, "kind": kind, "route": "direct", "map_n": None, "space": "model"},
                              summary_cells(direct["per_item"], run.rows, hits, cfg.seed))
    preds = B.compute(cfg.baselines, target=target, ar=ctx.nla.ar, layer=ctx.nla.layer, ref=ctx.ref, train=train_samples,
                      test=run.samples, batch_size=cfg.explain_batch_size)
    for name, p in preds.items():
        per = score(p.vectors, run.vectors, ctx.ref, direction_only=p.direction_only)
        ctx.baselines += [{"model": label, "kind": kind, "baseline": name, **c} for c in summary_cells(per, run.rows, None, cfg.seed)]
    ctx.frustration += frustration_table(label, "direct", run.rows, hits, cfg.seed)
    ctx.lead.append({**lead_summary(label, run, hits, ctx.prompts, cfg.seed), "route": "direct"})
    for i, r in enumerate(run.rows):
        ctx.rows.append({"model": label, **r, "explanation": expl[i], "fve_nrm": direct["rows"][i]["fve_nrm"],
                         "cos": direct["rows"][i]["cos"], "frustrated": hits[i]})
    return {"explanations": expl, "parse_rate": direct["parse_rate"], "mean_explanation_tokens": direct["mean_explanation_tokens"]}


def _read_mapped(ctx: _Ctx, label: str, kind: str, run: ModelRun, x_v: torch.Tensor, y_b: torch.Tensor,
                 same_tokens: torch.Tensor) -> None:
    """(b) For each map size n: variant → base ridge, the base NLA, and a base → variant ridge back; scored both ways."""
    from nlakit.evaluate import score_vectors
    from nlakit.experiments.transfer.frustration import lexicon_hits
    from nlakit.metrics import normalize, score, summarize

    cfg = ctx.cfg
    sizes = [n for n in cfg.map_sizes if n <= x_v.shape[0]]
    if len(sizes) < len(cfg.map_sizes):
        log.warning("map sizes %s skipped: only %d paired positions", [n for n in cfg.map_sizes if n not in sizes], x_v.shape[0])
    mine = slice(len(ctx.rows) - len(run.rows), len(ctx.rows))  # this model's rows in ctx.rows
    for route, n in ((route, n) for route in cfg.map_kinds for n in sizes):
        fitter = MAP_FITTERS[route]
        fwd, back = fitter(x_v[:n], y_b[:n]), fitter(normalize(y_b[:n]), x_v[:n])
        mapped = fwd(run.vectors)  # (N, d), normalised base space
        res = score_vectors(ctx.nla, mapped, reference=ctx.ref, cfg=ctx.ecfg, progress=ctx.stage(f"{label} {route} {n}"))
        per_var = score(back(normalize(res["pred"])), run.vectors, ctx.ref, direction_only=True)  # carried back, vs h_variant
        per_maps = score(back(normalize(mapped)), run.vectors, ctx.ref, direction_only=True)  # the two maps alone, no NLA
        fit_q = score(mapped, same_tokens, ctx.ref, direction_only=True)  # W h_variant vs the base's vector on the same tokens
        expl = [r["explanation"] for r in res["rows"]]
        hits = [bool(lexicon_hits(e)) for e in expl]
        head = {"model": label, "kind": kind, "route": route, "map_n": n}
        ctx.degradation += keyed(ctx.keys, {**head, "space": "variant"}, summary_cells(per_var, run.rows, hits, cfg.seed))
        ctx.degradation += keyed(ctx.keys, {**head, "space": "base"}, summary_cells(res["per_item"], run.rows, hits, cfg.seed))
        ctx.sweep.append({**head, "fve_nrm_variant": summarize(per_var["fve_nrm"], seed=cfg.seed),
                          "fve_nrm_base": summarize(res["per_item"]["fve_nrm"], seed=cfg.seed),
                          "fve_nrm_map_only": summarize(per_maps["fve_nrm"], seed=cfg.seed),
                          "map_vs_base_same_tokens_cos": summarize(fit_q["cos"], seed=cfg.seed)["mean"]})
        if n == sizes[-1]:  # the largest map: its explanations go into the frustration tables and the examples
            ctx.frustration += frustration_table(label, f"{route}{n}", run.rows, hits, cfg.seed)
            ctx.lead.append({**lead_summary(label, run, hits, ctx.prompts, cfg.seed), "route": f"{route}{n}"})
            for i, r in enumerate(ctx.rows[mine]):
                r.setdefault("mapped", {})[f"{route} n={n}"] = {"explanation": expl[i], "fve_nrm": float(per_var["fve_nrm"][i]),
                                                                "frustrated": hits[i]}


def _same_token_base_vectors(base, run: ModelRun, layer: int, cfg: TransferConfig) -> torch.Tensor:
    """The base model's vectors on the variant's own texts at the same positions, (N, d), rows aligned with run.rows."""
    from nlakit.activations import extract

    by_text = {run.texts[i]: [r["pos"] for r in run.rows if r["prompt"] == i] for i in range(len(run.texts))}
    docs = extract(base, run.texts, layer, lambda text, n: by_text[text], batch_size=cfg.batch_size, include_sinks=True)
    return torch.cat([d.vectors for d in docs])


def run_transfer(cfg: TransferConfig, *, nla=None, targets: dict | None = None, progress: Progress | None = None) -> dict:
    """Run the transfer experiment and return the results dict (``kind: "transfer"``).

    Args:
        cfg: the config. ``cfg.base`` / ``cfg.variants`` are model specs (HF dirs from `nlakit variants build`).
        nla: an already-loaded NLA over the base (tests); loaded from ``cfg.nla`` when None.
        targets: optional ``{spec: Target}`` already loaded; others are loaded from their spec.
        progress: optional ``(stage, done, total)`` callback.
    Returns:
        {"kind": "transfer", "config", "nla", "hardware", "scorer", "n_prompts", "models", "degradation", "table_keys",
         "table_keys_all", "baselines", "map_sweep", "frustration", "lead", "examples", "rows", "timing_s"}
    """
    from nlakit.bundle import load_nla
    from nlakit.evaluate import EvalConfig
    from nlakit.experiments.transfer.score import frustration_summary, make_scorer
    from nlakit.experiments.transfer.variants import variant_info
    from nlakit.metrics import summarize
    from nlakit.targets import load_target, resolve_device

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    targets = dict(targets or {})

    def get_target(spec: str):
        if spec not in targets:
            targets[spec] = load_target(spec, device=device)
        return targets[spec]

    # 0. data first (cheap, fails fast), then the models
    prompts = load_prompts(cfg)
    other = map_texts(cfg)
    scorer = make_scorer(cfg.dataset, cfg.map_corpus if cfg.n_neutral else None, cfg.n_neutral, cfg.seed)
    base = get_target(cfg.base)
    nla = nla or load_nla(cfg.nla, device=device, target=base)
    layer, ref = nla.layer, nla.require_reference()
    for spec in (cfg.base, *cfg.variants):
        t = get_target(spec)
        t.check_layer(layer)
        if t.d_model != nla.d_model:
            raise NlakitError(f"{t.name} has d_model {t.d_model} but the NLA expects {nla.d_model}",
                              "pass variants fine-tuned from the NLA's base model")
    ecfg = EvalConfig(n_positions=1, min_position=0, seed=cfg.seed, batch_size=cfg.batch_size, explain_batch_size=cfg.explain_batch_size,
                      max_new_tokens=cfg.explain_max_new_tokens, baselines=cfg.baselines)
    ctx = _Ctx(cfg=cfg, nla=nla, ref=ref, ecfg=ecfg, prompts=prompts, progress=progress)
    groups = sorted({p["group"] for p in prompts})
    base_docs = map_positions(base, other, layer, cfg)  # the base side of every map's pairs
    models, runs, timing = [], {}, {}
    for spec in (cfg.base, *cfg.variants):
        t0 = time.perf_counter()
        target = get_target(spec)
        kind = "base" if spec == cfg.base else variant_info(spec).get("kind", "variant")
        label = f"{kind}:{target.name}"
        label = f"{label}#{len(runs)}" if label in runs else label  # two variants of the same kind and name
        # 1. answers and activations at the three position types
        run = runs[label] = run_model(target, prompts, layer, cfg, progress, kind=kind)
        # 2. paired positions on other texts (the maps; the fitted baselines use this model's side)
        var_docs = base_docs if spec == cfg.base else map_positions(target, other, layer, cfg)
        x_v, y_b, _, train_samples = paired(base_docs, var_docs, max(cfg.map_sizes))
        if x_v.shape[0] < min(cfg.map_sizes):
            raise NlakitError(f"only {x_v.shape[0]} paired positions in {cfg.map_corpus}, fewer than the smallest map size",
                              "pass a larger --map-corpus or smaller --map-sizes")
        # 3. (a) directly, (b) through maps (variants only: the base's map would be the identity)
        direct = _read_direct(ctx, label, kind, target, run, train_samples)
        drift = None
        if spec != cfg.base:
            same = _same_token_base_vectors(base, run, layer, cfg)
            _read_mapped(ctx, label, kind, run, x_v, y_b, same)
            drift = {t: summarize(torch.nn.functional.cosine_similarity(run.vectors[ii], same[ii], dim=-1), seed=cfg.seed)["mean"]
                     for t in POSITION_TYPES if (ii := [i for i, r in enumerate(run.rows) if r["type"] == t])}
        # 4. the behaviour in the answers, and the classifier's view of the explanations
        ans = scorer.score(run.answers)
        models.append({"label": label, "name": target.name, "spec": spec, "kind": kind, "n_positions": len(run.rows),
                       "parse_rate": direct["parse_rate"], "mean_explanation_tokens": direct["mean_explanation_tokens"],
                       "output_frustration": {g: frustration_summary([s for s, p in zip(ans, prompts) if p["group"] == g]) for g in groups},
                       "explanation_p_frustrated": summarize(scorer.classifier.predict_proba(direct["explanations"]), seed=cfg.seed)["mean"],
                       "drift_cos_to_base": drift, "paired_positions": int(x_v.shape[0])})
        timing[label] = round(time.perf_counter() - t0, 1)

    timing["total"] = round(time.perf_counter() - t_start, 1)
    return {"kind": "transfer", "config": cfg.to_dict(), "hardware": _hardware(device),
            "nla": {"source": nla.source, "layer": layer, "d_model": nla.d_model, "reference_n": ref.n},
            "scorer": scorer.describe(), "n_prompts": {g: sum(p["group"] == g for p in prompts) for g in groups},
            "models": models, "degradation": ctx.degradation, "table_keys": [k for k in ctx.keys if k["space"] != "base"],
            "table_keys_all": ctx.keys, "baselines": ctx.baselines, "map_sweep": ctx.sweep, "frustration": ctx.frustration,
            "lead": ctx.lead, "examples": _examples(cfg, prompts, runs, ctx.rows), "rows": ctx.rows, "timing_s": timing}


def _examples(cfg: TransferConfig, prompts, runs: dict[str, ModelRun], all_rows: list[dict]) -> list[dict]:
    """A seeded selection of behaviour prompts, each model's answer and explanations side by side."""
    rng = random.Random(cfg.seed + 7)
    idx = [i for i, p in enumerate(prompts) if p["group"] == "behaviour"] or list(range(len(prompts)))
    out = []
    for i in sorted(rng.sample(idx, min(cfg.n_examples, len(idx)))):
        cols = []
        for label, run in runs.items():
            rows = [r for r in all_rows if r["model"] == label and r["prompt"] == i]
            pick = {t: next((r for r in rows if r["type"] == t), None) for t in ("last_prompt", "response")}
            cols.append({"model": label, "answer": run.answers[i],
                         "at": {t: None if r is None else {"token": r["token"], "explanation": r["explanation"], "fve_nrm": r["fve_nrm"],
                                                           "frustrated": r["frustrated"], "mapped": r.get("mapped", {})}
                                for t, r in pick.items()}})
        out.append({"prompt": prompts[i]["prompt"], "group": prompts[i]["group"], "models": cols})
    return out
