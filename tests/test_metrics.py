"""Metric formulas against a plain numpy reference; the bootstrap interval; Reference statistics."""

import math

import numpy as np
import pytest
import torch

from nlakit import metrics
from nlakit.metrics import Reference


def _np_norm(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * math.sqrt(x.shape[-1])


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(32, generator=g) * 2  # a shared direction, as real activations have
    train = torch.randn(500, 32, generator=g) + offset
    gold = torch.randn(40, 32, generator=g) + offset
    pred = gold + torch.randn(40, 32, generator=g) * 0.7
    return train, gold, pred


def test_mse_nrm_is_two_one_minus_cos(data):
    _, gold, pred = data
    p, g = pred.double().numpy(), gold.double().numpy()
    mse = ((_np_norm(p) - _np_norm(g)) ** 2).mean(-1)
    cos = (p * g).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(g, axis=-1)
    np.testing.assert_allclose(metrics.mse_nrm(pred, gold).numpy(), mse, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.cosine(pred, gold).numpy(), cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mse, 2 * (1 - cos), rtol=1e-9, atol=1e-9)


def test_fve_nrm_against_numpy(data):
    train, gold, pred = data
    ref = Reference.from_vectors(train)
    mu = _np_norm(train.double().numpy()).mean(0)
    np.testing.assert_allclose(ref.mu_nrm.numpy(), mu, rtol=1e-5, atol=1e-5)
    # B is the mean squared distance of the reference set to its own mean, = 1 - ||mu||^2 / d
    B = ((_np_norm(train.double().numpy()) - mu) ** 2).mean()
    assert metrics.fve_baseline(ref.mu_nrm) == pytest.approx(B, rel=1e-5)
    expected = 1 - ((_np_norm(pred.double().numpy()) - _np_norm(gold.double().numpy())) ** 2).mean(-1) / B
    np.testing.assert_allclose(metrics.fve_nrm(pred, gold, ref.mu_nrm).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(metrics.fve_nrm(gold, gold, ref.mu_nrm), torch.ones(len(gold)), atol=1e-6)  # perfect = 1


def test_fve_raw_against_numpy(data):
    train, gold, pred = data
    ref = Reference.from_vectors(train)
    t = train.double().numpy()
    V = ((t - t.mean(0)) ** 2).sum(-1).mean()
    assert ref.var_raw == pytest.approx(V, rel=1e-5)
    expected = 1 - ((pred.double().numpy() - gold.double().numpy()) ** 2).sum(-1) / V
    np.testing.assert_allclose(metrics.fve_raw(pred, gold, ref.mean_raw, ref.var_raw).numpy(), expected, rtol=1e-4, atol=1e-5)
    # predicting the mean on the reference set itself explains nothing, on average
    mean_pred = ref.mean_raw.expand(len(train), -1)
    assert metrics.fve_raw(mean_pred, train, ref.mean_raw, ref.var_raw).mean().item() == pytest.approx(0.0, abs=1e-4)


def test_score_direction_only_rescales_for_raw(data):
    train, gold, pred = data
    ref = Reference.from_vectors(train)
    a = metrics.score(pred * 1e-3, gold, ref, direction_only=True)
    b = metrics.score(pred, gold, ref, direction_only=True)
    for k in ("fve_nrm", "cos", "mse_nrm", "fve_raw"):
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)  # the scale of a direction-only prediction is ignored
    raw = metrics.score(pred * 1e-3, gold, ref)
    assert raw["fve_raw"].mean() < b["fve_raw"].mean()


def test_summarize_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(0.4, 0.2, size=300)
    s = metrics.summarize(x)
    lo, hi = s["ci95"]
    assert s["n"] == 300 and s["mean"] == pytest.approx(x.mean())
    assert lo < s["mean"] < hi and hi - lo < 0.1
    assert metrics.summarize(x) == s  # seeded
    assert metrics.summarize(torch.tensor([1.0, float("nan"), 3.0]))["mean"] == 2.0  # non-finite values are dropped
    assert metrics.summarize([]) == {"mean": None, "ci95": [None, None], "n": 0}


def test_reference_tensor_roundtrip(data):
    ref = Reference.from_vectors(data[0])
    back = Reference.from_tensors(ref.tensors())
    torch.testing.assert_close(back.mu_nrm, ref.mu_nrm)
    assert (back.var_raw, back.norm_mean, back.n) == pytest.approx((ref.var_raw, ref.norm_mean, ref.n))


def test_paired_eval_differences_only_the_shared_positions():
    """benchmarks/paired_eval.py: the per-position difference over the positions both results scored, and one clear
    error when they share none."""
    from pathlib import Path

    import pytest
    from conftest import load_benchmark

    from nlakit.errors import NlakitError
    from nlakit.io import read_json

    mod = load_benchmark("paired_eval")
    a = {"rows": [{"doc": 0, "pos": 40, "fve_nrm": 0.6}, {"doc": 0, "pos": 50, "fve_nrm": 0.2}, {"doc": 1, "pos": 40, "fve_nrm": 0.9}]}
    b = {"rows": [{"doc": 0, "pos": 40, "fve_nrm": 0.5}, {"doc": 0, "pos": 50, "fve_nrm": 0.4}, {"doc": 2, "pos": 40, "fve_nrm": 0.0}]}
    res = mod.paired(a, b)
    assert res["n"] == 2 and res["a_better"] == 1
    assert res["a_minus_b"]["mean"] == pytest.approx((0.1 - 0.2) / 2)
    assert res["a"]["mean"] == pytest.approx(0.4) and res["b"]["mean"] == pytest.approx(0.45)
    with pytest.raises(NlakitError, match="share no positions"):
        mod.paired(a, {"rows": [{"doc": 5, "pos": 1, "fve_nrm": 0.0}]})
    # the stored reference results (docs/benchmarks/runs/*.json.gz) read as they are
    ref = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "runs" / "default_nla_eval_heldout480_seed2.json.gz"
    stored = read_json(ref)
    assert stored["config"]["seed"] == 2 and mod.paired(stored, stored)["a_minus_b"]["mean"] == 0.0
