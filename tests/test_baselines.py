"""Baselines and the evaluation loop: each baseline does what it says, is fit on training rows only, and is scored
by the same path as the NLA."""

import pytest
import torch

from nlakit import baselines as B
from nlakit.activations import extract
from nlakit.evaluate import (
    EvalConfig,
    evaluate,
    explain_text,
    sample_positions,
    score_vectors,
)
from nlakit.metrics import score


@pytest.fixture(scope="module")
def split(tiny_llama, docs):
    """(train, test) Samples from the tiny Llama at layer 2."""
    kw = {"per_doc": 4, "min_position": 3, "max_tokens": 64, "seed": 0}
    train = sample_positions(tiny_llama, docs[:8], 2, n_positions=32, **kw)
    test = sample_positions(tiny_llama, docs[8:], 2, n_positions=8, **kw)
    return train, test


def test_samples_rows_and_windows(tiny_llama, texts):
    docs = extract(tiny_llama, texts[:2], 1, [2, 5])
    s = B.Samples.from_docs(docs)
    assert len(s) == 4 and s.doc == [0, 0, 1, 1] and s.pos == [2, 5, 2, 5]
    assert s.window(1, 3) == docs[0].token_ids[3:6]
    assert s.window(0, 32) == docs[0].token_ids[:3]  # clipped at the document start
    assert s.context(1) + s.token_text(1) == texts[0][: docs[0].offsets[5][1]]


def test_sample_positions_is_seeded_and_respects_min_position(tiny_llama, docs):
    kw = {"n_positions": 10, "per_doc": 2, "min_position": 5, "max_tokens": 64, "seed": 3}
    a = sample_positions(tiny_llama, docs, 1, **kw)
    b = sample_positions(tiny_llama, docs, 1, **kw)
    assert (a.doc, a.pos) == (b.doc, b.pos) and len(a) == 10
    assert min(a.pos) >= 5
    torch.testing.assert_close(a.vectors, b.vectors)
    c = sample_positions(tiny_llama, docs, 1, **{**kw, "seed": 4})
    assert (c.texts, c.pos) != (a.texts, a.pos)


def test_mean_baseline_is_the_training_mean(make_nla, split):
    ref = make_nla("llama", 2).reference
    p = B.mean_vector(ref, split[1])
    assert not p.direction_only and torch.equal(p.vectors[0], ref.mean_raw) and p.vectors.shape == split[1].vectors.shape


def test_ridge_recovers_a_linear_map(tiny_llama, split):
    """When the 'activation' is a linear function of the token embedding, ridge_token explains it."""
    train, test = split
    W = torch.randn(tiny_llama.d_model, tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    fake = lambda s: B.Samples(doc=s.doc, pos=s.pos, vectors=B.token_features(tiny_llama, s) @ W, token_ids=s.token_ids,
                               texts=s.texts, offsets=s.offsets)
    from nlakit.metrics import Reference

    tr, te = fake(train), fake(test)
    p = B.ridge_token(tiny_llama, tr, te)
    assert p.direction_only
    m = score(p.vectors, te.vectors, Reference.from_vectors(tr.vectors), direction_only=True)
    seen = torch.tensor([te.token_id(i) in {tr.token_id(j) for j in range(len(tr))} for i in range(len(te))])
    assert seen.any() and m["cos"][seen].min() > 0.95  # tokens met in training are mapped back almost exactly


def test_ridge_is_fit_on_training_rows_only(tiny_llama, split, monkeypatch):
    train, test = split
    seen = []
    real = B.fit_ridge
    monkeypatch.setattr(B, "fit_ridge", lambda x, y, *a, **k: (seen.append(x.shape[0]), real(x, y, *a, **k))[1])
    B.ridge_token_bag(tiny_llama, train, test)
    B.oracle_echo(tiny_llama, 2, train, test, 4)
    assert seen == [len(train), len(train)]
    assert B.token_bag_features(tiny_llama, test).shape == (len(test), 2 * tiny_llama.d_model)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_oracle_window_covering_the_prefix_is_the_full_activation(tiny_llama, tiny_gemma, docs, arch):
    """A causal model re-run on the whole prefix gives back the full-context vector (no double BOS for Gemma)."""
    target = tiny_llama if arch == "llama" else tiny_gemma
    s = sample_positions(target, docs[:3], 2, n_positions=6, per_doc=2, min_position=3, max_tokens=64, seed=0)
    torch.testing.assert_close(B.window_vectors(target, 2, s, k=1000), s.vectors, atol=1e-4, rtol=1e-4)
    short = B.window_vectors(target, 2, s, k=4)
    assert short.shape == s.vectors.shape and not torch.allclose(short, s.vectors, atol=1e-3)


def test_echo_ar_reads_the_decoded_window(make_nla, tiny_llama, split):
    nla, test = make_nla("llama", 2), split[1]
    p = B.echo_ar(nla.ar, tiny_llama.tokenizer, test, 8)
    texts = [tiny_llama.tokenizer.decode(test.window(i, 8)) for i in range(len(test))]
    torch.testing.assert_close(p.vectors, nla.reconstruct(texts))


def test_compute_names_and_skips(make_nla, tiny_llama, split):
    nla = make_nla("llama", 2)
    train, test = split
    preds = B.compute(B.ALL_BASELINES, target=tiny_llama, ar=nla.ar, layer=2, ref=nla.reference, train=train, test=test)
    assert tuple(preds) == B.ALL_BASELINES == ("mean", "ridge_token", "ridge_token_bag8", "echo_ar8", "echo_ar32",
                                               "oracle_echo4", "oracle_echo8", "oracle_echo32")
    for p in preds.values():
        assert p.vectors.shape == test.vectors.shape and torch.isfinite(p.vectors).all()
    no_train = B.compute(B.ALL_BASELINES, target=tiny_llama, ar=nla.ar, layer=2, ref=nla.reference, train=None, test=test)
    assert set(no_train) == {"mean", "echo_ar8", "echo_ar32"}


def test_score_vectors_with_given_explanations(make_nla, split):
    nla, test = make_nla("llama", 2), split[1]
    expl = ["a cat", "the dog"] * (len(test) // 2)
    out = score_vectors(nla, test.vectors[: len(expl)], expl)
    direct = score(nla.reconstruct(expl), test.vectors[: len(expl)], nla.reference, direction_only=True)
    assert [r["fve_nrm"] for r in out["rows"]] == pytest.approx(direct["fve_nrm"].tolist())
    assert out["parse_rate"] == 1.0 and out["aggregate"]["name"] == "nla" and out["aggregate"]["n"] == len(expl)


def test_evaluate_end_to_end(make_nla, tiny_llama, docs):
    nla = make_nla("llama", 2)
    cfg = EvalConfig(n_positions=8, n_train_positions=24, min_position=4, max_tokens=64, max_new_tokens=4)
    r = evaluate(nla, tiny_llama, docs[8:], docs[:8], cfg)
    assert r["kind"] == "eval" and r["n_positions"] == 8 and r["config"] == cfg.to_dict()
    assert [a["name"] for a in r["aggregate"]] == ["nla", *B.ALL_BASELINES]
    for a in r["aggregate"]:
        assert set(a) == {"name", "fve_nrm", "fve_nrm_ci95", "fve_raw", "cos", "n"} and a["n"] == 8
    row = r["rows"][0]
    assert {"doc", "pos", "token", "explanation", "ok", "fve_nrm", "fve_raw", "cos", "baselines"} <= set(row)
    assert all(x["pos"] >= 4 for x in r["rows"])
    assert 0.0 <= r["parse_rate"] <= 1.0 and r["mean_explanation_tokens"] <= 4
    assert r["reference"]["source"] == "bundle" and r["skipped_baselines"] == []
    again = evaluate(nla, tiny_llama, docs[8:], docs[:8], cfg)
    assert again["aggregate"] == r["aggregate"]  # seeded end to end
    assert EvalConfig.from_dict(r["config"]) == cfg


def test_explain_text(make_nla, tiny_gemma):
    nla = make_nla("gemma3", 1)
    r = explain_text(nla, tiny_gemma, "The cat sat on the mat.", "2,-1", cfg=EvalConfig(n_positions=1, min_position=0, max_new_tokens=3))
    assert r["kind"] == "explain" and [row["pos"] for row in r["rows"]] == [2, len(r["tokens"]) - 1]
    assert [a["name"] for a in r["aggregate"]] == ["nla", "mean", "echo_ar8", "echo_ar32"]
    assert set(r["skipped_baselines"]) == set(B.NEEDS_TRAIN)


def test_stored_ridge_maps_predict_like_the_fit_and_serve_eval_without_training_text(tiny_llama, split, make_nla, docs, tmp_path):
    train, test = split
    maps = B.fit_stored(tiny_llama, train)
    assert set(maps) == set(B.STORED_BASELINES)
    want = B.ridge_token(tiny_llama, train, test).vectors
    assert torch.allclose(B.stored_predict("ridge_token", maps["ridge_token"], tiny_llama, test).vectors, want, atol=1e-4)
    B.save_stored(maps, tmp_path / "b.safetensors")
    from nlakit.bundle import _read_safetensors

    back = B.load_stored(_read_safetensors(tmp_path / "b.safetensors"))
    got = B.stored_predict("ridge_token", back["ridge_token"], tiny_llama, test).vectors
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999  # stored in float16
    nla = make_nla("llama", 2)
    cfg = EvalConfig(n_positions=4, min_position=3, max_tokens=64, max_new_tokens=4,
                     baselines=("mean", "ridge_token", "ridge_token_bag8", "oracle_echo4"))
    with_maps = evaluate(type(nla)(**{**nla.__dict__, "baselines": back}), tiny_llama, docs[8:], cfg=cfg)
    names = [r["name"] for r in with_maps["aggregate"]]
    assert "ridge_token" in names and "ridge_token_bag8" in names and with_maps["skipped_baselines"] == ["oracle_echo4"]
    plain = evaluate(nla, tiny_llama, docs[8:], cfg=cfg)
    assert "ridge_token" not in [r["name"] for r in plain["aggregate"]]
