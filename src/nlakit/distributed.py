"""Data parallel over the processes torchrun starts: one process per GPU (or CPU worker), one model copy each.

    torchrun --standalone --nproc-per-node 4 -m nlakit train all --config configs/smollm2-l20.yaml --out runs/x

`init()` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and starts
torch.distributed's process group: NCCL when CUDA is available (each process on GPU LOCAL_RANK, NVLink multicast
kept off unless the environment says otherwise), gloo on CPU. Without those variables, or with WORLD_SIZE=1, no
process group starts and every helper here is the identity, so one process runs exactly as it always did.

How the work is split and merged (docs/DISTRIBUTED.md):
- `shard` gives this rank a contiguous share of a work list and `deal` every world-th item. Both hand out whole
  batches, so every batch has the composition it has in one process and its results are bit-identical;
- `gather` brings every rank's part to rank 0 through per-rank files (large results: activations, pairs), and
  `all_gather` brings small objects to every rank in memory (explanations, rollout statistics);
- `data_parallel` wraps a module in DistributedDataParallel; `all_reduce_grads` sums gradients by hand where a
  step accumulates over a varying number of micro-batches (RL);
- `any_rank` makes a stop decision (the time budget) collective, so no rank waits forever in a collective.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from nlakit.errors import NlakitError

log = logging.getLogger(__name__)

T = TypeVar("T")

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# NVLink multicast (NVLS) off: nlakit's collectives are small, and NVLS is unsupported or unstable on some hosts
NCCL_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(required: bool = False) -> int:
    """Start the process group when torchrun launched several processes; returns the world size (1: nothing started).

    Args:
        required: the user asked for a distributed run (``--distributed``): refuse to run as one process.
    """
    if dist.is_initialized():
        return dist.get_world_size()
    if not launched():
        if required:
            raise NlakitError("--distributed needs the several processes torchrun starts, but WORLD_SIZE is not set above 1",
                              "launch it as `torchrun --nproc-per-node N -m nlakit ...`, or drop --distributed")
        return 1
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise NlakitError(f"WORLD_SIZE is set but {', '.join(missing)} are not", "launch through torchrun, which sets them all")
    if torch.cuda.is_available():
        for key, value in NCCL_DEFAULTS.items():
            os.environ.setdefault(key, value)
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" now means this process's GPU
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    log.info("rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and logs."""
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's contiguous share of `items` (sizes differ by at most one); the shares in rank order are `items`."""
    n, w, r = len(items), world(), rank()
    lo = r * (n // w) + min(r, n % w)
    return items[lo : lo + n // w + (r < n % w)]


def deal(items: Sequence[T]) -> Sequence[T]:
    """Every world-th item from this rank's: balanced shares of a list sorted by cost (length-sorted batches)."""
    return items[rank() :: world()]


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def total(value: float) -> float:
    """The sum of `value` over ranks."""
    if world() == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.item()


def batch_mean(local_mean: float, n_local: int, n_total: int) -> float:
    """The mean over a whole batch from each rank's mean over its `n_local` of the batch's `n_total` items."""
    return local_mean if world() == 1 else total(local_mean * n_local) / n_total


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (a stop decision all ranks take together)."""
    return total(float(flag)) > 0 if world() > 1 else flag


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place (on its own device for NCCL, through the CPU for gloo)."""
    if world() == 1:
        return tensor
    t = tensor.to(_device())
    dist.all_reduce(t)
    if t is not tensor:
        tensor.copy_(t)
    return tensor


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` over ranks (one flat all-reduce; a parameter with no gradient counts as zeros)."""
    if world() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    all_reduce_(flat)
    k = 0
    for p in params:
        p.grad.copy_(flat[k : k + p.numel()].view_as(p))
        k += p.numel()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (small, picklable), in rank order, on every rank."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def gather(part: Any, directory: str | Path, name: str) -> list[Any] | None:
    """Every rank's `part`, in rank order, on rank 0 (None on the others), through per-rank files.

    Each rank writes ``directory/.name.rankR-of-W.pt`` atomically; after a barrier rank 0 reads them all and removes
    them. The caller merges the parts and writes its output on rank 0, then calls `barrier` so no rank reads it early.
    """
    if world() == 1:
        return [part]
    from nlakit.io import atomic_path

    directory = Path(directory)
    paths = [directory / f".{name}.rank{r}-of-{world()}.pt" for r in range(world())]
    with atomic_path(paths[rank()]) as tmp:
        torch.save(part, tmp)
    barrier()
    if not is_main():
        return None
    parts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]  # our own files, just written
    for p in paths:
        p.unlink()
    return parts


def data_parallel(module: torch.nn.Module) -> torch.nn.Module:
    """`module` under DistributedDataParallel (gradients averaged over ranks in backward); `module` itself alone."""
    if world() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[torch.cuda.current_device()] if dist.get_backend() == "nccl" else None)


def require_shares(sizes: dict[str, int]) -> None:
    """Every rank needs at least one item of each split batch: one NlakitError naming every setting that is too small."""
    small = {name: n for name, n in sizes.items() if n < world()}
    if small:
        raise NlakitError(f"{', '.join(f'{k} = {v}' for k, v in small.items())} is smaller than the {world()} processes "
                          "sharing each batch", f"set {' and '.join(small)} to at least {world()}, or start fewer processes")


def loss_weight(n_local: int, n_total: int) -> float:
    """Factor on a rank's mean loss over `n_local` of a batch's `n_total` items, so that DDP's average of the ranks'
    gradients is the gradient of the mean over the whole batch (exact for uneven shares)."""
    return n_local * world() / n_total
