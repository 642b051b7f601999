"""Shared fixtures: tiny random targets and NLAs (no downloads), a saved tiny bundle, and short texts.

Session-scoped objects are shared by many tests: never train or mutate them in place (deep-copy first).
"""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models run many small ops: on a small, busy CPU extra intra-op threads only add contention
# (a 40x slowdown was measured on 2 shared cores). Override with NLAKIT_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("NLAKIT_TEST_THREADS", "1")))

TEXTS = [
    "The cat sat on the mat. The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a little girl who lived in a village near the forest.",
    "def main(): return x + y  # code comment",
    "I am frustrated, this is impossible! The problem has no solution because the statement is false.",
    "The equation y = x0 * x1 + cos(x0) has two variables. Solve for x.",
]


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module (the scripts are not part of the package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def long_docs(n: int = 12) -> list[str]:
    """Documents of ~40-90 tokens for evaluation tests (recombined from TEXTS, deterministic)."""
    return [" ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 3)) for i in range(n)]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return long_docs()


@pytest.fixture(scope="session")
def tiny_llama():
    from nlakit.targets import tiny_target

    return tiny_target("llama")


@pytest.fixture(scope="session")
def tiny_gemma():
    from nlakit.targets import tiny_target

    return tiny_target("gemma3")


@pytest.fixture(scope="session", params=["llama", "gemma3"])
def tiny_any(request, tiny_llama, tiny_gemma):
    """Each tiny target in turn (Llama-like without BOS, Gemma-3-like with BOS and scaled embeddings)."""
    return tiny_llama if request.param == "llama" else tiny_gemma


@pytest.fixture(scope="session")
def make_nla(tiny_llama, tiny_gemma):
    """Factory: `make_nla(arch="llama", layer=2)` → an untrained tiny NLA over the shared target (cached)."""
    from nlakit.testing import tiny_nla

    cache: dict = {}

    def make(arch: str = "llama", layer: int = 2):
        key = (arch, layer)
        if key not in cache:
            cache[key] = tiny_nla(arch, layer, target=tiny_llama if arch == "llama" else tiny_gemma)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, make_nla):
    """Path of a saved nlakit bundle of the tiny Llama NLA (layer 2); reloads with `load_nla(path)`."""
    path = tmp_path_factory.mktemp("bundle") / "nla"
    make_nla("llama", 2).save(path)
    return path


class GraphLike(torch.nn.Module):
    """What torch.cuda.make_graphed_callables returns, as far as its caller can tell on the CPU: the same values; the
    outputs after the first (or every output of a forward-only pass) in buffers that the next call overwrites, as a
    replay does; every output flagged as requiring grad when the first does (an autograd Function's outputs); and
    inputs whose requires_grad must match the capture's sample."""

    def __init__(self, module, sample):
        super().__init__()
        self.module, self.flags, self.static = module, [t.requires_grad for t in sample], None

    def forward(self, *tensors):
        assert [t.requires_grad for t in tensors] == self.flags, "an input's requires_grad differs from the capture's"
        out = self.module(*tensors)
        outs = out if isinstance(out, tuple) else (out,)
        grad = outs[0].requires_grad
        kept = outs[1:] if grad else outs  # what is handed back in the static buffers
        if self.static is None:
            self.static = [o.detach().clone() for o in kept]
        for buf, o in zip(self.static, kept):
            buf.copy_(o.detach())
        shared = [buf.detach().requires_grad_(grad and buf.is_floating_point()) for buf in self.static]
        res = (outs[0], *shared) if grad else tuple(shared)
        return res if isinstance(out, tuple) else res[0]
