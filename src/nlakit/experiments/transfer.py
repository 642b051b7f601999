"""Does an NLA trained on a target transfer to fine-tuned variants of it (SFT, DPO), and do its explanations show the
fine-tune's behaviour (frustration at impossible maths) before the model's output does?

    nlakit experiment transfer --nla runs/nla --base smollm2 --variants runs/variants/sft,runs/variants/dpo --out runs/transfer

For each model (the base, then each variant):

1. Prompts: held-out impossible problems (`nlakit.behaviour`) and ordinary held-out corpus prompts (GSM8K questions
   and chat turns). The model answers each greedily; the text is ``chat(prompt) + answer``.
2. Positions, from the model's own text: ``prompt`` (seeded tokens inside the user message; the same tokens for every
   model), ``last_prompt`` (the last token before the answer), ``response`` (the first k answer tokens). A response
   token is ``pre`` while the answer so far (through that token) has no frustration-lexicon hit, ``post`` after.
3. Activations at the NLA's layer L, then the base NLA applied
   (a) **directly**: explain the variant's vector, reconstruct, score against it (fve_nrm, cos, 95% bootstrap CI),
       beside the usual baselines (`nlakit.baselines`) computed on the same model;
   (b) **through a linear map** variant → base fitted on n paired positions of *other* texts (the training corpus,
       never the prompts), n swept over ``map_sizes``, for each kind in ``map_kinds``: ``ridge`` (plain ridge,
       regularisation shrinks towards zero) and ``residual`` (ridge on n(h_base) − n(h_variant), shrinking towards
       the identity). The reconstruction lives in base space; it is scored against the mapped vector
       (``space: base``) and, carried back by the same kind of map base → variant fitted on the same pairs, against
       the variant's own vector (``space: variant``, comparable with (a)). ``map_only`` is the round trip without the
       NLA (how much the two maps alone lose).
   fve_nrm is centred on the NLA's own Reference throughout (`nlakit.metrics`).
4. Frustration content of every explanation (`nlakit.behaviour.lexicon_hits`; the classifier is reported too but it
   was fitted on answers, not explanations), per model and position type, and whether it appears at ``pre`` positions.

Writes ``transfer.json`` (results) and ``transfer.html`` (rendered from the JSON only).
"""

from __future__ import annotations

import logging
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

POSITION_TYPES = ("prompt", "last_prompt", "response")
PHASES = ("prompt", "last_prompt", "response_pre", "response_post")  # for the frustration analysis
DEFAULT_BASELINES = ("mean", "ridge_token", "echo_ar8", "oracle_echo8")
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class TransferConfig:
    """Every knob of the transfer experiment (saved into the results)."""

    nla: str = "default"
    base: str = "smollm2"
    variants: tuple[str, ...] = ()
    dataset: str | None = None  # behaviour dataset (held-out split used); None = shipped
    corpus: str = "/work/shared/corpus/heldout.jsonl.gz"  # ordinary prompts (docs with messages)
    map_corpus: str = "/work/shared/corpus/train.jsonl.gz"  # "other texts" for the ridge maps and baselines
    n_neutral: int = 600  # ordinary replies from map_corpus join the frustration classifier's calm class (0 = off)
    n_behaviour: int = 40
    n_corpus: int = 40
    prompt_positions: int = 2  # per prompt, inside the user message
    response_positions: int = 4  # first k answer tokens
    max_new_tokens: int = 64  # answer length
    map_sizes: tuple[int, ...] = (100, 300, 1000, 3000, 5000)
    map_kinds: tuple[str, ...] = ("ridge", "residual")  # keys of MAP_FITTERS
    map_positions_per_doc: int = 8
    map_min_position: int = 8
    map_max_tokens: int = 128
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    explain_max_new_tokens: int = 150
    n_examples: int = 4
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16
    explain_batch_size: int = 64

    def __post_init__(self):
        from nlakit.baselines import ALL_BASELINES

        problems = []
        if not self.variants:
            problems.append("no variants given")
        if self.n_behaviour < 1 and self.n_corpus < 1:
            problems.append("n_behaviour and n_corpus are both 0")
        if self.prompt_positions < 0 or self.response_positions < 0:
            problems.append("prompt_positions and response_positions must be >= 0")
        if not self.map_sizes or min(self.map_sizes) < 2 or list(self.map_sizes) != sorted(set(self.map_sizes)):
            problems.append(f"map_sizes {list(self.map_sizes)} must be increasing, distinct and >= 2")
        if not self.map_kinds or any(k not in MAP_FITTERS for k in self.map_kinds):
            problems.append(f"map_kinds {list(self.map_kinds)} must be a non-empty subset of {list(MAP_FITTERS)}")
        unknown = [b for b in self.baselines if b not in ALL_BASELINES]
        if unknown:
            problems.append(f"unknown baselines {unknown} (known: {list(ALL_BASELINES)})")
        for name in ("max_new_tokens", "map_positions_per_doc", "map_max_tokens", "explain_max_new_tokens", "batch_size",
                     "explain_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise NlakitError("bad transfer settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("variants", "map_sizes", "map_kinds", "baselines"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TransferConfig:
        d = dict(d)
        for k in ("variants", "map_sizes", "map_kinds", "baselines"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------------------
# Prompts, answers and positions


def load_prompts(cfg: TransferConfig) -> list[dict]:
    """Held-out behaviour prompts then corpus prompts: ``[{"id", "group", "prompt"}]`` (seeded)."""
    from nlakit.variants import behaviour_prompts, corpus_prompts

    prompts = behaviour_prompts(cfg.dataset, cfg.n_behaviour, cfg.seed) if cfg.n_behaviour else []
    if cfg.n_corpus:
        prompts += corpus_prompts(cfg.corpus, cfg.n_corpus, cfg.seed)
    return prompts


def chat_prefix(target, prompt: str) -> str:
    """The chat-rendered prompt, ready for the answer; a BOS the tokenizer adds itself is not written twice."""
    text = target.chat_text([{"role": "user", "content": prompt}])
    bos = getattr(target.tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and target.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [target.tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


def pick_positions(text: str, prefix: str, prompt: str, offsets: Sequence[tuple[int, int]], *, n_prompt: int, n_response: int,
                   rng_key: str) -> list[dict]:
    """Positions of one chat text: ``[{"pos", "type", "r"}]`` (``r`` = index among answer tokens, -1 otherwise).

    Prompt positions are sampled from the tokens inside the user message with `rng_key`, so every model (same
    tokenizer, same prompt) gets the same ones.
    """
    start = prefix.find(prompt)
    end_prefix = len(prefix)
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    inside = [i for i, s, e in real if start >= 0 and s >= start and e <= start + len(prompt)]
    out = [{"pos": i, "type": "prompt", "r": -1} for i in sorted(random.Random(rng_key).sample(inside, min(n_prompt, len(inside))))]
    before = [i for i, s, e in real if s < end_prefix]
    if before:
        out.append({"pos": before[-1], "type": "last_prompt", "r": -1})
    answer = [i for i, s, e in real if s >= end_prefix]
    out += [{"pos": i, "type": "response", "r": r} for r, i in enumerate(answer[:n_response])]
    return [p for j, p in enumerate(out) if p["pos"] not in {q["pos"] for q in out[:j]}]  # a short prompt may repeat one


def answer_phase(text: str, prefix_len: int, offsets, p: dict) -> str:
    """``pre``/``post`` for an answer token: has the answer through this token any frustration-lexicon hit?"""
    from nlakit.behaviour import lexicon_hits

    if p["type"] != "response":
        return p["type"]
    written = text[prefix_len : offsets[p["pos"]][1]]
    return "response_post" if lexicon_hits(written) else "response_pre"


@dataclass
class ModelRun:
    """One model's answers and its activations at the chosen positions (rows in prompt order)."""

    name: str
    spec: str
    kind: str
    answers: list[str]
    texts: list[str]
    rows: list[dict]  # {"prompt": i, "group", "type", "phase", "r", "pos", "token"}
    samples: object  # nlakit.baselines.Samples over `texts`
    vectors: torch.Tensor  # (N, d) = samples.vectors


def run_model(target, prompts: list[dict], layer: int, cfg: TransferConfig, progress: Progress | None = None,
              kind: str = "base") -> ModelRun:
    """Answer every prompt with `target`, then extract layer-`layer` activations at the chosen positions."""
    from nlakit.activations import extract
    from nlakit.baselines import Samples

    answers: list[str] = []
    for s in range(0, len(prompts), cfg.batch_size):
        answers += target.generate([p["prompt"] for p in prompts[s : s + cfg.batch_size]], max_new_tokens=cfg.max_new_tokens,
                                   batch_size=cfg.batch_size, seed=cfg.seed)
        if progress is not None:
            progress(f"answer {target.name}", len(answers), len(prompts))
    prefixes = [chat_prefix(target, p["prompt"]) for p in prompts]
    texts = [pre + a for pre, a in zip(prefixes, answers)]
    enc = target.encode(texts)
    chosen = [pick_positions(t, pre, p["prompt"], enc.offsets[i], n_prompt=cfg.prompt_positions, n_response=cfg.response_positions,
                             rng_key=f"{cfg.seed}:{p['id']}") for i, (t, pre, p) in enumerate(zip(texts, prefixes, prompts))]
    by_text = {t: [c["pos"] for c in ch] for t, ch in zip(texts, chosen)}
    docs = extract(target, texts, layer, lambda text, n: by_text[text], batch_size=cfg.batch_size, include_sinks=True)
    rows = []
    for i, (d, ch) in enumerate(zip(docs, chosen)):
        assert d.positions == [c["pos"] for c in ch]
        for c in ch:
            rows.append({"prompt": i, "group": prompts[i]["group"], "type": c["type"], "r": c["r"], "pos": c["pos"],
                         "phase": answer_phase(texts[i], len(prefixes[i]), enc.offsets[i], c), "token": d.token_text(c["pos"])})
    samples = Samples.from_docs(docs)
    return ModelRun(name=target.name, spec=target.spec, kind=kind, answers=answers, texts=texts, rows=rows, samples=samples,
                    vectors=samples.vectors)


# ---------------------------------------------------------------------------------------------------------------------
# Paired "other text" positions (ridge maps, fitted baselines)


def map_texts(cfg: TransferConfig) -> list[str]:
    """Training-corpus documents for the maps: enough for the largest map size, seeded order."""
    from nlakit.io import read_jsonl

    rows = [r for r in read_jsonl(cfg.map_corpus) if isinstance(r.get("text"), str) and r["text"].strip()]
    if not rows:
        raise NlakitError(f"{cfg.map_corpus} holds no documents with a 'text' field", "pass --map-corpus TRAIN.jsonl.gz")
    random.Random(cfg.seed + 1).shuffle(rows)
    need = -(-max(cfg.map_sizes) // cfg.map_positions_per_doc) * 2  # slack for short documents
    return [r["text"] for r in rows[:need]]


def map_positions(target, texts: list[str], layer: int, cfg: TransferConfig):
    """Seeded positions (depending only on the text, so identical across models) and their activations, sinks kept."""
    from nlakit.activations import extract
    from nlakit.evaluate import clip_text

    def pick(text: str, n_tokens: int) -> list[int]:
        cands = list(range(min(cfg.map_min_position, n_tokens - 1), n_tokens))
        return sorted(random.Random(f"{cfg.seed}:map:{text}").sample(cands, min(cfg.map_positions_per_doc, len(cands))))

    clipped = [clip_text(target, t, cfg.map_max_tokens) for t in texts]
    return extract(target, clipped, layer, pick, batch_size=cfg.batch_size, include_sinks=True)


def paired(base_docs, var_docs, n_max: int):
    """Aligned (variant, base) rows where neither is an attention sink, first `n_max`; plus each side as Samples."""
    from nlakit.activations import DocActivations
    from nlakit.baselines import Samples

    keep_b, keep_v = [], []
    n = 0
    for b, v in zip(base_docs, var_docs):
        if b.token_ids != v.token_ids:
            raise NlakitError("a variant tokenizes the map texts differently from the base",
                              "pass variants that share the base model's tokenizer (as `nlakit variants build` saves them)")
        ok = [j for j, (sb, sv) in enumerate(zip(b.is_sink, v.is_sink)) if not sb and not sv][: max(n_max - n, 0)]
        n += len(ok)
        for d, out in ((b, keep_b), (v, keep_v)):
            out.append(DocActivations(text=d.text, layer=d.layer, token_ids=d.token_ids, offsets=d.offsets,
                                      positions=[d.positions[j] for j in ok], vectors=d.vectors[ok], is_sink=[False] * len(ok)))
    sb, sv = Samples.from_docs(keep_b), Samples.from_docs(keep_v)
    return sv.vectors, sb.vectors, sb, sv


def fit_map(x: torch.Tensor, y: torch.Tensor):
    """Ridge x → n(y) (`nlakit.baselines.fit_ridge`: standardised inputs, RidgeCV over alphas); shrinks towards zero."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    model = fit_ridge(x, normalize(y))
    return lambda z: torch.from_numpy(np.asarray(model.predict(z.double().numpy()))).float()


def fit_residual_map(x: torch.Tensor, y: torch.Tensor):
    """n(x) + ridge(n(x) → n(y) − n(x)): strong regularisation leaves the identity plus a mean shift, the right prior
    for a fine-tune whose activations barely moved (a plain ridge shrinks towards zero instead)."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    xn = normalize(x)
    model = fit_ridge(xn, normalize(y) - xn)  # (N, D) residuals at the sqrt(d) scale, not renormalised

    def apply(z: torch.Tensor) -> torch.Tensor:
        zn = normalize(z)
        return zn + torch.from_numpy(np.asarray(model.predict(zn.double().numpy()))).float()

    return apply


MAP_FITTERS = {"ridge": fit_map, "residual": fit_residual_map}


# ---------------------------------------------------------------------------------------------------------------------
# Scoring helpers


def _cells(per_item: dict, rows: list[dict], frustr: list[bool] | None, seed: int) -> list[dict]:
    """Aggregate per (group, position type) and for "all": fve_nrm and cos with CIs, and the frustration rate."""
    from nlakit.metrics import summarize

    groups = sorted({r["group"] for r in rows})
    out = []
    for g in groups + ["all"]:
        for t in list(POSITION_TYPES) + ["all"]:
            idx = [i for i, r in enumerate(rows) if (g == "all" or r["group"] == g) and (t == "all" or r["type"] == t)]
            if not idx:
                continue
            ii = torch.tensor(idx)
            fve, cos = summarize(per_item["fve_nrm"][ii], seed=seed), summarize(per_item["cos"][ii], seed=seed)
            cell = {"group": g, "position": t, "n": len(idx), "fve_nrm": fve["mean"], "fve_nrm_ci95": fve["ci95"],
                    "cos": cos["mean"], "cos_ci95": cos["ci95"]}
            if frustr is not None:
                cell["frustration_rate"] = summarize([float(frustr[i]) for i in idx], seed=seed)["mean"]
            out.append(cell)
    return out


def _keyed(keys: list[dict], head: dict, cells: list[dict]) -> list[dict]:
    """Tag table cells with their row key ("model|route|space") and register the row once, in order."""
    route_label = "direct" if head["route"] == "direct" else f"{head['route']} n={head['map_n']}"
    key = f"{head['model']}|{route_label}|{head['space']}"
    keys.append({"key": key, "model": head["model"], "route": head["route"], "route_label": route_label, "space": head["space"]})
    return [{**head, "key": key, "route_label": route_label, **c} for c in cells]


def _frustration_table(model: str, route: str, rows: list[dict], hits: list[bool], seed: int) -> list[dict]:
    """Explanation frustration rate per group and phase (prompt, last_prompt, response_pre, response_post, pre_output)."""
    from nlakit.metrics import summarize

    out = []
    for g in sorted({r["group"] for r in rows}):
        for ph in list(PHASES) + ["pre_output"]:
            idx = [i for i, r in enumerate(rows) if r["group"] == g and (r["phase"] == ph or (ph == "pre_output" and r["phase"] != "response_post"))]
            if idx:
                s = summarize([float(hits[i]) for i in idx], seed=seed)
                out.append({"model": model, "route": route, "group": g, "phase": ph, "rate": s["mean"], "ci95": s["ci95"], "n": s["n"]})
    return out


def _lead(model: str, run: ModelRun, hits: list[bool], prompts: list[dict], seed: int) -> dict:
    """Behaviour prompts: does an explanation flag frustration before the answer shows any?"""
    from nlakit.behaviour import lexicon_hits
    from nlakit.metrics import summarize

    per = []
    for i, p in enumerate(prompts):
        if p["group"] != "behaviour":
            continue
        idx = [j for j, r in enumerate(run.rows) if r["prompt"] == i]
        pre = [j for j in idx if run.rows[j]["phase"] in ("prompt", "last_prompt", "response_pre")]
        last = [j for j in idx if run.rows[j]["type"] == "last_prompt"]
        per.append({"out": bool(lexicon_hits(run.answers[i])), "expl_pre": any(hits[j] for j in pre),
                    "expl_last_prompt": any(hits[j] for j in last)})
    if not per:
        return {"model": model, "n": 0}

    def rate(xs):
        return summarize([float(x) for x in xs], seed=seed)

    out_f = [x for x in per if x["out"]]
    calm = [x for x in per if not x["out"]]
    return {"model": model, "n": len(per), "output_frustrated": rate([x["out"] for x in per]),
            "expl_pre_output": rate([x["expl_pre"] for x in per]), "expl_last_prompt": rate([x["expl_last_prompt"] for x in per]),
            "expl_pre_given_output_frustrated": rate([x["expl_pre"] for x in out_f]),
            "expl_pre_given_output_calm": rate([x["expl_pre"] for x in calm])}


def _hardware(device: str) -> dict:
    import os

    info = {"device": device, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------------------------------------------
# The experiment: one loop over models; each model is read directly (a) and, for variants, through maps (b)


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
    from nlakit.behaviour import lexicon_hits
    from nlakit.evaluate import score_vectors
    from nlakit.metrics import score

    cfg = ctx.cfg
    direct = score_vectors(ctx.nla, run.vectors, reference=ctx.ref, cfg=ctx.ecfg, progress=ctx.stage(label))
    expl = [r["explanation"] for r in direct["rows"]]
    hits = [bool(lexicon_hits(e)) for e in expl]
    ctx.degradation += _keyed(ctx.keys, {"model": label, "kind": kind, "route": "direct", "map_n": None, "space": "model"},
                              _cells(direct["per_item"], run.rows, hits, cfg.seed))
    preds = B.compute(cfg.baselines, target=target, ar=ctx.nla.ar, layer=ctx.nla.layer, ref=ctx.ref, train=train_samples,
                      test=run.samples, batch_size=cfg.explain_batch_size)
    for name, p in preds.items():
        per = score(p.vectors, run.vectors, ctx.ref, direction_only=p.direction_only)
        ctx.baselines += [{"model": label, "kind": kind, "baseline": name, **c} for c in _cells(per, run.rows, None, cfg.seed)]
    ctx.frustration += _frustration_table(label, "direct", run.rows, hits, cfg.seed)
    ctx.lead.append({**_lead(label, run, hits, ctx.prompts, cfg.seed), "route": "direct"})
    for i, r in enumerate(run.rows):
        ctx.rows.append({"model": label, **r, "explanation": expl[i], "fve_nrm": direct["rows"][i]["fve_nrm"],
                         "cos": direct["rows"][i]["cos"], "frustrated": hits[i]})
    return {"explanations": expl, "parse_rate": direct["parse_rate"], "mean_explanation_tokens": direct["mean_explanation_tokens"]}


def _read_mapped(ctx: _Ctx, label: str, kind: str, run: ModelRun, x_v: torch.Tensor, y_b: torch.Tensor,
                 same_tokens: torch.Tensor) -> None:
    """(b) For each map size n: variant → base ridge, the base NLA, and a base → variant ridge back; scored both ways."""
    from nlakit.behaviour import lexicon_hits
    from nlakit.evaluate import score_vectors
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
        ctx.degradation += _keyed(ctx.keys, {**head, "space": "variant"}, _cells(per_var, run.rows, hits, cfg.seed))
        ctx.degradation += _keyed(ctx.keys, {**head, "space": "base"}, _cells(res["per_item"], run.rows, hits, cfg.seed))
        ctx.sweep.append({**head, "fve_nrm_variant": summarize(per_var["fve_nrm"], seed=cfg.seed),
                          "fve_nrm_base": summarize(res["per_item"]["fve_nrm"], seed=cfg.seed),
                          "fve_nrm_map_only": summarize(per_maps["fve_nrm"], seed=cfg.seed),
                          "map_vs_base_same_tokens_cos": summarize(fit_q["cos"], seed=cfg.seed)["mean"]})
        if n == sizes[-1]:  # the largest map: its explanations go into the frustration tables and the examples
            ctx.frustration += _frustration_table(label, f"{route}{n}", run.rows, hits, cfg.seed)
            ctx.lead.append({**_lead(label, run, hits, ctx.prompts, cfg.seed), "route": f"{route}{n}"})
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
    from nlakit.metrics import summarize
    from nlakit.targets import load_target, resolve_device
    from nlakit.variants import frustration_summary, make_scorer, variant_info

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
