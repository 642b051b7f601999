"""Tiny random-weight models and their tokenizer, behind the `tiny:llama` / `tiny:gemma3` targets (no downloads, < 1 s).

A leaf module (torch, transformers, tokenizers only): `nlakit.targets.tiny_target` wraps these in a `Target`, and
`nlakit.testing` builds whole tiny NLAs on top for tests.

`tiny:llama` mimics SmolLM2 (no BOS, ChatML template); `tiny:gemma3` mimics Gemma-3
(BOS added, scaled embeddings, `gemma3_text`). The tokenizer is a byte-level BPE trained in-process on a
few paragraphs, so every string encodes and offsets work; `●` is a single token (the injection marker).
"""

from __future__ import annotations

import functools

import torch

_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TRAIN_TEXT = """
Summary of the following text: <text>The cat sat on the mat.</text> <summary>
<explanation>
The text is about a cat. The next word is likely mat.
</explanation>
<concept>●</concept> Here is the vector. Explain what the model is thinking about.
The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } , . ; : ! ? ' " \n
Once upon a time there was a little girl who lived in a village near the forest.
def main(): return x + y  # code comment
The equation y = x0 * x1 + cos(x0) has two variables. Solve for x.
I am frustrated, this is impossible! The problem has no solution because the statement is false.
""" * 4


@functools.lru_cache(maxsize=4)
def _tokenizer_json(bos: bool) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<bos>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TRAIN_TEXT], trainer=trainer)
    tok.add_tokens(["●"])
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def tiny_tokenizer(bos: bool = False):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(bos)), pad_token="<pad>",
                                  eos_token="<|im_end|>", bos_token="<bos>" if bos else None)
    tok.chat_template = _CHATML
    tok.padding_side = "right"
    return tok


def tiny_model(arch: str = "llama", *, vocab_size: int, n_layers: int = 4, d_model: int = 64, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, eos_token_id=3)
    if arch == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(**common, tie_word_embeddings=True, bos_token_id=None)
    elif arch == "gemma3":
        from transformers import Gemma3TextConfig

        cfg = Gemma3TextConfig(**common, head_dim=16, bos_token_id=1, sliding_window=32, query_pre_attn_scalar=16)
    else:
        raise ValueError(f"unknown tiny arch {arch!r}")
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    return model.eval()
