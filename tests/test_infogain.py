"""`nlakit experiment infogain`: the probes on synthetic data where the answer is known, and the whole run on two tiny
random targets (the checkpoint label, generic over any list of models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlakit.errors import NlakitError
from nlakit.experiments.infogain import probe
from nlakit.experiments.infogain.run import LABELS, InfogainConfig, run
from nlakit.report import render


def _synthetic(n: int = 80, seed: int = 0):
    """The label is written in the explanation only; the output text is label-free noise; vectors carry it weakly."""
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b"] * (n // 2))
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    output = [" ".join(rng.choice(words, 6)) for _ in y]
    expl = [("the writer is about to refuse " if v == "b" else "the writer will keep going ") + " ".join(rng.choice(words, 3)) for v in y]
    vec = rng.normal(size=(n, 16))
    vec[:, 0] += 3.0 * (y == "b")
    groups = np.arange(n) // 2  # two rows per "prompt"
    return y, groups, output, expl, vec


def test_probe_finds_information_where_it_is_and_nowhere_else():
    y, g, out, expl, vec = _synthetic()
    res = probe.evaluate_label(y, g, out, expl, vec, n_folds=4, n_boot=100, seed=0)
    f = res["features"]
    assert not res["degenerate"] and res["n"] == 80 and res["majority_accuracy"] == 0.5
    assert f["explanation"]["auroc"] > 0.95 and f["both"]["auroc"] > 0.95
    assert f["output"]["auroc"] < 0.75 and f["shuffled"]["auroc"] < 0.75
    assert f["activation"]["auroc"] > 0.9
    gain = res["gain_both_over_output"]
    assert gain["auroc"] > 0.2 and gain["auroc_ci95"][0] > 0  # both beats output only, and the interval says so
    for x in f.values():
        lo, hi = x["accuracy_ci95"]
        assert lo <= x["accuracy"] <= hi


def test_folds_never_split_a_prompt():
    y = np.array(["a", "b"] * 30)
    groups = np.arange(60) // 3
    for tr, te in probe.folds(y, groups, 5, 0):
        assert not set(groups[tr]) & set(groups[te])


def test_one_class_is_reported_not_fitted():
    res = probe.evaluate_label(["x"] * 10, list(range(10)), ["t"] * 10, ["e"] * 10, np.zeros((10, 3)))
    assert res["degenerate"] and res["class_counts"] == {"x": 10}


def test_config_and_labels():
    with pytest.raises(NlakitError, match="needs --variants"):
        InfogainConfig(labels=("checkpoint",))
    with pytest.raises(NlakitError, match="unknown labels"):
        InfogainConfig(labels=("mood",))
    with pytest.raises(NlakitError, match="response_positions"):
        InfogainConfig(response_tokens=4, response_positions=(5,))
    assert InfogainConfig(variants=("sft=runs/v/sft", "runs/v/dpo")).variant_specs() == [("sft", "runs/v/sft"), ("dpo", "runs/v/dpo")]
    assert LABELS["denies"]("it", "This is impossible: no such integer exists.") == "denies"
    assert LABELS["denies"]("it", "Sure! Step 1: expand the square.") == "goes_along"
    assert LABELS["frustrated"]("it", "Ugh, I give up.") == "frustrated"
    assert LABELS["opens_with_to"]("it", " To solve this, ...") == "to" and LABELS["opens_with_to"]("it", "Tomorrow") == "other"
    assert LABELS["writes_equation"]("it", "so x = 3") == "equation" and LABELS["writes_equation"]("it", "no") == "prose"


@pytest.fixture(scope="module")
def results(tiny_llama, make_nla):
    from nlakit.targets import tiny_target

    other = tiny_target("llama", seed=1)  # same tokenizer, other random weights: a stand-in for a fine-tuned checkpoint
    cfg = InfogainConfig(target="tiny:llama", labels=("checkpoint", "denies"), variants=("other=unused",), n_prompts=12,
                         response_tokens=3, response_positions=(0, 2), max_new_tokens=4, batch_size=64, n_folds=3, n_boot=50)
    return run(cfg, targets=[("it", tiny_llama), ("other", other)], nla=make_nla("llama", 2))


def test_checkpoint_label_on_two_random_targets(results):
    assert [m["name"] for m in results["models"]] == ["it", "other"]
    assert results["positions"] == ["last_prompt", "response_0", "response_2"]
    res = results["results"]["checkpoint"]
    for kind in results["positions"]:
        r = res[kind]
        assert r["n"] == 24 and r["class_counts"] == {"it": 12, "other": 12}
        assert r["features"]["activation"]["auroc"] > 0.9  # the two models' activations differ systematically
        assert np.isfinite(r["nla_scores"]["fve_nrm"])
    # at the last prompt token both models have read the very same text: output-only features cannot tell them apart
    assert res["last_prompt"]["features"]["output"]["auroc"] == pytest.approx(0.5, abs=1e-9)
    rows = results["rows"]
    assert len(rows) == 2 * 12 * 3 and all(r["explanation"] is not None for r in rows)


def test_behaviour_labels_come_from_the_base_answers_and_report_renders(results):
    rates = results["label_rates"]["denies"]
    assert set(rates) == {"it", "other"} and sum(rates["it"].values()) == 12
    for r in results["answers"]:
        assert r["labels"]["denies"] == LABELS["denies"](r["model"], r["answer"])
    den = results["results"]["denies"]["last_prompt"]
    assert den["n"] == 12  # the base model's rows only
    html = render("infogain", json.loads(json.dumps(results)))
    assert "Label: checkpoint" in html and "both − output" in html
