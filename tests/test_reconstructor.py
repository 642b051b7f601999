"""AR: K+1 blocks, no final norm, identity head; reads the last attended token, whatever the padding."""

import pytest
import torch

from nlakit.reconstructor import Reconstructor

EXPLANATIONS = ["a cat", "The text is about a cat. The next word is likely mat.", "x", "Once upon a time there was a little girl."]


@pytest.mark.parametrize("arch,layer", [("llama", 2), ("gemma3", 1)])
def test_structure(make_nla, arch, layer):
    ar = make_nla(arch, layer).ar
    assert ar.backbone.config.num_hidden_layers == layer + 1 and len(ar.backbone.layers) == layer + 1
    assert isinstance(ar.backbone.norm, torch.nn.Identity)
    torch.testing.assert_close(ar.value_head.weight, torch.eye(ar.meta.d_model))
    if arch == "gemma3":  # per-layer attention types are cut along with the layers
        assert len(ar.backbone.config.layer_types) == layer + 1


@pytest.mark.parametrize("arch,layer", [("llama", 2), ("gemma3", 1)])
def test_untrained_ar_equals_target_activation(make_nla, tiny_llama, tiny_gemma, arch, layer):
    """Identity head + blocks 0..K without final norm = the target's layer-K vector at the prompt's last token."""
    target = tiny_llama if arch == "llama" else tiny_gemma
    ar = make_nla(arch, layer).ar
    out = ar.reconstruct(EXPLANATIONS)
    for i, e in enumerate(EXPLANATIONS):
        ids = torch.tensor([target.tokenizer.encode(ar.format(e), add_special_tokens=True)])
        with torch.no_grad():
            hs = target.model(input_ids=ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(out[i], hs[layer + 1][0, -1].float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_reads_last_attended_token_under_padding(make_nla, arch):
    ar = make_nla(arch, 1).ar
    batched = ar.reconstruct(EXPLANATIONS, batch_size=len(EXPLANATIONS))
    _ids, mask = ar.encode(EXPLANATIONS)
    assert (mask.sum(1) < mask.shape[1]).any()  # the batch really is padded
    for i, e in enumerate(EXPLANATIONS):
        torch.testing.assert_close(batched[i], ar.reconstruct([e])[0], atol=1e-5, rtol=1e-5)


def test_prompt_ends_with_sidecar_suffix(make_nla):
    ar = make_nla("gemma3", 1).ar
    ids, mask = ar.encode(["hello there"])
    suffix = list(ar.meta.critic_suffix_ids)
    assert ids[0, : int(mask[0].sum())].tolist()[-len(suffix) :] == suffix
    assert ids[0, 0].item() == ar.tokenizer.bos_token_id  # BOS on the AR input (Gemma)


def test_long_explanation_keeps_the_read_token(make_nla):
    ar = make_nla("llama", 2).ar
    ids, _mask = ar.encode(["word " * 400], max_length=64)
    assert ids.shape[1] == 64
    assert ids[0, -len(ar.meta.critic_suffix_ids) :].tolist() == list(ar.meta.critic_suffix_ids)


def test_wrong_layer_sidecar_is_refused(make_nla):
    from nlakit.errors import NlakitError

    nla = make_nla("llama", 2)
    with pytest.raises(NlakitError, match="blocks but the sidecar names layer"):
        Reconstructor(nla.ar.backbone, nla.ar.tokenizer, nla.meta.with_(layer=1))
