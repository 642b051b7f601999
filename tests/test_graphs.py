"""The SFT losses as modules of tensors (what a CUDA graph captures) and StepGraphs' bookkeeping, on the CPU.

The capture itself needs a GPU; here a stand-in for `torch.cuda.make_graphed_callables` checks what StepGraphs does
with a graph that agrees with the eager step, one that does not, one that cannot be captured, and too many shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from nlakit.metrics import mse_nrm
from nlakit.testing import tiny_nla
from nlakit.train.ar_sft import ReadLoss, ar_inputs
from nlakit.train.av_sft import ResponseLoss, new_av, sft_inputs
from nlakit.train.common import add_lora
from nlakit.train.graphs import StepGraphs, causal_mask

EXPLANATIONS = ["a cat", "The text is about a cat. The next word is likely mat.", "x", "Once upon a time there was a girl."]


@pytest.fixture(params=["llama", "gemma3"])
def ar(request, make_nla):
    ar = make_nla(request.param, 1).ar
    ar = type(ar)(add_lora(copy.deepcopy(ar.backbone), 2), ar.tokenizer, ar.meta)  # the fixture's AR stays as it is
    with torch.no_grad():
        for n, p in ar.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return ar


def test_read_loss_without_a_mask_equals_the_masked_forward_at_any_padding(ar):
    gold = torch.randn(len(EXPLANATIONS), ar.meta.d_model, generator=torch.Generator().manual_seed(0))
    ids, mask = ar.encode(EXPLANATIONS)
    assert (mask.sum(1) < mask.shape[1]).any()  # the batch really is padded
    with torch.no_grad():
        masked = mse_nrm(ar(ids, mask).float(), gold)
        for pad_to in (1, 16):
            for force_mask in (False, True):  # no mask (the CPU) and the explicit causal one (the GPU)
                got = ReadLoss(ar, None, per_sample=True, force_mask=force_mask)(*ar_inputs(ar, EXPLANATIONS, gold, 256, pad_to=pad_to))
                torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_response_loss_is_the_same_at_any_padding(tiny_llama, tiny_gemma, arch):
    target = tiny_llama if arch == "llama" else tiny_gemma
    av = new_av(target, tiny_nla(arch, 1, target=target).meta, rank=2)
    v = torch.randn(3, av.meta.d_model)
    responses = [[5, 6, 7, 2], [9, 2], [11, 12, 13, 14, 15, 2]]
    with torch.no_grad():
        base = ResponseLoss(av.model, None)(*sft_inputs(av, v, responses))
        embeds, labels = sft_inputs(av, v, responses, pad_to=16)
        assert labels.shape[1] == 16 and (labels[:, 6:] == -100).all()
        for force_mask in (False, True):  # no mask (the CPU) and the explicit causal one (the GPU)
            torch.testing.assert_close(ResponseLoss(av.model, None, force_mask)(embeds, labels), base, atol=1e-5, rtol=1e-5)


def test_the_explicit_causal_mask_only_where_it_equals_causal_attention(tiny_llama, tiny_gemma):
    cpu = torch.device("cpu")
    assert causal_mask(tiny_llama.model, 8, cpu) is None  # off the GPU: no mask at all
    m = causal_mask(tiny_llama.model, 8, cpu, force=True)
    assert m.shape == (1, 1, 8, 8) and torch.equal(m[0, 0], torch.ones(8, 8, dtype=torch.bool).tril())
    window = tiny_gemma.model.config.sliding_window
    assert causal_mask(tiny_gemma.model, window, cpu, force=True) is not None
    assert causal_mask(tiny_gemma.model, window + 1, cpu, force=True) is None  # past the window they differ


def _steps(monkeypatch, graph_for):
    """StepGraphs over a small linear loss, with make_graphed_callables replaced by `graph_for(module)`."""
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: graph_for(module))

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return (x @ self.w).sum()  # x (n, 3)

    steps = StepGraphs(Loss(), name="test")
    steps.enabled = True  # as on one GPU
    return steps


def test_a_graph_that_agrees_is_kept_one_per_shape_and_trains(monkeypatch):
    calls = []

    def graph_for(module):
        calls.append(module)
        return module  # a faithful "graph": the same computation

    steps = _steps(monkeypatch, graph_for)
    x = torch.arange(6.0).view(2, 3)
    steps(x).backward()
    steps(x + 1).backward()  # same shape: no new capture
    steps(torch.ones(5, 3))  # new shape: captured
    assert len(calls) == 2 and steps.mode == "cuda graphs (2 shapes)"
    torch.testing.assert_close(steps.module.w.grad, (x + x + 1).sum(0))


def test_a_graph_that_disagrees_or_fails_turns_graphs_off_and_the_step_runs_eagerly(monkeypatch):
    class Wrong(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return 2 * self.module(x)

    steps = _steps(monkeypatch, Wrong)
    x = torch.arange(6.0).view(2, 3)
    assert float(steps(x).detach()) == float(x.sum())  # the eager value, not the wrong graph's
    assert not steps.enabled and steps.mode.startswith("eager (captured step differs from the eager one")

    def fail(module):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    steps = _steps(monkeypatch, fail)
    assert float(steps(x).detach()) == float(x.sum())
    assert steps.mode == "eager (RuntimeError: operation not permitted when stream is capturing)"


def test_beyond_max_graphs_new_shapes_run_eagerly(monkeypatch):
    steps = _steps(monkeypatch, lambda module: module)
    steps.max_graphs = 1
    steps(torch.ones(3, 3))
    assert float(steps(torch.ones(4, 3)).detach()) == 12.0 and steps.enabled and steps.mode == "cuda graphs (1 shapes)"
    assert len(steps.graphs) == 1 and len(steps.eager_shapes) == 1


def test_off_the_gpu_it_is_the_eager_module():
    loss = ReadLoss(torch.nn.Linear(2, 2), None)
    steps = StepGraphs(loss)
    assert not steps.enabled and steps.mode == "eager"


def test_the_train_step_benchmark_times_eager_and_graphed_steps_on_the_cpu():
    from conftest import load_benchmark

    bench = load_benchmark("train_step")
    model = bench.make_model("cpu", n_layers=1, frozen_bf16=True)  # bf16 frozen weights only on a GPU
    rows = [bench.time_steps(model, batch=2, length=8, steps=1, device="cpu", mode=mode) for mode in ("eager", "graphs")]
    assert [r["mode"] for r in rows] == ["eager", "graphs"] and rows[1]["graphs"] == "eager"  # no capture off the GPU
    assert all(r["sec_per_step"] > 0 for r in rows)


def test_no_memory_for_another_graph_keeps_the_captured_ones(monkeypatch):
    shapes = []

    def graph_for(module):
        shapes.append(module)
        if len(shapes) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return module

    steps = _steps(monkeypatch, graph_for)
    steps(torch.ones(2, 3))
    assert float(steps(torch.ones(4, 3)).detach()) == 12.0  # eager
    assert steps.enabled and steps.max_graphs == 1 and steps.mode == "cuda graphs (1 shapes)"
    steps(torch.ones(5, 3))  # no further capture is tried
    assert len(shapes) == 2
