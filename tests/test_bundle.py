"""Bundles and the released format: save → load gives the same NLA; export → load gives identical outputs."""

import pytest
import torch

from nlakit.bundle import export_released, load_nla, load_released
from nlakit.meta import NLAMeta


def _outputs(nla, vectors):
    return nla.av.generate_ids(vectors, max_new_tokens=6), nla.reconstruct(["a cat", "The quick brown fox jumps."])


def test_meta_yaml_roundtrip(tmp_path, make_nla):
    meta = make_nla("gemma3", 1).meta
    meta.save(tmp_path)
    assert NLAMeta.load(tmp_path) == meta
    for role in ("av", "ar"):
        meta.save(tmp_path, role=role)
        back = NLAMeta.load(tmp_path)
        assert (back.role, back.layer, back.d_model, back.av_template, back.ar_template) == (role, 1, 64, meta.av_template, meta.ar_template)


def test_bundle_roundtrip(tiny_bundle, make_nla):
    nla = make_nla("llama", 2)
    back = load_nla(tiny_bundle)  # the sidecar names tiny:llama, so the target is rebuilt from the spec
    assert back.meta.layer == nla.meta.layer and back.meta.injection_scale == nla.meta.injection_scale
    assert back.reference is not None and back.reference.n == nla.reference.n
    torch.testing.assert_close(back.reference.mu_nrm, nla.reference.mu_nrm)
    vectors = torch.randn(3, nla.d_model)
    ids_a, rec_a = _outputs(nla, vectors)
    ids_b, rec_b = _outputs(back, vectors)
    assert ids_a == ids_b
    torch.testing.assert_close(rec_a, rec_b)


def test_bundle_resave_replaces(tmp_path, make_nla):
    nla = make_nla("llama", 2)
    nla.save(tmp_path / "b")
    nla.save(tmp_path / "b")  # overwriting an existing bundle is atomic (old dir swapped out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("arch,layer", [("llama", 2), ("gemma3", 1)])
def test_released_float32_export_is_exact(tmp_path, make_nla, arch, layer):
    nla = make_nla(arch, layer)
    av_dir, ar_dir = export_released(nla, tmp_path, dtype="float32")
    for d in (av_dir, ar_dir):
        assert (d / "nla_meta.yaml").exists() and (d / "config.json").exists()
    assert (ar_dir / "value_head.safetensors").exists()
    assert NLAMeta.load(ar_dir).role == "ar" and NLAMeta.load(av_dir).injection_scale == nla.meta.injection_scale
    back = load_released(av_dir, ar_dir)
    vectors = torch.randn(2, nla.d_model)
    ids_a, rec_a = _outputs(nla, vectors)
    ids_b, rec_b = _outputs(back, vectors)
    assert ids_a == ids_b
    torch.testing.assert_close(rec_a, rec_b, atol=1e-6, rtol=1e-6)
    assert back.reference is not None  # carried beside the AV so fve stays centred


def test_released_bf16_export_loads(tmp_path, make_nla):
    nla = make_nla("llama", 2)
    av_dir, ar_dir = export_released(nla, tmp_path)  # bf16 by default
    back = load_released(av_dir, ar_dir, dtype="bfloat16")
    assert next(back.av.model.parameters()).dtype == torch.bfloat16
    rec = back.reconstruct(["a cat", "the dog"])
    assert rec.shape == (2, nla.d_model) and torch.isfinite(rec).all()
    cos = torch.nn.functional.cosine_similarity(rec, nla.reconstruct(["a cat", "the dog"]), dim=-1)
    assert (cos > 0.95).all()  # bf16 rounding only
    assert len(back.explain(torch.randn(1, nla.d_model), max_new_tokens=3)) == 1
