"""A training step's forward + loss + backward as CUDA graphs, one per padded input shape.

The SFT steps of a 135M model with LoRA on every projection are bound by launching kernels from Python, not by the
GPU (BENCHMARKS §1b: a step of 256 sequences costs ~1.1x a step of 64). `torch.cuda.make_graphed_callables` records
one step's kernels once per input shape and replays them, so a step costs its GPU time. The stages pad their inputs
to a multiple of `GRAPH_PAD` tokens, so that a few shapes cover a stage (one, for the template warm start's lengths).

`StepGraphs(loss_module)(*tensors)` returns the loss as `loss_module(*tensors)` would, differentiable with respect to
the module's trainable parameters (their `.grad` fills on `backward()` as usual). The module may return a tuple whose
first entry is the loss (the rest detached: statistics, per-token values), or a vector (its sum is what is checked);
a module without trainable parameters, called under `torch.no_grad()`, is a forward pass alone (the reference
log-probs of GRPO). One backward per replay between `zero_grad(set_to_none=True)` calls: a parameter's `.grad` may be
the graph's own gradient buffer, which the next replay overwrites. It captures a shape on first use and
checks the captured step against an eager one on the same inputs: a loss or gradient that differs or a capture that
fails (an op that syncs with the host) makes it log one warning and run the stage eagerly from there; no memory for
another graph, or more than `max_graphs` shapes, runs the new shapes eagerly. Off the GPU, under torchrun (DDP) or
with `enabled=False` it is the eager module.
"""

from __future__ import annotations

import logging
import math

import torch

from nlakit.verbalizer import attention_of

log = logging.getLogger(__name__)

GRAPH_PAD = 16  # inputs padded to a multiple of this many tokens when graphs are on: a few shapes per stage


def causal_mask(model: torch.nn.Module, length: int, device: torch.device, force: bool = False) -> torch.Tensor | None:
    """The attention mask a loss module passes for right-padded rows of `length` tokens: None (causal attention
    alone) off the GPU, else an explicit (1, 1, T, T) causal mask. Given a 4D mask, transformers passes it straight
    to attention; given none, it looks for packed sequences in the position ids and, in some versions, reads the
    answer on the host, which a CUDA graph capture cannot do. Only for SDPA attention (a boolean mask) and within a
    sliding window, where the two are the same; None otherwise. `force`: build it on any device (tests)."""
    impl, window = attention_of(model)
    if not (force or device.type == "cuda") or impl != "sdpa" or (window is not None and length > window):
        return None
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


class _Shape(torch.nn.Module):
    """One captured shape: make_graphed_callables replaces this wrapper's forward, never the shared loss module's."""

    def __init__(self, core: torch.nn.Module):
        super().__init__()
        self.core = core

    def forward(self, *tensors):
        return self.core(*tensors)


class StepGraphs:
    def __init__(self, loss_module: torch.nn.Module, *, enabled: bool = True, max_graphs: int = 6, name: str = "step",
                 check_rtol: float = 2e-2):
        from nlakit import distributed

        self.module = loss_module
        self.name = name
        self.max_graphs = max_graphs
        self.check_rtol = check_rtol
        self.graphs: dict[tuple, torch.nn.Module] = {}
        self.eager_shapes: set[tuple] = set()
        self.captured = 0
        self.off_reason: str | None = None
        on_gpu = any(p.is_cuda for p in loss_module.parameters())
        self.enabled = bool(enabled and on_gpu and distributed.world() == 1)
        self.pad_to = GRAPH_PAD if self.enabled else 1  # the stage pads its inputs to this: a few lengths, a graph each

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.module(*tensors)
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        graph = self.graphs.get(key)
        if graph is None and key not in self.eager_shapes:
            graph = self._capture(key, tensors)
        return graph(*tensors) if graph is not None else self.module(*tensors)

    @property
    def mode(self) -> str:
        """What ran: "cuda graphs (N shapes)", "eager (why the capture was turned off)" or "eager"."""
        if self.off_reason is not None:
            return f"eager ({self.off_reason})"
        return f"cuda graphs ({self.captured} shapes)" if self.enabled and self.captured else "eager"

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _capture(self, key: tuple, tensors: tuple[torch.Tensor, ...]) -> torch.nn.Module | None:
        if len(self.graphs) >= self.max_graphs:
            self.eager_shapes.add(key)
            log.warning("%s: shape %s runs eagerly (%d shapes captured already, the most kept)", self.name,
                        [s for s, _ in key], self.max_graphs)
            return None
        params = self._trainable()
        try:
            sample = tuple(t.detach().clone() for t in tensors)
            graph = torch.cuda.make_graphed_callables(_Shape(self.module), sample, num_warmup_iters=3,
                                                      allow_unused_input=True)
            problem = self._compare(graph, sample, params)
        except torch.cuda.OutOfMemoryError:  # keep the graphs there are; new shapes run eagerly
            self.max_graphs = len(self.graphs)
            self.eager_shapes.add(key)
            torch.cuda.empty_cache()
            log.warning("%s: no memory for another CUDA graph; %d shapes kept, new ones run eagerly", self.name, len(self.graphs))
            return None
        except Exception as e:  # noqa: BLE001 - any other failure to capture means: run this stage eagerly
            problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            graph = None
        if problem is not None:
            self.enabled = False
            self.off_reason = problem
            self.graphs.clear()
            torch.cuda.empty_cache()
            log.warning("%s: CUDA graph capture turned off, the stage runs eagerly (%s)", self.name, problem)
            return None
        self.graphs[key] = graph
        self.captured += 1
        log.info("%s: captured a CUDA graph for shape %s", self.name, [s for s, _ in key])
        return graph

    def _compare(self, graph: torch.nn.Module, sample: tuple[torch.Tensor, ...], params: list) -> str | None:
        """None when the captured step gives the eager step's loss and gradients on `sample`, else what differs."""
        def loss_and_grads(fn):
            out = fn(*sample)
            out = out[0] if isinstance(out, tuple) else out
            loss = out if out.dim() == 0 else out.sum()
            if not (params and loss.requires_grad):  # a forward pass alone: its output is what must match
                return loss.detach().float(), out.detach().float().flatten()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads, params)])
            return loss.detach().float(), flat

        want_loss, want = loss_and_grads(self.module)
        got_loss, got = loss_and_grads(graph)
        loss_err = float((got_loss - want_loss).abs() / want_loss.abs().clamp_min(1e-6))
        grad_err = float((got - want).norm() / want.norm().clamp_min(1e-12))
        if not (math.isfinite(loss_err) and math.isfinite(grad_err)) or loss_err > self.check_rtol or grad_err > self.check_rtol:
            return f"captured step differs from the eager one: loss {loss_err:.2e}, gradients (or outputs) {grad_err:.2e} relative"
        return None

    def close(self) -> None:
        """Drop the graphs and their memory (call at the end of the stage): a parameter's `.grad` may be a graph's
        gradient buffer itself, so the gradients go too."""
        if self.graphs:
            for p in self._trainable():
                p.grad = None
        self.graphs.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
