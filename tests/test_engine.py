"""The fast engine against plain HF generate (token for token, greedy, CPU), its sampler, its layer-L forwards
and `nlakit bench` end to end on a tiny model."""

from __future__ import annotations

import copy
import os
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from nlakit import engine
from nlakit.errors import NlakitError
from nlakit.verbalizer import Verbalizer, new_meta_for


def make_av(target, scale: float = 8.0) -> Verbalizer:
    meta = new_meta_for(target.tokenizer, d_model=target.d_model, layer=1, injection_scale=scale, base_checkpoint="tiny")
    return Verbalizer(target.model, target.tokenizer, meta)


def vectors(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def lively(request, tiny_llama, tiny_gemma):
    """A tiny target whose greedy output depends on the injected vector (the default tiny Llama's init is so small
    that it repeats one token whatever it reads): Llama weights redrawn with std 0.15, Gemma as built."""
    base = tiny_llama if request.param == "llama" else tiny_gemma
    target = copy.copy(base)
    target.model = copy.deepcopy(base.model)
    if request.param == "llama":
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in target.model.parameters():
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return target


def with_early_eos(av: Verbalizer, v: torch.Tensor, max_new_tokens: int) -> Verbalizer:
    """Declare a token the AV emits early as an extra EOS, so rows end at different lengths (exercises refill)."""
    ref = av.generate_ids(v, max_new_tokens=max_new_tokens)
    av.eos = sorted(set(av.eos) | {ref[0][3]})
    return av


# ---- greedy equality with HF generate ------------------------------------------------------------------------
def test_greedy_matches_hf_generate(lively):
    av = make_av(lively)
    v = vectors(10, lively.d_model)
    av = with_early_eos(av, v, 20)
    ref = av.generate_ids(v, max_new_tokens=20)
    assert len(set(map(tuple, ref))) > 1  # the test means something only if rows differ
    got = engine.generate(av, v, max_new_tokens=20, batch_size=4)  # 4 slots for 10 rows: refill
    assert got == ref
    assert len(got[0]) <= 3 and got[0][-1:] != [-1]  # row 0 ended on the extra EOS


def test_float32_greedy_is_batch_invariant(lively):
    """In fp32 a row's greedy text does not depend on which rows share its batch (issue 13: in bf16 near-ties can
    flip with the batch, docs/BENCHMARKS.md §2); alone, in one batch, and in refilled batches of 3 in reverse order."""
    av = make_av(lively)
    v = vectors(9, lively.d_model, seed=3)
    assert next(av.model.parameters()).dtype == torch.float32
    alone = [engine.generate(av, v[i : i + 1], max_new_tokens=16, engine="fast")[0] for i in range(9)]
    assert len(set(map(tuple, alone))) > 1
    assert engine.generate(av, v, max_new_tokens=16, engine="fast", batch_size=9) == alone
    assert engine.generate(av, v.flip(0), max_new_tokens=16, engine="fast", batch_size=3)[::-1] == alone


@pytest.mark.parametrize("attention,prefix_gemm", [("matmul", "float32"), ("reduce", "float32"), ("reduce", "model"),
                                                   ("flex", "float32")])
def test_small_queue_runs_in_passes(lively, attention, prefix_gemm):
    av = make_av(lively)
    v = vectors(7, lively.d_model, seed=1)
    eng = engine.Engine(av, engine.EngineConfig(slots=3, max_new_tokens=12, queue=4, sync_every=5, attention=attention,
                                                prefix_gemm=prefix_gemm))
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=12)
    assert eng.run(v[:2]) == av.generate_ids(v[:2], max_new_tokens=12)  # reusable, fewer rows than slots


def test_tail_shrink_keeps_every_row(lively):
    """Once the queue is empty and at most half the slots hold a row, the engine moves those rows (state and cache) to
    the front slots and steps fewer slots: greedy rows stay HF generate's, sampled rows stay those of an engine that
    never shrinks, and the run goes through smaller step sizes."""
    av = make_av(lively)
    v = vectors(11, lively.d_model, seed=4)
    av = with_early_eos(av, v, 16)
    ref = av.generate_ids(v, max_new_tokens=16)
    assert len({len(r) for r in ref}) > 1  # rows end at different steps: the tail has something to shrink
    shrink = engine.Engine(av, engine.EngineConfig(slots=8, max_new_tokens=16, tail_min_slots=1, sync_every=3))
    assert shrink.run(v) == ref
    assert shrink.last_sizes[0] == 8 and len(shrink.last_sizes) > 1 and shrink.last_sizes == sorted(shrink.last_sizes,
                                                                                                    reverse=True)
    assert shrink.run(v[:5]) == ref[:5] and shrink.n_slots == 8  # reusable: a new run starts on every slot again
    kw = dict(slots=8, max_new_tokens=16, sampling=True, sync_every=3)
    sampled = engine.Engine(av, engine.EngineConfig(tail_min_slots=2, **kw)).run(v, temperature=1.0, seed=3)
    assert sampled == engine.Engine(av, engine.EngineConfig(tail_shrink=False, **kw)).run(v, temperature=1.0, seed=3)


def test_tail_shrink_compiled_matches_hf_generate(tiny_llama):
    """The compiled step (symbolic batch) run on the front slots' views after a shrink: still HF generate's tokens."""
    av = make_av(tiny_llama)
    v = vectors(9, tiny_llama.d_model, seed=2)
    av = with_early_eos(av, v, 10)
    eng = engine.Engine(av, engine.EngineConfig(slots=8, max_new_tokens=10, tail_min_slots=2, sync_every=2,
                                                compile=True, attention="reduce"))
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=10) and eng.mode.startswith("compiled"), eng.mode
    assert min(eng.last_sizes) < 8


def test_tail_min_slots_must_be_positive():
    with pytest.raises(NlakitError, match="tail_min_slots"):
        engine.EngineConfig(tail_min_slots=0)


def test_prefix_gemms_in_bf16_stay_close_to_fp32():
    """The reduce path's shared-prefix GEMMs in bf16 (prefix_gemm="model") give the fp32 attention output to bf16
    precision, masks and the one softmax over prefix and row cache included."""
    from nlakit.blocks import _attend_reduce

    class A:  # the three things _attend_reduce reads of an Arch
        n_kv, n_heads, head_dim = 2, 6, 16

        @staticmethod
        def softcap(s):
            return s

    g = torch.Generator().manual_seed(0)
    B, S, L = 5, 9, 7
    q, kc, vc = (torch.randn(*shape, generator=g).bfloat16() for shape in
                 [(B, 6, 1, 16), (B, 2, L, 16), (B, 2, L, 16)])
    kp, vp = (torch.randn(2, S, 16, generator=g).bfloat16() for _ in range(2))
    pmask = torch.rand(B, S, generator=g) > 0.3
    rmask = torch.rand(B, L, generator=g) > 0.3
    rmask[:, 0] = True
    ref = _attend_reduce(A, q, kc, vc, kp, vp, pmask, rmask, 0.25).float()
    got = _attend_reduce(A, q, kc, vc, kp, vp, pmask, rmask, 0.25, prefix_fp32=False).float()
    assert got.shape == ref.shape == (B, 6, 1, 16)
    assert torch.allclose(got, ref, atol=3e-2, rtol=3e-2)
    assert not torch.equal(got, ref)  # the bf16 path is a different computation, not the same one twice


@pytest.mark.parametrize("cap", [None, 5.0])
def test_flex_attention_matches_the_reduce_path(cap):
    """FlexAttention for the row cache, joined to the shared prefix by its log-sum-exp, is the same attention as the
    reduce path's one softmax in fp32: masks on both parts (a sliding window may hide the whole prefix), GQA, softcap."""
    from nlakit.blocks import _attend_flex, _attend_reduce

    class A:  # what the two attention functions read of an Arch
        n_kv, n_heads, head_dim, attn_softcap = 2, 6, 16, cap

        @staticmethod
        def softcap(s):
            return s if cap is None else torch.tanh(s / cap) * cap

    g = torch.Generator().manual_seed(1)
    B, S, L = 5, 9, 7
    q, kc, vc = (torch.randn(*shape, generator=g) for shape in [(B, 6, 1, 16), (B, 2, L, 16), (B, 2, L, 16)])
    kp, vp = (torch.randn(2, S, 16, generator=g) for _ in range(2))
    pmask = torch.rand(B, S, generator=g) > 0.3
    pmask[0] = False  # row 0 sees none of the prefix
    rmask = torch.rand(B, L, generator=g) > 0.3
    rmask[:, 0] = True
    for pm in (pmask, None):
        ref = _attend_reduce(A, q, kc, vc, kp, vp, pm, rmask, 0.25)
        got = _attend_flex(A, q, kc, vc, kp, vp, pm, rmask, 0.25)
        assert got.shape == ref.shape == (B, 6, 1, 16)
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_unknown_attention_is_one_clear_error():
    with pytest.raises(NlakitError, match="attention='sdpa' is not one of auto, reduce, matmul, flex"):
        engine.EngineConfig(attention="sdpa")


def test_unknown_prefix_gemm_is_one_clear_error():
    with pytest.raises(NlakitError, match="prefix_gemm='fp16' is not float32 or model"):
        engine.EngineConfig(prefix_gemm="fp16")


def test_hf_engine_is_generate_ids(tiny_llama):
    av = make_av(tiny_llama)
    v = vectors(3, tiny_llama.d_model)
    assert engine.generate(av, v, max_new_tokens=6, engine="hf") == av.generate_ids(v, max_new_tokens=6)


def test_injected_rows_match_verbalizer_injection(tiny_any):
    av = make_av(tiny_any, scale=3.5)
    v = vectors(4, tiny_any.d_model)
    eng = engine.Engine(av, engine.EngineConfig(slots=2, max_new_tokens=4))
    assert torch.equal(eng.injected(v), av.prompt_embeds(v)[:, av.slot])


@pytest.mark.parametrize("fuse", [False, True])
def test_in_place_weight_updates_are_picked_up(tiny_gemma, fuse):
    target = copy.copy(tiny_gemma)
    target.model = copy.deepcopy(tiny_gemma.model)
    av = make_av(target)
    v = vectors(5, target.d_model, seed=2)
    eng = engine.Engine(av, engine.EngineConfig(slots=4, max_new_tokens=10, fuse=fuse))
    assert (eng.fused is not None) == fuse
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=10)
    with torch.no_grad():  # what an optimizer step does: same tensors, new values
        for p in target.model.model.layers[0].parameters():
            p.mul_(1.7)
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=10)


def test_lora_wrapped_av_matches_hf_generate(lively):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(lively.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False))  # random A and B: the adapter changes the output
    meta = make_av(lively).meta
    av = Verbalizer(model, lively.tokenizer, meta)
    v = vectors(6, lively.d_model, seed=3)
    eng = engine.Engine(av, engine.EngineConfig(slots=4, max_new_tokens=12, fuse=True))
    assert eng.fused is None  # LoRA projections keep their own forward
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=12)


# ---- sampling ------------------------------------------------------------------------------------------------
def test_sampling_is_reproducible_and_batch_invariant(tiny_gemma):
    av = make_av(tiny_gemma)
    v = vectors(6, tiny_gemma.d_model)
    a = engine.generate(av, v, max_new_tokens=12, temperature=1.0, seed=5, batch_size=4)
    b = engine.generate(av, v, max_new_tokens=12, temperature=1.0, seed=5, batch_size=3)
    c = engine.generate(av, v, max_new_tokens=12, temperature=1.0, seed=6, batch_size=4)
    assert a == b and a != c
    vocab = av.model.config.vocab_size
    assert all(0 <= t < vocab for r in a for t in r if t != -1)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampler_follows_softmax(temperature):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).expand(40000, -1)
    key = torch.arange(40000)
    draws = engine.sample(logits, torch.tensor(temperature), key, torch.zeros_like(key))
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert torch.allclose(freq, torch.softmax(logits[0] / temperature, -1), atol=0.01)
    again = engine.sample(logits, torch.tensor(temperature), key, torch.ones_like(key))  # next counter: new draws
    assert not torch.equal(draws, again)


def test_uniform_is_in_the_open_unit_interval():
    u = engine.uniform(torch.arange(100000) % 997, torch.arange(100000) // 997)
    assert u.min() > 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.01
    assert u.unique().numel() > 99000
    assert engine.row_key(0, 1) != engine.row_key(1, 0) and 0 <= engine.row_key(-3, 10**9) < 2**31


# ---- errors -------------------------------------------------------------------------------------------------
def test_user_errors(tiny_llama):
    av = make_av(tiny_llama)
    v = vectors(2, tiny_llama.d_model)
    with pytest.raises(NlakitError, match="unknown engine"):
        engine.generate(av, v, engine="vllm")
    with pytest.raises(NlakitError, match="max_new_tokens"):
        engine.generate(av, v, max_new_tokens=0)
    with pytest.raises(NlakitError, match="batch size"):
        engine.generate(av, v, batch_size=0)
    with pytest.raises(NlakitError, match="shape"):
        engine.generate(av, torch.randn(2, 7))
    eng = engine.Engine(av, engine.EngineConfig(slots=2, max_new_tokens=3))
    with pytest.raises(NlakitError, match="greedy"):
        eng.run(v, temperature=1.0)


def test_moved_weights_are_detected(tiny_llama):
    target = copy.copy(tiny_llama)
    target.model = copy.deepcopy(tiny_llama.model)
    av = make_av(target)
    v = vectors(2, target.d_model)
    eng = engine.Engine(av, engine.EngineConfig(slots=2, max_new_tokens=3))
    eng.run(v)
    target.model.to(torch.float64)
    with pytest.raises(NlakitError, match="moved or replaced"):
        eng.run(v)
    target.model.to(torch.float32)
    assert engine.generate(av, v, max_new_tokens=3) == av.generate_ids(v, max_new_tokens=3)  # the cache rebuilds


def test_unsupported_architecture_falls_back_to_hf(tiny_llama):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_llama.tokenizer
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    meta = new_meta_for(tok, d_model=32, layer=1, injection_scale=4.0, base_checkpoint="gpt2")
    av = Verbalizer(model, tok, meta)
    v = vectors(2, 32)
    assert not engine.supports(model)
    assert engine.generate(av, v, max_new_tokens=4) == av.generate_ids(v, max_new_tokens=4)
    with pytest.raises(NlakitError, match="does not support"):
        engine.generate(av, v, max_new_tokens=4, engine="fast")


# ---- layer-L forwards ---------------------------------------------------------------------------------------
def _rows(target, docs):
    return [target.tokenizer.encode(d, add_special_tokens=True) for d in docs]


@pytest.mark.parametrize("fuse", [False, True])
def test_extract_rows_matches_hf_forward(tiny_any, docs, fuse):
    from nlakit.activations import run_to_layer

    rows = _rows(tiny_any, docs[:6])
    assert max(map(len, rows)) > 32  # longer than the tiny Gemma's sliding window
    got = engine.extract_rows(tiny_any.model, rows, layer=2, max_batch_tokens=200, fuse=fuse)
    enc = tiny_any.encode(docs[:6])
    ref = run_to_layer(tiny_any.model, tiny_any.decoder_layers, 2, enc.input_ids, enc.attention_mask)
    for i, r in enumerate(rows):
        assert got[i].shape == (len(r), tiny_any.d_model)
        torch.testing.assert_close(got[i], ref[i, : len(r)], atol=1e-4, rtol=1e-4)


def test_ar_score_rows_matches_reconstruct(tiny_any):
    from nlakit.reconstructor import Reconstructor

    meta = make_av(tiny_any).meta
    ar = Reconstructor.from_target(tiny_any, meta)
    expl = ["The text is about a cat.", "A fox jumps over the lazy dog, quickly, again and again and again.", "x"]
    got = engine.ar_score_rows(ar, engine.ar_rows(ar, expl), max_batch_tokens=40)
    torch.testing.assert_close(got, ar.reconstruct(expl), atol=1e-4, rtol=1e-4)


def test_sorted_batches_cover_every_row_within_budget():
    lengths = [5, 80, 3, 40, 40, 7, 120, 1]
    batches = engine.sorted_batches(lengths, max_batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= 100


# ---- nlakit bench --------------------------------------------------------------------------------------------
def test_bench_cli_on_cpu(tmp_path, docs):
    from nlakit.cli import app

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "engine.json"
    args = ["bench", "--target", "tiny:llama", "--device", "cpu", "--batch-sizes", "2,3", "--max-new-tokens", "4",
            "--n-batches", "2", "--extract-tokens", "400", "--ar-tokens", "300", "--hf-extract-tokens", "100",
            "--corpus", str(corpus), "--repeats", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exception is None, result.output
    res = json.loads(out.read_text())
    assert {"command", "gpu", "rows", "extract_tok_s", "ar_tok_s"} <= set(res) and res["command"].startswith("nlakit bench")
    assert [r["batch"] for r in res["rows"]] == [2, 3]
    for r in res["rows"]:
        assert r["hf_tok_s"] > 0 and r["engine_tok_s"] > 0 and math.isclose(r["ratio"], r["engine_tok_s"] / r["hf_tok_s"])
        assert r["greedy_match_rate"] == 1.0  # fp32 on CPU: token-identical
        # every figure is the median of --repeats timed runs, each run kept; the engine says how many steps it took
        assert len(r["hf_s_runs"]) == len(r["engine_s_runs"]) == 2 and min(r["engine_s_runs"]) <= r["engine_s"]
        assert r["engine_steps"] >= r["mean_new_tokens"] and "engine_outside_steps_ms" in r
    assert res["extract_tok_s"] > 0 and res["ar_tok_s"] > 0 and res["sampling"]["reproducible"]
    assert [s["batch"] for s in res["sampling_rows"]] == [3, 2] and all(s["reproducible"] for s in res["sampling_rows"])
    assert res["sampling_rows"][1]["same_as_largest_batch_rate"] == 1.0  # fp32: the same seed reads the same at any batch
    assert "AV generation" in result.output and str(out) in result.output.replace("\n", "")


def test_bench_config_round_trip_and_errors():
    from nlakit.engine_bench import BenchConfig
    from nlakit.cli import app

    cfg = BenchConfig(batch_sizes=(2, 4), max_new_tokens=8)
    assert BenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(NlakitError, match="batch sizes"):
        BenchConfig(batch_sizes=(0,))
    with pytest.raises(NlakitError, match="--repeats"):
        BenchConfig(repeats=0)
    result = CliRunner().invoke(app, ["bench", "--batch-sizes", "a,b"])
    assert isinstance(result.exception, NlakitError) and "batch-sizes" in str(result.exception)
    result = CliRunner().invoke(app, ["bench", "--compile", "maybe"])
    assert isinstance(result.exception, NlakitError) and "auto, on or off" in str(result.exception)


def test_profile_forward_reports_wall_and_kernel_time(lively):
    """The forward profile (extraction / AR scoring in `nlakit bench`) gives the unprofiled wall time beside the kernel
    time; on the CPU there are no device kernels, so kernel time is 0 and no kernel-time throughput is claimed."""
    from nlakit.engine_profile import profile_forward

    rows = [[1, 2, 3, 4], [5, 6]]
    calls = []
    p = profile_forward(lambda: calls.append(list(engine.hidden_batches(lively.model, rows, 1))), "cpu", 6)
    assert len(calls) == 3  # one call before profiling (a compile would happen there), one profiled, one timed
    assert p["tokens"] == 6 and p["wall_ms"] > 0
    assert p["device_ms"] == 0 and p["device_tok_s"] is None and p["groups_ms"] == {} and p["top"] == []


_TRITON_SCRIPT = r'''
import os, sys
os.environ["TRITON_INTERPRET"] = "1"  # before nlakit.kernels is imported: its kernel runs on the CPU
import torch
from nlakit import engine
from nlakit.blocks import _attend_reduce
from nlakit.kernels import decode_attention
from nlakit.targets import tiny_target
from nlakit.verbalizer import Verbalizer, new_meta_for

# the kernel against the reduce path's fp32 attention: masks on both parts, the whole prefix hidden, GQA, softcap
for cap in (None, 5.0):
    class A:
        n_kv, n_heads, head_dim, attn_softcap = 2, 6, 16, cap

        @staticmethod
        def softcap(s):
            return s if cap is None else torch.tanh(s / cap) * cap

    g = torch.Generator().manual_seed(1)
    B, S, L = 5, 9, 70  # several of the kernel's key blocks, the last partly masked
    q, kc, vc = (torch.randn(*shape, generator=g) for shape in [(B, 6, 1, 16), (B, 2, L, 16), (B, 2, L, 16)])
    kp, vp = (torch.randn(2, S, 16, generator=g) for _ in range(2))
    pmask = torch.rand(B, S, generator=g) > 0.3
    pmask[0] = False
    rmask = torch.rand(B, L, generator=g) > 0.3
    rmask[:, 0] = True
    t = torch.randint(0, L, (B,), generator=g)
    t[0], t[1] = L - 1, 0  # one row sees its whole cache, one only its new key
    rmask[torch.arange(B), t] = True  # a row always sees its own new key and no later one (the engine's masks)
    rmask &= torch.arange(L)[None] <= t[:, None]
    k_new, v_new = (torch.randn(B, 2, 1, 16, generator=g) for _ in range(2))
    for rows, pm in ((torch.arange(B), pmask), (torch.arange(B), None), (torch.randperm(B, generator=g), pmask)):
        kc_ref, vc_ref = kc.clone(), vc.clone()
        kc_ref[rows, :, t], vc_ref[rows, :, t] = k_new[:, :, 0], v_new[:, :, 0]
        ref = _attend_reduce(A, q, kc_ref[rows], vc_ref[rows], kp, vp, pm, rmask, 0.25)  # batch row b: cache rows[b]
        kc_op, vc_op = kc.clone(), vc.clone()
        got = decode_attention(q, k_new, v_new, kc_op, vc_op, kp, vp, rmask if pm is None else pm, rmask, rows, t,
                               0.25, float(cap or 0.0), pm is not None)
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (cap, pm is None)
        assert torch.equal(kc_op, kc_ref) and torch.equal(vc_op, vc_ref)  # the op wrote the new key and value

# the engine with the kernel: greedy text token-identical to HF generate (Llama; Gemma-3 has sliding windows)
for arch in ("llama", "gemma3"):
    t = tiny_target(arch)
    if arch == "llama":
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in t.model.parameters():
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    meta = new_meta_for(t.tokenizer, d_model=t.d_model, layer=1, injection_scale=8.0, base_checkpoint="tiny")
    av = Verbalizer(t.model, t.tokenizer, meta)
    v = torch.randn(5, t.d_model, generator=torch.Generator().manual_seed(1))
    want = av.generate_ids(v, max_new_tokens=10)
    eng = engine.Engine(av, engine.EngineConfig(slots=3, max_new_tokens=10, attention="triton"))
    assert eng.run(v) == want, arch
    if arch == "llama":  # compiled: the op's in-place cache writes survive functionalisation
        eng = engine.Engine(av, engine.EngineConfig(slots=3, max_new_tokens=10, attention="triton", compile=True))
        assert eng.run(v) == want and eng.mode.startswith("compiled"), eng.mode
print("ok")
'''


def test_triton_decode_attention_matches_reduce_and_hf_generate(tmp_path):
    """`nlakit.kernels.decode_attention` (the engine's attention="triton"), run by Triton's interpreter on the CPU in
    a fresh process (the interpreter is chosen when the kernel is defined): the reduce path's fp32 attention to 1e-5,
    and an engine using it writes HF generate's greedy tokens."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    script = tmp_path / "triton_check.py"
    script.write_text(_TRITON_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_grouped_heads_attention_equals_repeated_heads(tiny_llama):
    """`causal_attention(gqa=True)` (SDPA's enable_gqa, what extraction uses under flash on CUDA) is the same
    attention as repeating the K/V heads first."""
    a = engine.Arch(tiny_llama.model)
    if a.n_heads == a.n_kv:
        pytest.skip("the tiny model has no grouped heads")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, a.n_heads, 7, a.head_dim, generator=g)
    k, v = (torch.randn(2, a.n_kv, 7, a.head_dim, generator=g) for _ in range(2))
    ref = a.causal_attention(q, k, v, 0.3, None)
    assert torch.allclose(a.causal_attention(q, k, v, 0.3, None, gqa=True), ref, atol=1e-6)


def test_attention_kernel_benchmark_cpu_smoke(tmp_path):
    """benchmarks/attention_kernel.py on the CPU (Triton's interpreter, a tiny shape): every launch setting gives the
    reduce path's attention, and the JSON and its table come out (the timing itself needs a CUDA GPU)."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ak.json"
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "attention_kernel.py"), "--device", "cpu",
                          "--shape", "3,6,2,16,9,70", "--settings", "32,1,1;64,4,3", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [(r["BLOCK_N"], r["num_warps"]) for r in res["rows"]] == [(32, 1), (64, 4)]
    assert all(r["max_abs_diff_vs_reduce"] < 1e-5 and "us" not in r for r in res["rows"])
    assert "| BLOCK_N | warps |" in run.stdout
    table = subprocess.run([sys.executable, str(root / "benchmarks" / "attention_kernel.py"), "--markdown", str(out)],
                           capture_output=True, text=True, timeout=120)  # the table again, from the JSON alone
    assert table.returncode == 0 and "| BLOCK_N | warps |" in table.stdout and "| 32 | 1 | 1 |" in table.stdout


def test_auto_attention_falls_back_when_the_triton_kernel_cannot_run(lively, monkeypatch):
    """Uncompiled, "auto" picking the Triton kernel where it cannot launch (here: CPU tensors outside the
    interpreter) falls back to matmul attention at warm-up and still writes HF generate's greedy tokens."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET"):
        pytest.skip("under the interpreter the kernel runs on the CPU")
    monkeypatch.setattr(engine.Engine, "_attention", lambda self, compiled: "triton")
    av = make_av(lively)
    v = vectors(4, lively.d_model, seed=2)
    eng = engine.Engine(av, engine.EngineConfig(slots=2, max_new_tokens=8))
    assert eng.run(v) == av.generate_ids(v, max_new_tokens=8)
    assert eng._attn == "matmul" and eng.mode == "eager"
