"""The RL stage's parts on a tiny model: the merged decoding copy, response-only log-probs, the clipped update."""

from __future__ import annotations

import copy

import pytest
import torch

from nlakit import engine
from nlakit.testing import tiny_nla
from nlakit.train.av_sft import new_av
from nlakit.train.common import MergedAV
from nlakit.train.rl import RLConfig, Rollout, k3, length_batches, policy_step
from nlakit.verbalizer import Verbalizer


@pytest.fixture()
def lora_av(tiny_llama):
    nla = tiny_nla("llama", 2, target=tiny_llama)
    av = new_av(tiny_llama, nla.meta, rank=2)
    torch.manual_seed(0)
    with torch.no_grad():  # a non-trivial adapter: B starts at zero in PEFT
        for n, p in av.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return av


def test_merged_copy_decodes_like_the_lora_model_and_follows_updates(lora_av):
    v = torch.randn(5, lora_av.meta.d_model, generator=torch.Generator().manual_seed(1))
    merged = MergedAV(lora_av).sync()
    assert not hasattr(merged.verbalizer.model, "peft_config")
    assert engine.generate(merged.verbalizer, v, max_new_tokens=10) == lora_av.generate_ids(v, max_new_tokens=10)
    eng = engine.get_engine(merged.verbalizer, engine.EngineConfig(slots=5, max_new_tokens=10))
    with torch.no_grad():  # an optimiser step changes the adapters in place
        for n, p in lora_av.model.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn_like(p) * 0.2)
    merged.sync()
    assert engine.get_engine(merged.verbalizer, engine.EngineConfig(slots=5, max_new_tokens=10)) is eng  # no rebuild
    assert engine.generate(merged.verbalizer, v, max_new_tokens=10) == lora_av.generate_ids(v, max_new_tokens=10)
    assert engine.mode_of(merged.verbalizer) == "eager"


def test_sft_loss_scores_only_response_tokens_like_a_full_forward(lora_av):
    from nlakit.train.av_sft import ResponseLoss, sft_inputs

    v = torch.randn(3, lora_av.meta.d_model)
    responses = [[5, 6, 7, 2], [9, 2], [11, 12, 13, 14, 15, 2]]
    loss = ResponseLoss(lora_av.model, None)(*sft_inputs(lora_av, v, responses))
    embeds, attn, labels = lora_av.batch(v, responses)
    with torch.no_grad():
        logits = lora_av.model(inputs_embeds=embeds, attention_mask=attn).logits  # every position
    want = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(loss.detach(), want, atol=1e-5)
    loss.backward()  # gradients reach the adapters through the kept positions
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora_av.model.named_parameters() if "lora_A" in n)


def test_token_logprobs_match_a_full_softmax(lora_av):
    v = torch.randn(3, lora_av.meta.d_model)
    responses = [[5, 6, 7, 2], [9, 2], [11, 12, 13, 14, 15, 2]]
    lp, mask = lora_av.token_logprobs(v, responses)
    embeds, attn, labels = lora_av.batch(v, responses)
    with torch.no_grad():
        logits = lora_av.model(inputs_embeds=embeds, attention_mask=attn).logits
    P = len(lora_av.prompt_ids)
    full = torch.log_softmax(logits[:, P - 1 : -1].float(), -1)
    for i, r in enumerate(responses):
        want = full[i, torch.arange(len(r)), torch.tensor(r)]
        assert torch.allclose(lp[i, : len(r)].detach(), want, atol=1e-5)
        assert mask[i].sum() == len(r) and torch.all(lp[i, len(r):] == 0)


def test_length_batches_cover_every_index_once():
    resp = [[0] * n for n in (5, 1, 9, 3, 3, 7, 2)]
    mbs = length_batches(resp, 3)
    assert sorted(i for mb in mbs for i in mb) == list(range(7)) and all(len(mb) <= 3 for mb in mbs)
    lens = [len(resp[i]) for mb in mbs for i in mb]
    assert lens == sorted(lens)


def _rollout(av: Verbalizer, n: int = 4) -> Rollout:
    g = torch.Generator().manual_seed(3)
    responses = [torch.randint(3, 40, (k,), generator=g).tolist() + [2] for k in (3, 5, 2, 4)][:n]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])[:n]
    return Rollout(torch.randn(n, av.meta.d_model, generator=g), responses, ["x"] * n, torch.ones(n, dtype=torch.bool),
                   torch.zeros(n), torch.zeros(n), adv, torch.tensor([float(len(r)) for r in responses]))


def test_first_pass_is_the_on_policy_loss_and_later_passes_clip(lora_av):
    ro = _rollout(lora_av)
    ref = MergedAV(lora_av).verbalizer
    cfg = RLConfig(lr=1e-2, kl_coef=0.0, micro_batch=2)
    # the documented on-policy loss, computed directly: its gradient is what the first pass follows
    params = [p for p in lora_av.model.parameters() if p.requires_grad]
    lp, mask = lora_av.token_logprobs(ro.vectors, ro.responses)
    (-(ro.advantages * (lp.sum(1) / mask.sum(1)))).mean().backward()
    want = torch.cat([p.grad.flatten() for p in params])
    before = [p.detach().clone() for p in params]
    stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=0.0), cfg)
    got = torch.cat([p.grad.flatten() for p in params])  # clipped to norm 1 by the step
    assert torch.allclose(got / got.norm(), want / want.norm(), atol=1e-4) and stats["clip_frac"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, params))  # lr 0: nothing moved
    # several passes with a large step: the ratio leaves the trust region and some tokens are clipped
    timing: dict = {}
    stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=50.0), RLConfig(ppo_epochs=3, micro_batch=2, kl_coef=0.0),
                        timing=timing)
    assert stats["clip_frac"] > 0 and {"ref_sec", "policy_sec"} <= set(timing)
    assert not all(torch.equal(a, b) for a, b in zip(before, params))


def test_the_micro_batch_size_only_splits_the_sum(lora_av):
    """One pass of 4 sequences or four passes of 1: the same gradient, KL and loss (what lets rl.micro_batch be
    chosen for speed alone)."""
    ro = _rollout(lora_av)
    ref = MergedAV(lora_av).verbalizer
    params = [p for p in lora_av.model.parameters() if p.requires_grad]
    got = []
    for mb in (1, 4):
        stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=0.0), RLConfig(kl_coef=0.1, micro_batch=mb))
        got.append((torch.cat([p.grad.flatten() for p in params]), stats))
    (g1, s1), (g4, s4) = got
    assert torch.allclose(g1, g4, atol=1e-6, rtol=1e-4)
    assert abs(s1["kl"] - s4["kl"]) < 1e-6 and abs(s1["loss"] - s4["loss"]) < 1e-6


def test_merged_copy_of_a_full_fine_tune_copies_the_weights(tiny_llama):
    nla = tiny_nla("llama", 2, target=tiny_llama)
    model = copy.deepcopy(tiny_llama.model).requires_grad_(True)  # a full fine-tune trains every weight
    av = Verbalizer(model, tiny_llama.tokenizer, nla.meta)
    merged = MergedAV(av, torch.float64)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    merged.sync()
    assert torch.allclose(merged.verbalizer.model.lm_head.weight, model.lm_head.weight.double())


def test_merged_ar_reads_like_the_lora_ar_and_follows_updates(tiny_llama):
    from nlakit.train.ar_sft import new_ar
    from nlakit.train.common import MergedAR

    nla = tiny_nla("llama", 2, target=tiny_llama)
    ar = new_ar(tiny_llama, nla.meta, rank=2)
    texts = ["a story about a cat", "def main(): return 1", "The next word is likely one of"]
    merged = MergedAR(ar).sync()
    with torch.no_grad():
        for n, p in ar.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
        ar.value_head.weight.add_(0.1)
    assert not torch.allclose(merged.reconstructor.reconstruct(texts), ar.reconstruct(texts), atol=1e-4)
    merged.sync()
    assert torch.allclose(merged.reconstructor.reconstruct(texts), ar.reconstruct(texts), atol=1e-4)


def test_freeze_to_keeps_the_adapters_trainable_in_fp32_on_bf16_activations(lora_av):
    """Frozen weights in bf16, LoRA in fp32; under bf16 autocast the log-probs stay close to the fp32-weight ones and
    the gradient reaches the adapters in fp32."""
    from nlakit.train.common import freeze_to

    v = torch.randn(3, lora_av.meta.d_model, generator=torch.Generator().manual_seed(2))
    responses = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before, mask = lora_av.token_logprobs(v, responses)
    freeze_to(lora_av.model, torch.bfloat16)
    params = dict(lora_av.model.named_parameters())
    assert all(p.dtype == torch.float32 for n, p in params.items() if "lora_" in n)
    assert all(p.dtype == torch.bfloat16 for n, p in params.items() if "lora_" not in n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after, _ = lora_av.token_logprobs(v, responses)
    assert (after - before).abs().max() < 0.1 * before.abs().max() + 0.05
    after.sum().backward()
    grads = [p.grad for n, p in params.items() if "lora_" in n]
    assert all(g is not None and g.dtype == torch.float32 for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_capped_k3_bounds_a_rare_token_and_keeps_gradients_finite():
    """One token 15 nats less likely under the policy than under the reference: uncapped, its k3 term is e^15 and
    its gradient as large; capped, the term is the cap, its gradient zero, and even d = 200 gives no NaN."""
    d = torch.tensor([0.0, 0.3, -0.5, 15.0, 200.0], requires_grad=True)
    plain = k3(d[:4].detach())
    assert torch.allclose(plain, d[:4].detach().exp() - d[:4].detach() - 1) and plain[3] > 1e6
    capped = k3(d, clamp=10.0)
    capped.sum().backward()
    assert torch.allclose(capped[:3], plain[:3]) and capped[3] == 10.0 and capped[4] == 10.0
    assert torch.isfinite(d.grad).all() and d.grad[3] == 0 and d.grad[4] == 0 and d.grad[1] != 0


def test_kl_clamp_changes_only_tokens_above_the_cap(lora_av):
    """With a cap above every token's k3 the step is the uncapped one; with a tiny cap the batch's KL is at most it."""
    ro = _rollout(lora_av)
    ref = MergedAV(lora_av).verbalizer
    params = [p for p in lora_av.model.parameters() if p.requires_grad]
    with torch.no_grad():  # the policy moves away from its reference
        for p in params:
            p.add_(torch.randn_like(p) * 0.3)
    got = {}
    for clamp in (None, 1e6, 1e-6):
        stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=0.0), RLConfig(kl_coef=0.1, kl_clamp=clamp))
        got[clamp] = (torch.cat([p.grad.flatten() for p in params]), stats)
    assert torch.allclose(got[None][0], got[1e6][0]) and abs(got[None][1]["kl"] - got[1e6][1]["kl"]) < 1e-9
    assert got[None][1]["kl"] > 1e-3 and got[1e-6][1]["kl"] <= 1e-6 + 1e-9
    assert not torch.allclose(got[None][0], got[1e-6][0])


def _as_graphs(monkeypatch, *steps):
    """StepGraphs that capture on the CPU (`conftest.GraphLike`), so each call goes through the capture, the check against an
    eager step and the fixed-shape padding, as on one GPU."""
    from conftest import GraphLike

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: GraphLike(module, sample))
    for s in steps:
        s.enabled, s.pad_to = True, 16
    return steps


def test_fixed_shape_passes_give_the_eager_update(lora_av, monkeypatch):
    """rl.cuda_graphs pads every policy and reference batch to micro_batch rows and a fixed length: the same gradient,
    KL and loss as the unpadded eager passes, over two PPO epochs (the second reads the first's log-probs)."""
    from nlakit.train.rl import PassGraphs, PolicyLoss, TokenLogprobs
    from nlakit.train.graphs import StepGraphs

    ro = _rollout(lora_av)
    ref = MergedAV(lora_av).verbalizer
    params = [p for p in lora_av.model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    cfg = RLConfig(kl_coef=0.1, micro_batch=8, ppo_epochs=2, clip=0.2)
    got = []
    for fixed in (False, True):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        graphs = None
        if fixed:
            ref_g, pol_g = _as_graphs(monkeypatch, StepGraphs(TokenLogprobs(ref.model, None)),
                                      StepGraphs(PolicyLoss(lora_av.model, None, cfg)))
            graphs = PassGraphs(ref_g, pol_g, None, length=16)  # 16 > the longest response (6), 8 rows > 4 rollouts
        stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=0.5), cfg, graphs=graphs)
        got.append(([p.detach().clone() for p in params], torch.cat([p.grad.flatten() for p in params]), stats))
        if fixed:
            assert graphs.mode == {"reference": "cuda graphs (1 shapes)", "policy": "cuda graphs (1 shapes)"}
    (w0, g0, s0), (w1, g1, s1) = got
    assert torch.allclose(g0, g1, atol=1e-6, rtol=1e-4) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w0, w1))
    assert s0["kl"] == pytest.approx(s1["kl"], abs=1e-6) and s0["loss"] == pytest.approx(s1["loss"], abs=1e-6)
    assert s0["clip_frac"] == pytest.approx(s1["clip_frac"])


def test_ar_step_padded_to_every_rollout_reads_and_trains_as_the_eager_one(tiny_llama, monkeypatch):
    """The online AR step with a captured graph: the parsed rows padded (zero weight) to all the rollouts' rows and
    the texts to a multiple of 16 tokens; the same rewards, loss and gradients as the eager step on the parsed rows."""
    from nlakit.train.ar_sft import ReadLoss, new_ar
    from nlakit.train.graphs import StepGraphs
    from nlakit.train.rl import ar_step

    nla = tiny_nla("llama", 2, target=tiny_llama)
    ar = new_ar(tiny_llama, nla.meta, 2)
    g = torch.Generator().manual_seed(4)
    texts = ["the cat sat", "a dog ran far away", "x", "numbers 1 2 3 and more"]
    ok = torch.tensor([True, False, True, True])
    ro = Rollout(torch.randn(4, nla.meta.d_model, generator=g), [[2]] * 4, texts, ok, torch.zeros(4), torch.zeros(4),
                 torch.zeros(4), torch.ones(4))
    params = [p for p in ar.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    got = []
    for graphed in (False, True):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        graph = _as_graphs(monkeypatch, StepGraphs(ReadLoss(ar, None, per_sample=True)))[0] if graphed else None
        loss, mse = ar_step(ar, torch.optim.SGD(params, lr=0.0), ro, graph=graph)
        got.append((loss, mse, torch.cat([p.grad.flatten() for p in params])))
    (l0, m0, g0), (l1, m1, g1) = got
    assert l0 == pytest.approx(l1, abs=1e-6) and torch.allclose(m0, m1, atol=1e-6) and m0[1] == 2.0  # unparsed: FAIL_MSE
    assert torch.allclose(g0, g1, atol=1e-6, rtol=1e-4)


def test_pass_graphs_off_the_gpu_are_the_eager_passes(lora_av, tiny_llama):
    from nlakit.train.rl import pass_graphs

    ref = MergedAV(lora_av).verbalizer
    graphs = pass_graphs(lora_av, ref, None, RLConfig(cuda_graphs=True, n_prompts=2, group=2, micro_batch=4))
    assert graphs.length is None and graphs.mode == {"reference": "eager", "policy": "eager"}


def _group_rollout(av: Verbalizer) -> Rollout:
    """Two groups of three rollouts of different lengths (one vector per group)."""
    g = torch.Generator().manual_seed(5)
    responses = [torch.randint(3, 40, (k,), generator=g).tolist() + [2] for k in (3, 5, 2, 4, 1, 6)]
    vectors = torch.randn(2, av.meta.d_model, generator=g).repeat_interleave(3, 0)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.2, -0.2])
    return Rollout(vectors, responses, ["x"] * 6, torch.ones(6, dtype=torch.bool), torch.zeros(6), torch.zeros(6), adv,
                   torch.tensor([float(len(r)) for r in responses]))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_group_packed_behind_one_prompt_reads_each_response_as_its_own_row(lora_av, attention):
    """Verbalizer.group_batch + group_layout: every response gets the log-probs of a row of its own (fp32), with
    SDPA's boolean mask and eager attention's additive one."""
    from nlakit.verbalizer import group_layout, response_logprobs

    av = copy.deepcopy(lora_av)
    av.model.config._attn_implementation = attention
    ro = _group_rollout(av)
    want, _ = av.token_logprobs(ro.vectors, ro.responses)
    embeds, labels = av.group_batch(ro.vectors[::3], ro.responses, length=8)
    assert embeds.shape[:2] == (2, len(av.prompt_ids) + 3 * 8) and labels.shape == (6, 8)
    position_ids, mask, keep = group_layout(av.model, len(av.prompt_ids), 8, 3, "cpu")
    assert mask.dtype == (torch.bool if attention == "sdpa" else torch.float32)
    got = response_logprobs(av.model, embeds, labels, mask, position_ids.expand(2, -1), keep)
    torch.testing.assert_close(got[:, : want.shape[1]], want, atol=1e-5, rtol=1e-5)
    assert (got[:, want.shape[1]:] == 0).all()  # the padding of the fixed length scores nothing


def test_no_packed_layout_where_the_attention_cannot_take_its_mask(lora_av, tiny_gemma):
    from nlakit.verbalizer import group_layout

    av = copy.deepcopy(lora_av)
    av.model.config._attn_implementation = "flash_attention_2"
    assert group_layout(av.model, 10, 8, 4, "cpu") is None
    window = tiny_gemma.model.config.sliding_window  # a 4D mask would drop the window beyond it
    assert group_layout(tiny_gemma.model, window - 8, 8, 4, "cpu") is not None
    assert group_layout(tiny_gemma.model, window - 7, 8, 4, "cpu") is None


@pytest.mark.parametrize("graphed", [False, True])
def test_packed_groups_give_the_update_of_a_row_per_rollout(lora_av, monkeypatch, graphed):
    """rl.pack_groups: the same gradient, KL, loss and clipped fraction as a row per rollout, over two PPO epochs,
    eagerly and through StepGraphs' fixed shapes (padding rows make a whole padding group)."""
    from nlakit.train.graphs import StepGraphs
    from nlakit.train.rl import PassGraphs, PolicyLoss, TokenLogprobs, pass_graphs

    ro = _group_rollout(lora_av)
    ref = MergedAV(lora_av).verbalizer
    params = [p for p in lora_av.model.parameters() if p.requires_grad]
    with torch.no_grad():  # away from the reference, so that the KL term has a gradient
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    start = [p.detach().clone() for p in params]
    got = []
    for pack in (False, True):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        cfg = RLConfig(kl_coef=0.1, micro_batch=9 if graphed else 6, ppo_epochs=2, clip=0.2, group=3, n_prompts=2,
                       pack_groups=pack)
        graphs = None
        if graphed:
            ref_g, pol_g = _as_graphs(monkeypatch, StepGraphs(TokenLogprobs(ref.model, None)),
                                      StepGraphs(PolicyLoss(lora_av.model, None, cfg)))
            graphs = PassGraphs(ref_g, pol_g, None, length=10, group=3 if pack else None)  # 9 rows > 6 rollouts
        elif pack:
            assert pass_graphs(lora_av, ref, None, cfg).layout.startswith("packed groups (3 responses")
        stats = policy_step(lora_av, ref, ro, torch.optim.SGD(params, lr=0.5), cfg, graphs=graphs)
        got.append(([p.detach().clone() for p in params], torch.cat([p.grad.flatten() for p in params]), stats))
    (w0, g0, s0), (w1, g1, s1) = got
    torch.testing.assert_close(g1, g0, atol=1e-6, rtol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w0, w1))
    assert s0["kl"] == pytest.approx(s1["kl"], abs=1e-6) and s0["loss"] == pytest.approx(s1["loss"], abs=1e-6)
    assert s0["clip_frac"] == pytest.approx(s1["clip_frac"]) and s0["kl"] > 0


def test_packing_needs_whole_groups_per_micro_batch(lora_av):
    from nlakit.train.rl import pass_graphs

    ref = MergedAV(lora_av).verbalizer
    graphs = pass_graphs(lora_av, ref, None, RLConfig(group=4, micro_batch=6, pack_groups=True))
    assert graphs.group is None and graphs.layout == "a row per rollout"


def test_the_grpo_pass_benchmark_times_both_layouts_and_compares_their_log_probs(tmp_path, monkeypatch):
    import json
    import sys

    from conftest import load_benchmark

    bench = load_benchmark("grpo_pass")
    out = tmp_path / "grpo_pass.json"
    monkeypatch.setattr(sys, "argv", ["grpo_pass.py", "--device", "cpu", "--layers", "1", "--groups", "2", "--group", "2",
                                      "--prompt", "5", "--length", "6", "--steps", "1", "--out", str(out)])
    bench.main()
    res = json.loads(out.read_text())
    assert [(r["layout"], r["tokens"]) for r in res["rows"]] == [("packed", 2 * (5 + 2 * 6)), ("rows", 4 * (5 + 6))]
    assert res["reference_logprob_abs_diff_eager"]["max"] < 1e-4 and res["packed_over_rows_eager"] > 0
