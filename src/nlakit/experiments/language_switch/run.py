"""`nlakit experiment language-switch`: how many tokens before a model switches language does each reader see it coming?

    nlakit experiment language-switch --variant runs/variants/language-switch --target smollm2 --nla default \\
        --out docs/experiments/language_switch

1. Held-out prompts of the language-switch dataset (`dataset`): `n_per_language` cue prompts per language and
   `n_controls` controls. The model read (``variant``; the target itself when None) answers each greedily
   (`output_tokens` tokens); the text is ``chat(prompt) + answer``.
2. Every position from the first token of the user's message through the first `generate` answer tokens is read at
   the NLA's layer L by
   - ``nla``: the NLA's explanation (through the engine) names the target language (lexicon of language names,
     demonyms, country words) or quotes a fragment lingua puts in it; ``nla_lexicon``: the lexicon alone;
     ``nla_foreign``: the explanation says the text is not English in any way (another language, or "foreign",
     "translation" …: for an NLA that cannot name the language);
   - ``logit_lens``: the layer-L residual through the final norm and the unembedding; the probability mass on the
     target language's tokens (`detect.language_token_ids`: word pieces 4× as frequent in the dataset's training
     translations into that language as in English; Romance languages share many) above the 95th
     percentile of that mass on *training* control prompts;
   - ``model_next``: the same mass and threshold on the model's own next-token distribution (its final layer): what
     the output itself shows one token ahead, the reference a one-token lead has to beat;
   - ``probe``: a multinomial logistic regression on the layer-L activation, fitted on positions of other (training)
     prompts, teacher-forced with their reference answers; P(target language) ≥ 0.5. How early the language is
     linearly decodable at all: an upper bound for any reader of the activation.
3. Each reader's 0/1 detections are smoothed over `smooth` positions (centred moving average ≥ 0.5); its **onset** is
   the first position after which detection stays on (for at least `smooth` positions: a detection at the very last
   position alone is no onset). The **output onset** is the first answer token from which
   lingua puts the answer in the target language (`detect.output_onset`). **Lead** = output onset − reader onset,
   in tokens (positive: the reader saw it first). Per language and reader: median lead, IQR, a bootstrap 95%
   interval of the median, and how often the reader's detection came on at all. Beside it, the **first detection**
   (the first position where the smoothed detection is on at all, even if it goes off again, e.g. on a name in the
   prompt and off during the quoted English sentence) and its lead, with the controls' rate of any detection.
4. Controls (English answers expected): per reader, the share of prompts whose detection of *any* cue language
   comes on and stays on (false-positive rate, 95% interval), and the share of positions detected; the output's own
   false-switch rate (lingua on the answer).
5. Curves: detection against position for `n_curves` seeded examples, and the detection rate of every reader aligned
   on the output onset across all switched prompts.

The bundled NLA's warm-start template may name languages ("This is French text") or only say "non-English"; the
run reports what the explanations say in ``nla_vocabulary`` either way, and reads whichever NLA it is given.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress, chat_prefix, hardware, variant_info
from nlakit.experiments.language_switch import detect as X
from nlakit.experiments.language_switch.dataset import (
    CONTROL,
    LANGUAGE_NAMES,
    LANGUAGES,
    SwitchExample,
    load_dataset,
    translation,
)

log = logging.getLogger(__name__)

READERS = ("nla", "nla_lexicon", "nla_foreign", "logit_lens", "model_next", "probe")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LanguageSwitchConfig:
    """Every knob of a language-switch run (saved in the results JSON)."""

    target: str = "smollm2"  # the model the NLA explains (its AV/AR are built on it)
    variant: str | None = None  # the model read (e.g. the language-switch variant); None = the target itself
    nla: str = "default"
    dataset: str | None = None  # language-switch JSONL(.gz); None = the shipped file
    languages: tuple[str, ...] = LANGUAGES
    n_per_language: int = 4  # held-out cue prompts per language
    n_controls: int = 8  # held-out control prompts
    n_probe: int = 24  # training prompts per class (each language and the controls) for the probe and the lens thresholds
    generate: int = 16  # answer tokens explained (the first N)
    output_tokens: int = 48  # answer tokens generated (the output onset may come after the explained ones)
    smooth: int = 3  # centred moving-average window over positions (1 = none)
    lens_quantile: float = 0.95  # logit-lens threshold: this quantile of the mass on training controls
    max_new_tokens: int = 96  # explanation cap
    batch_size: int = 64
    n_curves: int = 4
    align_before: int = 40  # aligned curve: positions before the output onset
    low_accuracy: bool = False  # lingua's low-accuracy mode
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        problems = []
        bad = [lang for lang in self.languages if lang not in LANGUAGES]
        if bad or not self.languages:
            problems.append(f"unknown languages {bad or '(none)'} (known: {list(LANGUAGES)})")
        for name in ("n_per_language", "n_probe", "generate", "output_tokens", "smooth", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.n_controls < 0 or self.n_curves < 0 or self.align_before < 0:
            problems.append("n_controls, n_curves and align_before must be >= 0")
        if self.output_tokens < self.generate:
            problems.append(f"output_tokens ({self.output_tokens}) must be >= generate ({self.generate})")
        if self.smooth % 2 == 0:
            problems.append(f"smooth={self.smooth} must be odd (a centred window)")
        if not 0.5 <= self.lens_quantile < 1.0:
            problems.append(f"lens_quantile={self.lens_quantile} must be in [0.5, 1)")
        if problems:
            raise NlakitError("bad language-switch settings: " + "; ".join(problems), "fix the options named above")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ---- inputs ----------------------------------------------------------------------------------------------
def pick_prompts(cfg: LanguageSwitchConfig, split: str, per_language: int, n_controls: int, seed: int) -> list[SwitchExample]:
    """A seeded sample of one split: `per_language` examples of each cue language, then `n_controls` controls."""
    rows = load_dataset(cfg.dataset, split=split)
    rng = random.Random(seed)
    out = []
    for lang, n in [*[(lang, per_language) for lang in cfg.languages], (CONTROL, n_controls)]:
        pool = sorted((e for e in rows if e.lang == lang), key=lambda e: e.id)
        if n and not pool:
            raise NlakitError(f"the {split} split has no {LANGUAGE_NAMES.get(lang, lang)} example",
                              "pass --languages with languages the dataset has, or a dataset with every language")
        out += rng.sample(pool, min(n, len(pool)))
    return out


@dataclass
class ReadText:
    """One text read: ``chat(prompt) + answer``; positions are token indices of the re-tokenised text."""

    ex: SwitchExample
    text: str
    answer: str
    first: int  # first token of the user's message
    answer_start: int  # first answer token
    last: int  # last position read (inclusive)
    vectors: torch.Tensor  # (last - first + 1, d) layer-L activations
    tokens: list[str]
    ends: list[int]  # character offset where each read token ends
    ids: list[int]  # every token id of the text
    char_to_token: Callable[[int], int] | None = None  # char offset -> token index

    @property
    def n(self) -> int:
        return self.last - self.first + 1


def read_sequences(model_target, examples: list[SwitchExample], answers: list[str], layer: int, generate: int) -> list[ReadText]:
    """Layer-L activations from the user's message through `generate` answer tokens of each ``chat(prompt) + answer``."""
    from nlakit.activations import extract

    prefixes = [chat_prefix(model_target, e.prompt) for e in examples]
    texts = [p + a for p, a in zip(prefixes, answers)]
    docs = extract(model_target, texts, layer, "all", batch_size=8, include_sinks=True)
    out = []
    for e, prefix, ans, d in zip(examples, prefixes, answers, docs):
        user = prefix.rfind(e.prompt)
        user = max(user, 0)
        ends = [s for s, _ in d.offsets]
        first = next((i for i, (_, end) in enumerate(d.offsets) if end > user), 0)
        a0 = next((i for i, s in enumerate(ends) if s >= len(prefix)), len(d.offsets))
        last = min(len(d.offsets), a0 + generate) - 1
        if last < first:
            raise NlakitError(f"{e.id}: nothing to read after the user's message starts", "pass a larger --generate")
        offsets = d.offsets

        def to_token(c: int, offsets=offsets) -> int:
            return next((i for i, (s, end) in enumerate(offsets) if end > c), len(offsets) - 1)

        out.append(ReadText(ex=e, text=d.text, answer=ans, first=first, answer_start=a0, last=last,
                            vectors=d.vectors[first : last + 1].clone(), tokens=[d.text[s:t] for s, t in offsets[first : last + 1]],
                            ends=[t for _, t in offsets[first : last + 1]], ids=list(d.token_ids), char_to_token=to_token))
    return out


# ---- readers ---------------------------------------------------------------------------------------------
def lens_mass(model_target, vectors: torch.Tensor, token_sets: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Per language: the logit lens's probability mass on its tokens at every row of `vectors`."""
    from nlakit.blocks import Arch

    arch = Arch(model_target.model)
    out = {lang: [] for lang in token_sets}
    dev = next(model_target.model.parameters()).device
    dtype = next(model_target.model.parameters()).dtype
    with torch.no_grad():
        for s in range(0, len(vectors), 256):
            p = arch.logits(vectors[s : s + 256].to(dev, dtype)).float().softmax(-1).cpu()
            for lang, ids in token_sets.items():
                out[lang].append(p[:, ids].sum(-1).numpy() if ids else np.zeros(len(p)))
    return {lang: np.concatenate(v) if v else np.zeros(0) for lang, v in out.items()}


def next_token_mass(model_target, seqs: list[ReadText], token_sets: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Per language: the model's own next-token probability mass on its tokens at every read position of `seqs`."""
    out: dict[str, list] = {lang: [] for lang in token_sets}
    dev = next(model_target.model.parameters()).device
    with torch.no_grad():
        for seq in seqs:
            logits = model_target.model(input_ids=torch.tensor([seq.ids], device=dev), use_cache=False).logits[0, seq.first : seq.last + 1]
            p = logits.float().softmax(-1).cpu()
            for lang, ids in token_sets.items():
                out[lang].append(p[:, ids].sum(-1).numpy() if ids else np.zeros(len(p)))
    return {lang: np.concatenate(v) if v else np.zeros(0) for lang, v in out.items()}


def fit_probe(seqs: list[ReadText], classes: list[str], seed: int, max_rows: int = 8000):
    """Standardised multinomial logistic regression: layer-L activation -> answer language, on every read position."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([s.vectors for s in seqs]).numpy()
    y = np.concatenate([[classes.index(s.ex.lang)] * s.n for s in seqs])
    if len(set(y.tolist())) < 2:
        raise NlakitError("the probe needs training prompts of at least two languages", "raise --n-probe")
    rng = np.random.default_rng(seed)
    if len(x) > max_rows:
        keep = rng.choice(len(x), max_rows, replace=False)
        x, y = x[keep], y[keep]
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x, y)


def _detections(seq: ReadText, expl: list[dict], mass: dict[str, np.ndarray], thr: dict[str, float], proba: np.ndarray,
                classes: list[str], langs: list[str], nxt: dict[str, np.ndarray], thr_next: dict[str, float]) -> dict[str, np.ndarray]:
    """Raw 0/1 detections per reader at every read position: of the target language, or of any cue language (controls)."""
    want = [seq.ex.lang] if seq.ex.lang != CONTROL else langs
    nla = [bool(set(want) & set(h["lexicon"] + h["quote"])) for h in expl]
    return {"nla": np.array(nla, float), "nla_lexicon": np.array([bool(set(want) & set(h["lexicon"])) for h in expl], float),
            "nla_foreign": np.array([h["foreign"] or bool(h["lexicon"] or h["quote"]) for h in expl], float),
            "logit_lens": np.array([any(mass[lang][i] > thr[lang] for lang in want) for i in range(seq.n)], float),
            "model_next": np.array([any(nxt[lang][i] > thr_next[lang] for lang in want) for i in range(seq.n)], float),
            "probe": np.array([max(proba[i, classes.index(lang)] for lang in want) >= 0.5 for i in range(seq.n)], float)}


def median_summary(values: list[float], seed: int, n_boot: int = 1000) -> dict:
    """Median, IQR and a percentile-bootstrap 95% interval of the median."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return {"median": None, "iqr": [None, None], "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    boots = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    return {"median": float(np.median(x)), "iqr": [float(v) for v in np.percentile(x, [25, 75])],
            "ci95": [float(v) for v in np.percentile(boots, [2.5, 97.5])], "n": int(x.size)}


# ---- the experiment --------------------------------------------------------------------------------------
def run(cfg: LanguageSwitchConfig, *, target=None, variant=None, nla=None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the experiment; returns the results JSON (a dict). `target`/`variant`/`nla` may be passed pre-loaded (tests).

    Returns:
        {"kind": "language_switch", "config", "hardware", "target", "variant", "nla", "layer", "readers", "languages",
         "table": [per language and reader: lead, onsets, detection rate], "controls": {reader: false-positive rates},
         "output": {per language: switch rate}, "aligned": {reader: rate by offset to the output onset},
         "curves": [seeded examples], "nla_vocabulary", "token_sets", "prompts": [per prompt: onsets], "runtime_s"}
    """
    from sklearn.exceptions import ConvergenceWarning

    from nlakit.bundle import load_nla
    from nlakit.metrics import summarize
    from nlakit.targets import load_target

    t_start = time.perf_counter()
    tick = progress or (lambda *a: None)
    timings: dict[str, float] = {}
    target = target or load_target(cfg.target, device=cfg.device, dtype=cfg.dtype)
    nla = nla or load_nla(cfg.nla, target=target, device=cfg.device, dtype=cfg.dtype)
    reader = variant if variant is not None else (load_target(cfg.variant, device=cfg.device, dtype=cfg.dtype) if cfg.variant else target)
    if nla.d_model != reader.d_model:
        raise NlakitError(f"the NLA has d_model {nla.d_model}, the model read {reader.d_model}",
                          "pass --variant a fine-tune of the NLA's own --target")
    langs = list(cfg.languages)
    classes = [*langs, CONTROL]
    ident = X.Identifier((CONTROL, *langs), low_accuracy=cfg.low_accuracy)
    timings["load"] = time.perf_counter() - t_start

    # 1. held-out prompts, the model's answers, and the activations read
    t0 = time.perf_counter()
    held = pick_prompts(cfg, "heldout", cfg.n_per_language, cfg.n_controls, cfg.seed)
    answers = reader.generate([e.prompt for e in held], max_new_tokens=cfg.output_tokens, temperature=0.0, seed=cfg.seed,
                              batch_size=min(cfg.batch_size, 16))
    tick("generate", len(held), len(held))
    seqs = read_sequences(reader, held, answers, nla.layer, cfg.generate)
    timings["generate_and_read"] = time.perf_counter() - t0

    # 2. lens token sets (from the training answers), probe and lens thresholds (training prompts, teacher-forced)
    t0 = time.perf_counter()
    train = load_dataset(cfg.dataset, split="train")
    texts = {lang: [translation(e) for e in train if e.lang == lang] for lang in langs}
    texts[CONTROL] = [e.english for e in train]
    token_sets = {lang: ids for lang, ids in X.language_token_ids(reader.tokenizer, texts, against=CONTROL).items() if lang != CONTROL}
    probe_ex = pick_prompts(cfg, "train", cfg.n_probe, cfg.n_probe, cfg.seed + 1)
    probe_seqs = read_sequences(reader, probe_ex, [e.answer for e in probe_ex], nla.layer, cfg.generate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = fit_probe(probe_seqs, classes, cfg.seed)
    ctl_vecs = [s.vectors for s in probe_seqs if s.ex.lang == CONTROL]
    ctl_mass = lens_mass(reader, torch.cat(ctl_vecs), token_sets) if ctl_vecs else {lang: np.zeros(1) for lang in langs}
    thr = {lang: float(np.quantile(ctl_mass[lang], cfg.lens_quantile)) for lang in langs}
    ctl_seqs = [s for s in probe_seqs if s.ex.lang == CONTROL]
    ctl_next = next_token_mass(reader, ctl_seqs, token_sets) if ctl_seqs else {lang: np.zeros(1) for lang in langs}
    thr_next = {lang: float(np.quantile(ctl_next[lang], cfg.lens_quantile)) for lang in langs}
    tick("probe", 1, 1)
    timings["probe_and_lens"] = time.perf_counter() - t0

    # 3. explanations of every read position (one engine batch stream)
    t0 = time.perf_counter()
    vectors = torch.cat([s.vectors for s in seqs])
    expl = []
    for s in range(0, len(vectors), cfg.batch_size):
        expl += [e.text for e in nla.explain(vectors[s : s + cfg.batch_size], max_new_tokens=cfg.max_new_tokens,
                                              batch_size=cfg.batch_size, seed=cfg.seed)]
        tick("explain", min(s + cfg.batch_size, len(vectors)), len(vectors))
    timings["explain"] = time.perf_counter() - t0

    # 4. per prompt: detections, smoothed onsets, the output onset, leads
    t0 = time.perf_counter()
    mass_all = lens_mass(reader, vectors, token_sets)
    next_all = next_token_mass(reader, seqs, token_sets)
    proba_all = probe.predict_proba(vectors.numpy())
    prompts, at = [], 0
    for seq in seqs:
        sl = slice(at, at + seq.n)
        at += seq.n
        hits = [X.explanation_hits(t, ident, tuple(langs), context=seq.text[: seq.ends[j]]) for j, t in enumerate(expl[sl])]
        mass = {lang: m[sl] for lang, m in mass_all.items()}
        raw = _detections(seq, hits, mass, thr, proba_all[sl], classes, langs, {lang: m[sl] for lang, m in next_all.items()}, thr_next)
        smoothed = {r: X.smooth(v, cfg.smooth) for r, v in raw.items()}
        onsets = {r: X.onset(v >= 0.5, min_run=cfg.smooth) for r, v in smoothed.items()}
        firsts = {r: (int(np.argmax(v >= 0.5)) if (v >= 0.5).any() else None) for r, v in smoothed.items()}
        detected = ident.detect(seq.answer)
        switched_to = detected[0] if detected[1] >= 0.5 else None
        out_on = None
        if seq.ex.lang != CONTROL:
            c = X.output_onset(seq.answer, seq.ex.lang, ident)
            out_on = None if c is None else seq.char_to_token(len(seq.text) - len(seq.answer) + c) - seq.first
        prompts.append({"id": seq.ex.id, "lang": seq.ex.lang, "cues": seq.ex.cues, "prompt": seq.ex.prompt, "answer": seq.answer,
                        "answer_language": switched_to, "n_positions": seq.n, "answer_start": seq.answer_start - seq.first,
                        "output_onset": out_on, "onsets": onsets,
                        "lead": {r: (out_on - o if out_on is not None and o is not None else None) for r, o in onsets.items()},
                        "first_detection": firsts,
                        "first_lead": {r: (out_on - o if out_on is not None and o is not None else None) for r, o in firsts.items()},
                        "_raw": raw, "_smoothed": smoothed, "_hits": hits, "_expl": expl[sl], "_tokens": seq.tokens,
                        "_mass": {lang: mass[lang] for lang in ([seq.ex.lang] if seq.ex.lang != CONTROL else langs)},
                        "_proba": proba_all[sl]})
    tick("detect", len(prompts), len(prompts))

    # 5. tables: per language and reader; controls; output switch rates
    table = []
    for lang in langs:
        rows = [p for p in prompts if p["lang"] == lang]
        switched = [p for p in rows if p["output_onset"] is not None]
        for r in READERS:
            leads = [p["lead"][r] for p in switched if p["lead"][r] is not None]
            rel = [p["onsets"][r] - p["answer_start"] for p in rows if p["onsets"][r] is not None]
            table.append({"lang": lang, "reader": r, "n_prompts": len(rows), "n_switched": len(switched),
                          "detected": summarize([float(p["onsets"][r] is not None) for p in rows], seed=cfg.seed),
                          "lead": median_summary(leads, cfg.seed), "onset_vs_answer_start": median_summary(rel, cfg.seed),
                          "first_detected": summarize([float(p["first_detection"][r] is not None) for p in rows], seed=cfg.seed),
                          "first_lead": median_summary([p["first_lead"][r] for p in switched if p["first_lead"][r] is not None], cfg.seed),
                          "earlier_than_output": summarize([float(p["lead"][r] > 0) for p in switched if p["lead"][r] is not None],
                                                           seed=cfg.seed)})
    all_leads = {r: median_summary([p["lead"][r] for p in prompts if p["lead"][r] is not None], cfg.seed) for r in READERS}
    all_first = {r: median_summary([p["first_lead"][r] for p in prompts if p["first_lead"][r] is not None], cfg.seed) for r in READERS}
    ctl = [p for p in prompts if p["lang"] == CONTROL]
    controls = {"n": len(ctl), "readers": {r: {"false_positive": summarize([float(p["onsets"][r] is not None) for p in ctl], seed=cfg.seed),
                                              "any_detection": summarize([float(p["first_detection"][r] is not None) for p in ctl],
                                                                         seed=cfg.seed),
                                              "positions_detected": summarize(np.concatenate([p["_raw"][r] for p in ctl]) if ctl else [],
                                                                              seed=cfg.seed)} for r in READERS},
                "output_false_switch": summarize([float(p["answer_language"] not in (CONTROL, None)) for p in ctl], seed=cfg.seed)}
    output = {lang: {"n": sum(p["lang"] == lang for p in prompts),
                     "switched": summarize([float(p["output_onset"] is not None) for p in prompts if p["lang"] == lang], seed=cfg.seed),
                     "answer_in_language": summarize([float(p["answer_language"] == lang) for p in prompts if p["lang"] == lang],
                                                     seed=cfg.seed)} for lang in langs}

    # 6. curves: aligned on the output onset, and seeded examples
    aligned = {}
    offsets = list(range(-cfg.align_before, cfg.generate + 1))
    for r in READERS:
        pts = []
        for k in offsets:
            vals = [float(p["_smoothed"][r][p["output_onset"] + k] >= 0.5) for p in prompts
                    if p["output_onset"] is not None and 0 <= p["output_onset"] + k < p["n_positions"]]
            pts.append({"offset": k, **summarize(vals, seed=cfg.seed)})
        aligned[r] = pts
    cue = [i for i, p in enumerate(prompts) if p["lang"] != CONTROL]
    pick = random.Random(cfg.seed + 2).sample(cue, min(cfg.n_curves, len(cue)))
    if ctl and cfg.n_curves:
        pick.append(prompts.index(ctl[0]))
    curves = [_curve(prompts[i], thr) for i in pick]
    vocab = _vocabulary(prompts, langs)
    timings["tables"] = time.perf_counter() - t0
    return {"kind": "language_switch", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "hardware": hardware(),
            "target": target.name, "variant": {"spec": cfg.variant, "kind": variant_info(cfg.variant).get("kind", "base") if cfg.variant
                                                 else "base", "name": reader.name},
            "nla": cfg.nla, "layer": nla.layer, "readers": list(READERS), "languages": langs,
            "language_names": {k: LANGUAGE_NAMES[k] for k in classes}, "n_prompts": len(prompts),
            "n_positions": int(sum(p["n_positions"] for p in prompts)), "table": table, "lead_all": all_leads,
            "first_lead_all": all_first, "controls": controls,
            "output": output, "aligned": aligned, "curves": curves, "nla_vocabulary": vocab,
            "lens": {"thresholds": thr, "next_token_thresholds": thr_next, "quantile": cfg.lens_quantile, "token_set_sizes": {k: len(v) for k, v in token_sets.items()},
                     "token_examples": {k: [reader.tokenizer.decode([t]) for t in v[:12]] for k, v in token_sets.items()}},
            "probe": {"n_train_prompts": len(probe_seqs), "n_train_positions": int(sum(s.n for s in probe_seqs)), "classes": classes},
            "prompts": [{k: v for k, v in p.items() if not k.startswith("_")} for p in prompts],
            "timings_s": timings, "runtime_s": time.perf_counter() - t_start}


def _curve(p: dict, thr: dict[str, float]) -> dict:
    """One example for the report: per position the token, each reader's raw and smoothed detection, and the text."""
    return {"id": p["id"], "lang": p["lang"], "prompt": p["prompt"], "answer": p["answer"], "answer_start": p["answer_start"],
            "output_onset": p["output_onset"], "onsets": p["onsets"], "tokens": p["_tokens"],
            "raw": {r: v.astype(int).tolist() for r, v in p["_raw"].items()},
            "smoothed": {r: [round(float(x), 3) for x in v] for r, v in p["_smoothed"].items()},
            "lens_mass": {lang: [round(float(x), 5) for x in m] for lang, m in p["_mass"].items()}, "lens_threshold": thr,
            "explanations": p["_expl"], "hits": p["_hits"]}


def _vocabulary(prompts: list[dict], langs: list[str]) -> dict:
    """What the explanations say about language, per prompt language: at positions after the output onset (cue
    prompts) or anywhere (controls), the share naming the right language, another one, only "not English", or none."""
    out = {}
    for lang in [*langs, CONTROL]:
        rows = []
        for p in prompts:
            if p["lang"] != lang:
                continue
            start = p["output_onset"] if lang != CONTROL else 0
            if start is None:
                continue
            rows += p["_hits"][start:]
        if not rows:
            out[lang] = {"n": 0}
            continue
        named = [set(h["lexicon"]) for h in rows]
        out[lang] = {"n": len(rows), "names_target": float(np.mean([lang in s for s in named])) if lang != CONTROL else None,
                     "names_other": float(np.mean([bool(s - {lang}) for s in named])),
                     "foreign_only": float(np.mean([h["foreign"] and not h["lexicon"] for h in rows])),
                     "quote_in_target": float(np.mean([lang in h["quote"] for h in rows])) if lang != CONTROL else None,
                     "named_counts": {k: sum(k in s for s in named) for k in langs}}
    return out
