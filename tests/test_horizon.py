"""The horizon experiment on a tiny model: sentence spans, overlap scores, and an end-to-end run whose upper-bound
reader (which sees the continuation) beats its shuffled control."""

from __future__ import annotations

import json

import pytest

from nlakit.experiments.horizon import HorizonConfig, run
from nlakit.experiments.horizon.run import next_sentences
from nlakit.experiments.horizon.similarity import content_words, overlap


def test_overlap_rewards_the_reader_that_saw_the_sentence():
    actual = "The fox ran into the forest at night."
    assert content_words(actual) == ["fox", "ran", "forest", "night"]
    saw = overlap("a fox ran to the forest", actual)
    blind = overlap("stock prices fell on Monday", actual)
    assert saw[0] == 0.75 and saw[1] > blind[1] == 0.0 and blind[0] == 0.0
    assert overlap("", actual) == (0.0, 0.0)


def test_next_sentences_are_spans_after_a_sentence_end(tiny_llama):
    tok = tiny_llama.tokenizer
    ids = tok("It rained. The fox ran home fast. Then it slept well.", add_special_tokens=False)["input_ids"]
    spans = next_sentences(tok, ids, first=1, min_tokens=2)
    texts = [tok.decode(ids[s : e + 1]).strip() for s, e in spans]
    assert texts == ["The fox ran home fast.", "Then it slept well."]
    assert next_sentences(tok, ids, first=len(ids), min_tokens=1) == []


@pytest.fixture()
def heldout(tmp_path, docs):
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps({"text": t + " The end. The cat sat. It slept.", "kind": "prose"}) + "\n" for t in docs))
    return path


SENTENCES = ["The cat sat on the mat.", "A dog ran past the old house.", "Rain fell on the quiet town.",
             "She opened the red door.", "Birds sang in the tall trees.", "He cooked rice for dinner."]


def test_greedy_continues_every_row(tiny_llama):
    from nlakit.experiments.horizon.run import greedy

    rows = [[1, 5, 6, 7], [1, 9]]
    out = greedy(tiny_llama, rows, 5, batch_size=2)
    assert len(out) == 2 and all(len(r) <= 5 for r in out)
    assert out[0] == greedy(tiny_llama, rows[:1], 5, batch_size=1)[0]  # left padding does not change the result
    sampled = [greedy(tiny_llama, rows * 4, 8, batch_size=8, temperature=1.0, seed=s) for s in (0, 0, 1)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]  # seeded: the same seed, the same samples


def test_end_to_end_on_a_tiny_model(tiny_llama, make_nla, heldout, tmp_path, monkeypatch):
    import sys

    from nlakit.io import write_json
    from nlakit.report import write_report

    tok = tiny_llama.tokenizer
    calls = {"n": 0}

    def planted(target, rows, n, batch_size, temperature=0.0, seed=0):  # a target that writes sentences: each prompt gets its own continuation
        calls["n"] += 1
        if calls["n"] > 1:  # the greedy reader's fresh generations (positions inside the prompt)
            return [[] for _ in rows]
        text = lambda i: " " + " ".join(SENTENCES[(i + j // 2) % len(SENTENCES)] for j in range(3))  # noqa: E731 - the 2nd repeats the 1st
        return [tok(text(i), add_special_tokens=False)["input_ids"][:n] for i in range(len(rows))]

    monkeypatch.setattr(sys.modules["nlakit.experiments.horizon.run"], "greedy", planted)

    cfg = HorizonConfig(data=str(heldout), n_prompts=6, prompt_tokens=24, continuation_tokens=40, ks=(1, 2, 4), table_ks=(1, 4),
                        min_sentence_tokens=1, max_new_tokens=6, train_data=str(heldout), probe_docs=6, probe_tokens=32)
    res = run(cfg, target=tiny_llama, nla=make_nla("llama", 2))
    assert res["readers"] == ["nla", "logit_lens", "tuned_lens", "model_next", "context_echo", "greedy"] and res["n_samples"] > 0
    for reader in res["readers"]:
        assert [p["k"] for p in res["curves"][reader]["embed_cos"]] == [1, 2, 4]
    # the greedy reader is the continuation itself: it must beat its own shuffled pairing
    g = res["curves"]["greedy"]
    got = [p["mean"] for p in g["recall"] if p["n"]]
    ctl = [p["mean"] for p in g["recall_shuffled"] if p["n"]]
    assert got and sum(got) / len(got) > sum(ctl) / len(ctl)
    # the novel subset: sentences whose content words mostly did not occur before (the planted text repeats itself)
    nov = res["novel"]
    assert 0 <= nov["n_sentences"] <= res["n_sentences"] and [r["reader"] for r in nov["table"]] == [r["reader"] for r in res["table"]]
    assert nov["n_sentences"] < res["n_sentences"]  # a repeated sentence is not novel
    html = write_report("horizon", write_json(tmp_path / "h.json", res), tmp_path / "h.html").read_text()
    assert "<svg" in html and "greedy" in html and "Novel next sentences" in html


def test_cli_wiring_and_bad_input(tiny_bundle, heldout, tmp_path):
    from typer.testing import CliRunner

    from nlakit.cli import app
    from nlakit.errors import NlakitError

    base = ["experiment", "horizon", "--data", str(heldout), "--target", "tiny:llama", "--nla", str(tiny_bundle), "--out", str(tmp_path)]
    r = CliRunner().invoke(app, base + ["--ks", "1,four"])
    assert isinstance(r.exception, NlakitError) and "--ks" in str(r.exception)
    r = CliRunner().invoke(app, base + ["--n-prompts", "2", "--continuation-tokens", "8", "--ks", "1"])
    # a random tiny model writes no sentence ends: the run says so in one line instead of writing an empty report
    assert isinstance(r.exception, NlakitError) and "no complete next sentence" in str(r.exception)
