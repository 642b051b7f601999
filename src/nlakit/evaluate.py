"""Score an NLA on held-out text, beside the baselines: activation → AV → explanation → AR → vector.

    nlakit eval --nla DIR --data heldout.jsonl.gz --train-data train.jsonl.gz --out results.json

`evaluate` samples held-out positions (seeded, sinks skipped, ``min_position`` 33 as the benchmark uses),
explains each activation, reconstructs it from the explanation and scores the reconstruction with
`nlakit.metrics.score`. Every baseline in `nlakit.baselines` goes through the same `metrics.score` call.
The AR reads the parsed explanation, or the AV's raw output when the parse failed (those rows are reported with
``ok: false`` and count in the parse rate). `score_vectors` is the lower-level entry for experiments that bring
their own vectors; `explain_text` serves `nlakit explain` (chosen positions of one text).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch

from nlakit import baselines as B
from nlakit.activations import DocActivations, PositionSpec, extract
from nlakit.errors import NlakitError
from nlakit.metrics import Reference, score, summarize
from nlakit.targets import Target
from nlakit.verbalizer import Explanation, check_vectors

log = logging.getLogger(__name__)

# progress(stage, completed, total): called as work gets done, with the count completed so far in that stage.
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class EvalConfig:
    """Every knob of an evaluation run (saved into the results JSON)."""

    n_positions: int = 400  # held-out positions scored
    positions_per_doc: int = 2
    n_train_positions: int = 2000  # training positions for the ridge fits (and the Reference if the NLA has none)
    train_positions_per_doc: int = 4
    min_position: int = 33  # skip the first tokens (noisy, sink-adjacent), as the benchmark does
    max_tokens: int = 256  # documents are cut to their first max_tokens tokens
    seed: int = 0
    batch_size: int = 16  # target forward passes
    explain_batch_size: int = 64  # AV generations at once
    max_new_tokens: int = 150
    temperature: float = 0.0
    engine: str = "auto"  # AV generation: auto (fast engine where supported), fast, or hf (plain HF generate)
    baselines: tuple[str, ...] = B.ALL_BASELINES

    def __post_init__(self):
        problems = []
        for name in ("n_positions", "positions_per_doc", "train_positions_per_doc", "max_tokens", "batch_size",
                     "explain_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.n_train_positions < 0 or self.min_position < 0:
            problems.append("n_train_positions and min_position must be >= 0")
        if self.min_position >= self.max_tokens:
            problems.append(f"min_position ({self.min_position}) must be below max_tokens ({self.max_tokens})")
        unknown = [b for b in self.baselines if b not in B.ALL_BASELINES]
        if unknown:
            problems.append(f"unknown baselines {unknown} (known: {list(B.ALL_BASELINES)})")
        if problems:
            raise NlakitError("bad evaluation settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EvalConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "baselines" in kw:
            kw["baselines"] = tuple(kw["baselines"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------------------------
def clip_text(target: Target, text: str, max_tokens: int) -> str:
    """`text` cut after its first `max_tokens` tokens (at a token boundary), quietly."""
    enc = target.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


def _drop_sinks(d: DocActivations) -> DocActivations:
    keep = [j for j, s in enumerate(d.is_sink) if not s]
    return DocActivations(text=d.text, layer=d.layer, token_ids=d.token_ids, offsets=d.offsets, positions=[d.positions[j] for j in keep],
                          vectors=d.vectors[keep], is_sink=[False] * len(keep))


def sample_positions(target: Target, texts: Sequence[str], layer: int, *, n_positions: int, per_doc: int, min_position: int,
                     max_tokens: int, seed: int, batch_size: int = 16, progress: Progress | None = None,
                     stage: str = "positions") -> B.Samples:
    """Up to `n_positions` activations, `per_doc` random positions >= `min_position` per document (sinks skipped).

    Documents are visited in a seeded random order and cut to `max_tokens` tokens; the positions of a document
    depend only on its text and the seed.
    """
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)

    def pick(text: str, n_tokens: int) -> list[int]:
        candidates = list(range(min_position, n_tokens))
        rng = random.Random(f"{seed}:{text}")
        return sorted(rng.sample(candidates, min(per_doc, len(candidates))))

    docs: list[DocActivations] = []
    n_got, chunk = 0, 4 * batch_size  # documents per extract call: small enough for a live progress bar
    for s in range(0, len(order), chunk):
        if n_got >= n_positions:
            break
        clipped = [clip_text(target, texts[i], max_tokens) for i in order[s : s + chunk]]
        for d in extract(target, clipped, layer, pick, batch_size=batch_size, include_sinks=True):
            d = _drop_sinks(d)
            if d.positions and n_got < n_positions:
                d = _head(d, n_positions - n_got)
                docs.append(d)
                n_got += len(d.positions)
        if progress is not None:
            progress(stage, min(n_got, n_positions), n_positions)
    if n_got < n_positions:
        log.warning("only %d of %d %s positions found (documents shorter than min_position=%d tokens are skipped)",
                    n_got, n_positions, stage, min_position)
    return B.Samples.from_docs(docs)


def _head(d: DocActivations, n: int) -> DocActivations:
    if len(d.positions) <= n:
        return d
    return DocActivations(text=d.text, layer=d.layer, token_ids=d.token_ids, offsets=d.offsets, positions=d.positions[:n],
                          vectors=d.vectors[:n], is_sink=d.is_sink[:n])


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def aggregate_row(name: str, per_item: dict[str, torch.Tensor], seed: int = 0) -> dict:
    """One line of the score table: {name, fve_nrm, fve_nrm_ci95, fve_raw, cos, n}."""
    fve = summarize(per_item["fve_nrm"], seed=seed)
    return {"name": name, "fve_nrm": fve["mean"], "fve_nrm_ci95": fve["ci95"], "fve_raw": summarize(per_item["fve_raw"])["mean"],
            "cos": summarize(per_item["cos"])["mean"], "n": fve["n"]}


def explain_vectors(nla, vectors: torch.Tensor, cfg: EvalConfig, progress: Progress | None = None) -> list[Explanation]:
    """The AV's explanations of (N, d) vectors, in batches (so progress can be shown).

    Under torchrun the batches are dealt to the ranks (`distributed.deal`), each decoded exactly as one process
    decodes it, and every rank gets every explanation back."""
    from nlakit import distributed

    done: dict[int, list[Explanation]] = {}
    bs = cfg.explain_batch_size
    for s in distributed.deal(range(0, vectors.shape[0], bs)):
        done[s] = nla.explain(vectors[s : s + bs], max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=cfg.seed + s, batch_size=bs, engine=cfg.engine)
        if progress is not None:
            progress("explain", min(len(done) * bs * distributed.world(), vectors.shape[0]), vectors.shape[0])
    for part in distributed.all_gather(done) if distributed.world() > 1 else []:
        done.update(part)
    return [e for s in sorted(done) for e in done[s]]


def score_vectors(nla, vectors: torch.Tensor, explanations: Sequence[str | Explanation] | None = None, *,
                  reference: Reference | None = None, cfg: EvalConfig | None = None,
                  progress: Progress | None = None) -> dict:
    """Explain (unless `explanations` are given), reconstruct and score (N, d) activation vectors.

    Args:
        nla: an `nlakit.bundle.NLA`.
        vectors: gold activations of the NLA's target at the NLA's layer, (N, d_model).
        explanations: AV outputs (`Explanation`) or plain strings (taken as parsed explanations) to use instead of
            running the AV.
        reference: the Reference centring fve; defaults to the NLA's own.
    Returns:
        {"rows": [{explanation, ok, n_tokens, fve_nrm, fve_raw, cos}], "aggregate": {name: "nla", …},
         "parse_rate", "mean_explanation_tokens", "per_item": {metric: (N,) tensor}, "pred": (N, d) tensor}
    """
    cfg = cfg or EvalConfig()
    ref = reference or nla.require_reference()
    vectors = check_vectors(vectors, nla.d_model)
    if explanations is None:
        explanations = explain_vectors(nla, vectors, cfg, progress)
    if len(explanations) != vectors.shape[0]:
        raise NlakitError(f"{len(explanations)} explanations for {vectors.shape[0]} vectors", "pass one explanation per vector")
    expl = [e if isinstance(e, Explanation) else
            Explanation(text=str(e).strip(), raw=str(e), ok=True, n_tokens=len(nla.ar.tokenizer.encode(str(e), add_special_tokens=False)))
            for e in explanations]
    pred = nla.reconstruct([e.text for e in expl], batch_size=cfg.explain_batch_size)  # (N, d), a direction
    if progress is not None:
        progress("reconstruct", len(expl), len(expl))
    per_item = score(pred, vectors, ref, direction_only=True)
    rows = [{"explanation": e.text, "ok": e.ok, "n_tokens": e.n_tokens, "fve_nrm": float(per_item["fve_nrm"][i]),
             "fve_raw": float(per_item["fve_raw"][i]), "cos": float(per_item["cos"][i])} for i, e in enumerate(expl)]
    n = max(len(expl), 1)
    return {"rows": rows, "aggregate": aggregate_row("nla", per_item, cfg.seed), "parse_rate": sum(e.ok for e in expl) / n,
            "mean_explanation_tokens": sum(e.n_tokens for e in expl) / n, "per_item": per_item, "pred": pred}


def _nla_facts(nla, target: Target) -> dict:
    return {"source": nla.source, "layer": nla.layer, "d_model": nla.d_model, "injection_scale": nla.meta.injection_scale,
            "target": target.spec, "target_name": target.name}


def _score_all(nla, target: Target, test: B.Samples, train: B.Samples | None, ref: Reference, cfg: EvalConfig,
               progress: Progress | None) -> dict:
    """NLA + baselines on the same rows, through the same `metrics.score`."""
    t0 = time.perf_counter()
    nla_part = score_vectors(nla, test.vectors, reference=ref, cfg=cfg, progress=progress)
    t1 = time.perf_counter()
    done = iter(range(1, len(cfg.baselines) + 1))
    preds = B.compute(cfg.baselines, target=target, ar=nla.ar, layer=nla.layer, ref=ref, train=train, test=test,
                      batch_size=cfg.explain_batch_size, stored=getattr(nla, "baselines", None),
                      progress=(lambda _name: progress("baselines", next(done), len(cfg.baselines))) if progress else None)
    t2 = time.perf_counter()
    aggregate = [nla_part["aggregate"]]
    per_baseline = {}
    for name, p in preds.items():
        per_baseline[name] = score(p.vectors, test.vectors, ref, direction_only=p.direction_only)
        aggregate.append(aggregate_row(name, per_baseline[name], cfg.seed))
    rows = []
    for i, r in enumerate(nla_part["rows"]):
        rows.append({"doc": test.doc[i], "pos": test.pos[i], "token": test.token_text(i), "context": test.context(i), **r,
                     "baselines": {name: {"fve_nrm": float(m["fve_nrm"][i]), "cos": float(m["cos"][i])} for name, m in per_baseline.items()}})
    return {"aggregate": aggregate, "rows": rows, "parse_rate": nla_part["parse_rate"],
            "mean_explanation_tokens": nla_part["mean_explanation_tokens"],
            "skipped_baselines": [b for b in cfg.baselines if b not in preds],
            "timing_s": {"explain_and_reconstruct": round(t1 - t0, 3), "baselines": round(t2 - t1, 3)}}


def _reference_and_train(nla, target: Target, train_texts: Sequence[str] | None, cfg: EvalConfig,
                         progress: Progress | None) -> tuple[Reference, str, B.Samples | None]:
    needs_train = any(b in B.NEEDS_TRAIN for b in cfg.baselines) or nla.reference is None
    train = None
    if train_texts and needs_train and cfg.n_train_positions > 0:
        train = sample_positions(target, train_texts, nla.layer, n_positions=cfg.n_train_positions, per_doc=cfg.train_positions_per_doc,
                                 min_position=cfg.min_position, max_tokens=cfg.max_tokens, seed=cfg.seed + 1,
                                 batch_size=cfg.batch_size, progress=progress, stage="train positions")
    if nla.reference is not None:
        return nla.reference, "bundle", train
    if train is None or len(train) < 2:
        nla.require_reference()  # raises with the fix
    return Reference.from_vectors(train.vectors), "train positions", train


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------
def evaluate(nla, target: Target, texts: Sequence[str], train_texts: Sequence[str] | None = None, cfg: EvalConfig | None = None,
             *, progress: Progress | None = None) -> dict:
    """Score an NLA on held-out `texts`, beside every baseline; returns the results JSON (a dict).

    Args:
        nla: an `nlakit.bundle.NLA` over `target`.
        target: the target the NLA explains (the same weights its activations come from).
        texts: held-out documents (never trained on).
        train_texts: training documents: the ridge baselines are fitted on positions from them, and they give the
            Reference when the NLA carries none. Without them the fitted baselines are skipped.
        cfg: an `EvalConfig`.
    Returns:
        {"kind": "eval", "config", "nla", "reference", "parse_rate", "mean_explanation_tokens",
         "aggregate": [{name, fve_nrm, fve_nrm_ci95, fve_raw, cos, n}, …] (NLA first),
         "rows": [{doc, pos, token, explanation, ok, fve_nrm, fve_raw, cos, baselines}], "skipped_baselines", "timing_s"}
    """
    cfg = cfg or EvalConfig()
    target.check_layer(nla.layer)
    if target.d_model != nla.d_model:
        raise NlakitError(f"the NLA has d_model {nla.d_model} but target {target.name} has {target.d_model}",
                          "evaluate the NLA with the target it was trained on")
    # 1. held-out positions and their gold activations
    test = sample_positions(target, texts, nla.layer, n_positions=cfg.n_positions, per_doc=cfg.positions_per_doc,
                            min_position=cfg.min_position, max_tokens=cfg.max_tokens, seed=cfg.seed, batch_size=cfg.batch_size,
                            progress=progress, stage="held-out positions")
    if len(test) == 0:
        raise NlakitError(f"no held-out position at or after token {cfg.min_position} in {len(texts)} documents",
                          "pass longer documents or a smaller --min-position")
    # 2. training positions (ridge fits) and the Reference that centres fve
    ref, ref_source, train = _reference_and_train(nla, target, train_texts, cfg, progress)
    # 3. AV → explanation → AR → vector, and every baseline, scored the same way
    scored = _score_all(nla, target, test, train, ref, cfg, progress)
    return {"kind": "eval", "config": cfg.to_dict(), "nla": _nla_facts(nla, target),
            "reference": {"source": ref_source, "n": ref.n}, "n_docs": len(test.texts), "n_positions": len(test),
            "n_train_positions": len(train) if train is not None else 0, "texts": test.texts, **scored}


def explain_text(nla, target: Target, text: str, positions: PositionSpec = "last", train_texts: Sequence[str] | None = None,
                 cfg: EvalConfig | None = None, *, progress: Progress | None = None) -> dict:
    """Explain chosen positions of one text and score each reconstruction beside the baselines (`nlakit explain`).

    Returns the results JSON: {"kind": "explain", "text", "tokens": [{i, text, start, end}], "rows", "aggregate", …}.
    """
    cfg = cfg or EvalConfig(n_positions=1)  # positions come from `positions`; min_position applies to training rows only
    (doc,) = extract(target, [text], nla.layer, positions, batch_size=1)
    if not doc.positions:
        raise NlakitError("no explainable position left (position 0 and BOS are attention sinks and are skipped)",
                          "pick positions after the first token, e.g. --at -1")
    test = B.Samples.from_docs([doc])
    ref, ref_source, train = _reference_and_train(nla, target, train_texts, cfg, progress)
    scored = _score_all(nla, target, test, train, ref, cfg, progress)
    tokens = [{"i": i, "text": doc.text[s:e], "start": s, "end": e} for i, (s, e) in enumerate(doc.offsets)]
    return {"kind": "explain", "config": cfg.to_dict(), "nla": _nla_facts(nla, target), "reference": {"source": ref_source, "n": ref.n},
            "text": doc.text, "tokens": tokens, "n_positions": len(test), **scored}
