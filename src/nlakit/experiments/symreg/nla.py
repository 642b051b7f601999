"""Part 4 of `nlakit experiment symreg`: decode the target's activations on the symreg prompt with an NLA.

For each task's chat-templated prompt (generation prompt included) we take the layer-L activation at a few
named positions — ``final`` (the last prompt token, right before the answer), ``format_y`` (the ``y`` of
the answer-format line), ``table_end`` (the last token of the table) and ``instruction`` (the ``.`` ending
"…cos if useful.") — explain each with the NLA, reconstruct it, and score fve_nrm / cos beside the usual
baselines (`nlakit.baselines`, through the same `nlakit.metrics.score` as `nlakit eval`).

Does the explanation foretell the *form* of the answer? We read four flags off the explanation with keyword
patterns (`FORM_PATTERNS`: mentions of cos, powers, division, linearity) and compare them with the flags of
the model's parsed answer and of the true equation (`tasks.expression_form`). "Foretells" = all four
flags agree. The chance level is a shuffled pairing: the same explanations matched to other tasks' answers
(`n_shuffles` random permutations), with a one-sided permutation p-value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nlakit.experiments.symreg import tasks as T

log = logging.getLogger(__name__)

POSITIONS = ("final", "format_y", "table_end", "instruction")
FORM_PATTERNS = {
    "cos": r"\bcos(?:ine|ines)?\b|\btrig|\bperiodic|\boscillat|\bsinus|\bwave",
    "power": r"\bsquar(?:e|ed|es|ing)\b|\bcub(?:e|ed|es|ic)\b|\bquadratic\b|\bpowers?\b|\bexponent|\^|\*\*|²|³|\bparabol",
    # a slash only between operands ("x0/x1"): the NLA writes line breaks of quoted text as " / "
    "division": r"\bdivi(?:de|ded|des|ding|sion)\b|\bratio\b|\bfraction|\bquotient|\breciprocal|\binverse\b|\bdenominator|[\w)]/[\w(]",
    "linear": r"\blinear(?:ly)?\b|\bstraight line|\bslope\b|\bproportional",
}
_FORM_RE = {k: re.compile(v, re.IGNORECASE) for k, v in FORM_PATTERNS.items()}


def mentioned_form(explanation: str) -> dict[str, bool]:
    """The four form flags an explanation mentions (keyword patterns, case-insensitive)."""
    return {k: bool(r.search(explanation or "")) for k, r in _FORM_RE.items()}


def position_chars(chat_text: str, prompt: str) -> dict[str, int]:
    """Character index (into the chat text) of each named position's anchor character."""
    start = chat_text.rindex(prompt)  # prompt = HEAD + "\n\n" + table + "\n\n" + TAIL
    return {
        "final": len(chat_text) - 1,
        "format_y": start + prompt.rindex("y = <"),
        "table_end": start + len(prompt) - len(T.PROMPT_TAIL) - 3,
        "instruction": start + len(T.PROMPT_HEAD) - 1,
    }


def char_to_token(offsets: Sequence[tuple[int, int]], c: int) -> int:
    """The token whose span holds character c (else the last token starting at or before c)."""
    best = 0
    for i, (s, e) in enumerate(offsets):
        if s <= c < e:
            return i
        if s <= c and e > s:
            best = i
    return best


def agreement(pred: list[dict[str, bool]], actual: list[dict[str, bool] | None], *, n_shuffles: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """How often predicted form flags match the actual ones, beside a shuffled-pairing baseline.

    Rows with no actual form (unparseable answer) are left out. Returns {"n", "match_rate", "shuffled_match_rate",
    "p_value", "per_form": {form: {"accuracy", "shuffled_accuracy"}}}."""
    keep = [i for i, a in enumerate(actual) if a is not None]
    if not keep:
        return {"n": 0, "match_rate": None, "shuffled_match_rate": None, "p_value": None, "per_form": {}}
    P = np.array([[pred[i][k] for k in T.FORMS] for i in keep], dtype=bool)  # (n, 4)
    A = np.array([[actual[i][k] for k in T.FORMS] for i in keep], dtype=bool)  # (n, 4)
    match = float(np.all(P == A, axis=1).mean())
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(len(keep)) for _ in range(n_shuffles)])  # (S, n)
    shuf_eq = P[perms] == A[None]  # (S, n, 4)
    shuf_match = np.all(shuf_eq, axis=2).mean(axis=1)  # (S,)
    per_form = {k: {"accuracy": float((P[:, j] == A[:, j]).mean()), "shuffled_accuracy": float(shuf_eq[:, :, j].mean()),
                    "mentioned_rate": float(P[:, j].mean()), "used_rate": float(A[:, j].mean())}
                for j, k in enumerate(T.FORMS)}
    return {"n": len(keep), "match_rate": match, "shuffled_match_rate": float(shuf_match.mean()),
            "p_value": float((1 + np.sum(shuf_match >= match)) / (1 + n_shuffles)), "per_form": per_form}


def decode(nla, target, chat_texts: list[str], prompts: list[str], *, baselines: Sequence[str], train_texts: Sequence[str] | None,
           n_train_positions: int, max_new_tokens: int, batch_size: int, seed: int = 0,
           progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any]:
    """Explain, reconstruct and score the named positions of every chat text, with the baselines.

    Returns {"rows": [{task, position, pos, token, explanation, ok, fve_nrm, cos, baselines, mentioned}],
             "aggregate": {position: [{name, fve_nrm, fve_nrm_ci95, fve_raw, cos, n}, ...]}, "skipped_baselines"}."""
    import torch

    from nlakit import baselines as B
    from nlakit.activations import extract
    from nlakit.evaluate import EvalConfig, aggregate_row, sample_positions, score_vectors
    from nlakit.metrics import score

    names_per_text: list[list[str]] = []
    pos_per_text: list[list[int]] = []
    for text, prompt in zip(chat_texts, prompts):
        offsets = target.encode([text]).offsets[0]
        chars = position_chars(text, prompt)
        named: dict[int, str] = {}
        for name in POSITIONS:
            named.setdefault(char_to_token(offsets, chars[name]), name)  # two names on one token: keep the first
        pos_per_text.append(sorted(named))
        names_per_text.append([named[p] for p in sorted(named)])
    lookup = dict(zip(chat_texts, pos_per_text))
    docs = extract(target, chat_texts, nla.layer, lambda text, n: lookup[text], batch_size=batch_size, include_sinks=True)
    test = B.Samples.from_docs(docs)
    names = [n for ns in names_per_text for n in ns]
    assert len(names) == len(test), "one name per extracted position"
    cfg = EvalConfig(max_new_tokens=max_new_tokens, explain_batch_size=max(1, batch_size), seed=seed, baselines=tuple(baselines),
                     n_positions=max(1, len(test)), min_position=0, max_tokens=4096)
    ref = nla.require_reference()
    part = score_vectors(nla, test.vectors, reference=ref, cfg=cfg, progress=progress)
    train = None
    if train_texts and any(b in B.NEEDS_TRAIN for b in baselines):
        train = sample_positions(target, train_texts, nla.layer, n_positions=n_train_positions, per_doc=4, min_position=33,
                                 max_tokens=256, seed=seed + 1, batch_size=batch_size, progress=progress, stage="train positions")
    preds = B.compute(tuple(baselines), target=target, ar=nla.ar, layer=nla.layer, ref=ref, train=train, test=test,
                      batch_size=batch_size)
    per_baseline = {name: score(p.vectors, test.vectors, ref, direction_only=p.direction_only) for name, p in preds.items()}
    rows = []
    for i, r in enumerate(part["rows"]):
        rows.append({"task": test.doc[i], "position": names[i], "pos": test.pos[i], "token": test.token_text(i),
                     "explanation": r["explanation"], "ok": r["ok"], "fve_nrm": r["fve_nrm"], "cos": r["cos"],
                     "mentioned": mentioned_form(r["explanation"]),
                     "baselines": {k: {"fve_nrm": float(m["fve_nrm"][i]), "cos": float(m["cos"][i])} for k, m in per_baseline.items()}})
    aggregate: dict[str, list[dict]] = {}
    nla_items = part["per_item"]
    for name in POSITIONS:
        idx = torch.tensor([i for i, n in enumerate(names) if n == name], dtype=torch.long)
        if not len(idx):
            continue
        aggregate[name] = [aggregate_row("nla", {k: v[idx] for k, v in nla_items.items()}, seed)]
        aggregate[name] += [aggregate_row(b, {k: v[idx] for k, v in m.items()}, seed) for b, m in per_baseline.items()]
    return {"layer": nla.layer, "source": nla.source, "rows": rows, "aggregate": aggregate,
            "parse_rate": part["parse_rate"], "skipped_baselines": [b for b in baselines if b not in preds],
            "n_train_positions": len(train) if train is not None else 0}
