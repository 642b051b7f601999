"""SFT/DPO variants of a tiny target (TRL + LoRA, merged), the `variants` CLI, and the behaviour score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nlakit.errors import NlakitError
from nlakit.experiments.transfer.score import ScoreConfig, corpus_prompts, corpus_replies, score_models
from nlakit.experiments.transfer.variants import VARIANT_META, VariantConfig, build_variants, variant_info
from nlakit.targets import tiny_target

FAST = {"n_train": 4, "max_steps": 2, "batch_size": 2, "max_length": 128, "lora_r": 4, "lora_alpha": 8, "device": "cpu"}


def _save_tiny(path):
    t = tiny_target()
    t.model.save_pretrained(path)
    t.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    base = tiny_target()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    results = build_variants(VariantConfig(target="tiny", out_dir=str(out), **FAST), ("sft", "dpo"), target=base)
    return base, before, results


def test_variants_are_saved_merged_and_load_back(built):
    from nlakit.targets import load_target

    base, before, results = built
    assert [r.kind for r in results] == ["sft", "dpo"]
    for r in results:
        meta = json.loads((Path(r.path) / VARIANT_META).read_text())
        assert meta["kind"] == r.kind and meta["dataset"]["n_train"] == FAST["n_train"] and meta["train"]["steps"] == 2
        losses = [h["loss"] for h in meta["train"]["log"] if "loss" in h]
        assert losses and all(torch.isfinite(torch.tensor(losses)))
        v = load_target(r.path)  # a plain HF directory: no PEFT wrapper left
        assert not any("lora" in k for k in v.model.state_dict())
        assert set(v.model.state_dict()) <= set(before) | {"lm_head.weight"}
        changed = [k for k, w in v.model.state_dict().items() if k in before and not torch.allclose(w, before[k])]
        assert changed, f"{r.kind}: merged weights equal the base"
        assert v.generate(["Prove that 1 = 2."], max_new_tokens=3)  # runs
        assert variant_info(r.path)["kind"] == r.kind
    # the base target was trained on a copy, never in place
    assert all(torch.equal(w, before[k]) for k, w in base.model.state_dict().items())
    assert variant_info("smollm2") == {"kind": "base"}


def test_config_roundtrip_and_validation():
    cfg = VariantConfig(target="x", lora_modules=("q_proj",), n_train=5)
    assert VariantConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(NlakitError, match="n_train"):
        VariantConfig(n_train=0)
    with pytest.raises(NlakitError, match="dpo_beta"):
        VariantConfig(dpo_beta=0)


def test_unknown_kind_and_missing_lora_modules(tmp_path):
    with pytest.raises(NlakitError, match="unknown variant kinds"):
        build_variants(VariantConfig(out_dir=str(tmp_path)), ("ppo",), target=tiny_target())
    with pytest.raises(NlakitError, match="LoRA modules"):
        build_variants(VariantConfig(out_dir=str(tmp_path), lora_modules=("nonexistent",), **FAST), ("sft",), target=tiny_target())


def test_prompts_longer_than_max_length_raise(tmp_path):
    with pytest.raises(NlakitError, match="max-length"):
        build_variants(VariantConfig(out_dir=str(tmp_path), **{**FAST, "max_length": 16}), ("sft",), target=tiny_target())


def _tiny_corpus(path):
    rows = [{"id": f"m{i}", "kind": "math", "text": "x", "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                                                     {"role": "assistant", "content": f"It is {2 * i}."}]}
            for i in range(6)]
    rows += [{"id": f"c{i}", "kind": "chat", "text": "x", "messages": [{"role": "user", "content": f"Tell me about topic {i}."},
                                                                      {"role": "assistant", "content": f"Topic {i} is a fine topic."}]}
             for i in range(6)]
    rows += [{"id": "p", "kind": "prose", "text": "no messages here"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_corpus_prompts_and_replies(tmp_path):
    p = corpus_prompts(_tiny_corpus(tmp_path / "c.jsonl"), 4, seed=0)
    assert sorted(x["group"] for x in p) == ["corpus_chat", "corpus_chat", "corpus_math", "corpus_math"]
    replies = corpus_replies(tmp_path / "c.jsonl", 5, seed=0)
    assert len(replies) == 5 and all(r.startswith(("It is", "Topic")) for r in replies)
    (tmp_path / "empty.jsonl").write_text('{"id": "p", "text": "plain"}\n')
    with pytest.raises(NlakitError, match="messages"):
        corpus_prompts(tmp_path / "empty.jsonl", 4)
    with pytest.raises(NlakitError, match="assistant"):
        corpus_replies(tmp_path / "empty.jsonl", 4)


def test_neutral_replies_pull_ordinary_text_towards_calm(tmp_path):
    from nlakit.experiments.transfer.behaviour import load_dataset
    from nlakit.experiments.transfer.frustration import FrustrationScorer

    data = load_dataset()
    neutral = [f"The answer is {i}. Here is a short summary of topic {i}." for i in range(200)]
    plain = FrustrationScorer.from_dataset(data).classifier
    with_neutral = FrustrationScorer.from_dataset(data, neutral=neutral).classifier
    text = ["The answer is 42. Here is a short summary."]
    assert with_neutral.predict_proba(text)[0] < plain.predict_proba(text)[0]
    assert with_neutral.n_neutral == 200 and with_neutral.heldout_accuracy >= 0.95


def test_score_models_reports_every_group(tmp_path, built):
    _, _, results = built
    base = tiny_target()
    corpus = str(_tiny_corpus(tmp_path / "c.jsonl"))
    cfg = ScoreConfig(models=("base", results[0].path), corpus=corpus, neutral_corpus=corpus, n_behaviour=3, n_corpus=4,
                      max_new_tokens=4, device="cpu", n_examples=3)
    res = score_models(cfg, targets={"base": base})
    assert res["n_prompts"] == {"behaviour": 3, "corpus_chat": 2, "corpus_math": 2}
    assert [m["kind"] for m in res["models"]] == ["base", "sft"]
    for m in res["models"]:
        for g in res["n_prompts"]:
            s = m["groups"][g]
            assert 0.0 <= s["lexicon_rate"]["mean"] <= 1.0 and 0.0 <= s["p_frustrated"]["mean"] <= 1.0
    assert res["examples"] and set(res["examples"][0]["answers"]) == {"base", results[0].path}
    json.dumps(res)  # JSON-clean


def test_cli_dataset_build_and_score(tmp_path):
    from nlakit.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["variants", "dataset", "--out", str(tmp_path / "d.jsonl"), "--n", "80"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 80
    base = _save_tiny(tmp_path / "base")
    r = runner.invoke(app, ["variants", "build", "--target", str(base), "--out", str(tmp_path / "v"), "--kinds", "sft",
                            "--dataset", str(tmp_path / "d.jsonl"), "--n-train", "4", "--max-steps", "1", "--batch-size", "2",
                            "--max-length", "128", "--lora-r", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "v" / "sft" / "config.json").exists()
    r = runner.invoke(app, ["variants", "score", "--models", f"{base},{tmp_path / 'v' / 'sft'}", "--out", str(tmp_path / "s.json"),
                            "--corpus", str(_tiny_corpus(tmp_path / "c.jsonl")), "--neutral-corpus", str(tmp_path / "c.jsonl"),
                            "--n-behaviour", "2", "--n-corpus", "2",
                            "--max-new-tokens", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "variants_score"
