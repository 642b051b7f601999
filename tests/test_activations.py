"""Extraction: layer K = HF hidden_states[K+1], batch invariance, position specs, sinks, shards."""

import pytest
import torch

from nlakit.activations import extract, load_shard, resolve_positions, save_shard


def test_shapes_and_default_sink_skip(tiny_any, texts):
    docs = extract(tiny_any, texts, layer=1)
    assert len(docs) == len(texts)
    for d, text in zip(docs, texts):
        assert d.text == text and d.layer == 1
        assert d.vectors.dtype == torch.float32 and d.vectors.shape == (len(d.positions), tiny_any.d_model)
        assert 0 not in d.positions  # position 0 (and BOS) is an attention sink, dropped by default
        assert torch.isfinite(d.vectors).all()


@pytest.mark.parametrize("layer", [0, 2])
def test_equals_hf_hidden_states_k_plus_1(tiny_any, texts, layer):
    docs = extract(tiny_any, texts[:3], layer, include_sinks=True)
    for d in docs:
        ids = torch.tensor([d.token_ids])
        with torch.no_grad():
            hs = tiny_any.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert d.positions == list(range(len(d.token_ids)))
        # (the last entry of hidden_states has the final norm applied, so the last block is not compared here)
        torch.testing.assert_close(d.vectors, hs[layer + 1][0].float(), atol=1e-5, rtol=1e-5)


def test_batched_equals_one_at_a_time(tiny_any, texts):
    batched = extract(tiny_any, texts, 2, batch_size=len(texts))
    for text, b in zip(texts, batched):
        (single,) = extract(tiny_any, [text], 2, batch_size=1)
        assert single.positions == b.positions
        torch.testing.assert_close(single.vectors, b.vectors, atol=1e-4, rtol=1e-4)


def test_forward_stops_after_block_k(tiny_llama, texts):
    fired = []
    handle = tiny_llama.decoder_layers[3].register_forward_hook(lambda *a: fired.append(1))
    try:
        extract(tiny_llama, texts[:2], 1)
    finally:
        handle.remove()
    assert not fired


def test_position_specs(tiny_llama):
    text = "The cat sat on the mat."
    (d,) = extract(tiny_llama, [text], 1, "all", include_sinks=True)
    n = len(d.token_ids)
    off = d.offsets
    assert resolve_positions("last", text, off) == [n - 1]
    assert resolve_positions([1, -1], text, off) == [1, n - 1]
    assert resolve_positions("1,-1", text, off) == [1, n - 1]
    cat = resolve_positions("match:cat", text, off)
    assert "".join(text[off[p][0] : off[p][1]] for p in cat).strip() == "cat"
    assert resolve_positions("span:0-3", text, off) == [0]
    (last,) = extract(tiny_llama, [text], 1, "last")
    torch.testing.assert_close(last.vectors, d.vectors[-1:])


def test_shard_roundtrip(tmp_path, tiny_llama, texts):
    docs = extract(tiny_llama, texts[:3], 2)
    path = save_shard(tmp_path / "a.safetensors", docs, {"target": tiny_llama.spec})
    shard = load_shard(path)
    torch.testing.assert_close(shard["vectors"], torch.cat([d.vectors for d in docs]))
    assert shard["texts"] == texts[:3] and shard["meta"]["layer"] == "2" and shard["meta"]["target"] == "tiny:llama"
    assert shard["position"].tolist() == [p for d in docs for p in d.positions]
    assert shard["token_id"].tolist() == [d.token_ids[p] for d in docs for p in d.positions]
