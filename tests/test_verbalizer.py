"""AV: the injected embedding is exactly the rescaled vector at the marker slot, nothing else moves; parsing."""

import pytest
import torch

from nlakit.verbalizer import Explanation, parse_explanation, wrap_explanation


def _first_block_inputs(av, run):
    """Run `run()` and return the hidden states entering decoder block 0 on its first call (the prefill), (B, T, D)."""
    from nlakit.targets import decoder_layers

    seen = []

    def pre_hook(_module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        seen.append(h.detach().clone())

    handle = decoder_layers(av.model)[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_injection_replaces_only_the_slot(make_nla, arch):
    nla = make_nla(arch, 2)
    av = nla.av
    torch.manual_seed(0)
    vectors = torch.randn(3, nla.d_model) * 5
    h = _first_block_inputs(av, lambda: av.generate_ids(vectors, max_new_tokens=1))  # (3, P, D)
    P = len(av.prompt_ids)
    assert h.shape == (3, P, nla.d_model)
    expected = vectors / vectors.norm(dim=-1, keepdim=True) * nla.meta.injection_scale
    torch.testing.assert_close(h[:, av.slot], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[:, av.slot].norm(dim=-1), torch.full((3,), nla.meta.injection_scale), atol=1e-4, rtol=1e-4)
    # every other position is the model's own (for Gemma: sqrt(d)-scaled) embedding of the prompt, untouched
    plain = av.model.get_input_embeddings()(torch.tensor([av.prompt_ids]))[0]  # (P, D)
    others = [p for p in range(P) if p != av.slot]
    for b in range(3):
        torch.testing.assert_close(h[b, others], plain[others])


def test_prompt_has_one_marker_slot(make_nla):
    nla = make_nla("llama", 2)
    av, meta = nla.av, nla.meta
    ids = av.prompt_ids
    assert ids.count(meta.injection_token_id) == 1 and ids[av.slot] == meta.injection_token_id
    assert (ids[av.slot - 1], ids[av.slot + 1]) == (meta.left_neighbor_id, meta.right_neighbor_id)
    text = av.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user") and text.rstrip().endswith("assistant")


def test_explain_is_deterministic_and_one_per_vector(make_nla):
    nla = make_nla("llama", 2)
    vectors = torch.randn(4, nla.d_model)
    a = nla.explain(vectors, max_new_tokens=5)
    b = nla.explain(vectors, max_new_tokens=5, batch_size=2)
    assert len(a) == 4 and all(isinstance(e, Explanation) for e in a)
    assert [e.raw for e in a] == [e.raw for e in b]
    assert all(e.n_tokens <= 5 for e in a)


def test_parse_explanation():
    ok = parse_explanation("<explanation>\n The cat. \n</explanation> trailing")
    assert ok.ok and ok.text == "The cat."
    assert parse_explanation(wrap_explanation("x y")).text == "x y"
    for bad in ("<explanation> no closing tag", "plain text", "<explanation>  </explanation>", ""):
        e = parse_explanation(bad)
        assert not e.ok and e.text == bad.strip()


def test_teacher_forcing_logprobs(make_nla):
    nla = make_nla("gemma3", 1)
    responses = nla.av.response_ids(["a cat", "the quick brown fox"])
    lp, mask = nla.av.token_logprobs(torch.randn(2, nla.d_model), responses)
    assert lp.shape == mask.shape == (2, max(len(r) for r in responses))
    assert mask.sum(1).tolist() == [len(r) for r in responses]
    assert torch.isfinite(lp).all() and (lp <= 0).all()


def test_stop_ids_recorded_in_the_sidecar_extend_the_eos_set(make_nla):
    from nlakit.verbalizer import Verbalizer

    nla = make_nla("llama", 2)
    av = Verbalizer(nla.av.model, nla.av.tokenizer, nla.meta.with_(nlakit={**nla.meta.nlakit, "stop_ids": [5]}))
    assert 5 in av.eos and set(nla.av.eos) < set(av.eos)
