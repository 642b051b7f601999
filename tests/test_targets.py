"""Targets: tiny Llama/Gemma-3 factories, load_target specs, encoding with offsets, chat, generation."""

import pytest
import torch

from nlakit.errors import NlakitError
from nlakit.targets import load_target, resolve_dtype


def test_tiny_target_shapes(tiny_any):
    t = tiny_any
    assert (t.d_model, t.n_layers) == (64, 4)
    assert len(t.decoder_layers) == t.n_layers
    assert t.check_layer(t.n_layers - 1) == t.n_layers - 1


def test_encode_offsets_and_bos(tiny_llama, tiny_gemma, texts):
    for t in (tiny_llama, tiny_gemma):
        enc = t.encode(texts[:3])
        assert enc.input_ids.shape == enc.attention_mask.shape
        assert enc.attention_mask.sum(1).tolist() == enc.lengths
        for i, text in enumerate(texts[:3]):
            assert len(enc.offsets[i]) == enc.lengths[i]
            pieces = "".join(text[s:e] for s, e in enc.offsets[i])
            assert pieces == text  # every character belongs to exactly one token
    assert tiny_gemma.encode(["hi"]).input_ids[0, 0].item() == tiny_gemma.tokenizer.bos_token_id
    assert tiny_llama.tokenizer.bos_token_id is None


def test_chat_text_and_marker(tiny_llama):
    text = tiny_llama.chat_text([{"role": "user", "content": "hello"}])
    assert text.startswith("<|im_start|>user\nhello<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert len(tiny_llama.tokenizer.encode("●", add_special_tokens=False)) == 1


def test_generate_returns_completions(tiny_llama):
    out = tiny_llama.generate(["hello", "the cat"], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert out == tiny_llama.generate(["hello", "the cat"], max_new_tokens=3)  # greedy is deterministic


def test_load_target_tiny_spec_and_dtype():
    t = load_target("tiny:gemma3", dtype="bfloat16")
    assert t.spec == "tiny:gemma3" and t.config.model_type == "gemma3_text"
    assert next(t.model.parameters()).dtype == torch.bfloat16
    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(NlakitError, match="unknown dtype"):
        resolve_dtype("float8")


def test_load_target_hf_dir_roundtrip(tmp_path, tiny_llama, texts):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    t = load_target(str(tmp_path))
    assert t.d_model == tiny_llama.d_model and t.name == tmp_path.name
    enc = tiny_llama.encode(texts[:1])
    with torch.no_grad():
        a = tiny_llama.model(input_ids=enc.input_ids).logits
        b = t.model(input_ids=enc.input_ids).logits
    torch.testing.assert_close(a, b)
