"""Where and how a run executes: the device, CPU threads, and torchrun's process group.

One module for what train, eval and batch predict all need:

- `resolve_device`: "auto" → the rank's own GPU (LOCAL_RANK) when torch sees one, else CPU.
- `cpu_threads`: torch's thread count for a block (the scan kernels follow it), restored after.
- `distributed`: joins torchrun's process group for a block (NCCL on CUDA, gloo otherwise), or uses one already
  started, or runs alone; yields a `Ranks` with the rank, world size and the collectives the callers use
  (barrier, all-reduce of a tensor, broadcast of a Python object or of tensors in place, "did any rank ask to
  stop").
- `current_ranks`: the `Ranks` of the process group running now, without starting one; `launched_ranks`: the
  ranks torchrun gave this process, for work that splits itself without a process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mdseg.errors import OptionError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when torch sees a GPU, else CPU; 'cuda' (no index) and 'auto' on CUDA are this process's own
    GPU (under torchrun the rank's, from LOCAL_RANK), so the ranks of a run do not all land on GPU 0.

    Other names ('cpu', 'cuda:1') are taken as given; asking for CUDA without one is an `OptionError`.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {name!r} asked for, but torch sees no CUDA device here; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() % torch.cuda.device_count())
    return device


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with torch using `threads` CPU threads (None: leave torch's choice); yields the count in use.

    The scan kernels follow torch's count (see `mdseg.kernels.scan_cpu`). The previous count is restored after
    the block, so a run inside a longer-lived process (a notebook, the tests) does not change it for later work.
    """
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def local_rank() -> int:
    """This process's index on its node under torchrun (LOCAL_RANK), 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_distributed() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: `rank` of `world` processes (0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world): the shard of a list of work items this process takes (items rank, rank + world, …)."""
        return self.rank, self.world

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for alone)."""
        if self.world > 1:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over all ranks (every rank gets it), on the tensor's own device; `tensor` alone.

        NCCL reduces only CUDA tensors and gloo only CPU ones: the tensor travels on the backend's device.
        """
        if self.world == 1:
            return tensor
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        moved = tensor.to(device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object made by our own code), on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite each tensor, in place, with rank 0's (e.g. a module's buffers); nothing to do alone.

        The tensors must be on the backend's device (CUDA for NCCL, CPU for gloo), as a model's own are.
        """
        if self.world == 1:
            return
        for tensor in tensors:
            dist.broadcast(tensor, src=0)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (e.g. a stop request: all ranks must stop at the same step)."""
        if self.world == 1:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def launched_ranks() -> Ranks:
    """This process's place as torchrun launched it (RANK, WORLD_SIZE), without a process group: for work that
    only needs to split itself (batch predict's shards); `Ranks()` outside torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    return Ranks()


def current_ranks() -> Ranks:
    """The `Ranks` of the process group running now; `Ranks()` (0 of 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


@contextmanager
def distributed(device: torch.device) -> Iterator[Ranks]:
    """Yield this process's `Ranks` for a block of work that may run under torchrun.

    With a process group already started (e.g. by the trainer, or a test's own) it is used as is. Under torchrun
    (WORLD_SIZE > 1) without one, one is started for the block — NCCL when `device` is CUDA (that device becomes
    the current one), gloo otherwise — and ended after it. Otherwise the block runs alone (rank 0 of 1).
    """
    if dist.is_available() and dist.is_initialized():
        yield current_ranks()
    elif launched_distributed():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            yield current_ranks()
        finally:
            dist.destroy_process_group()
    else:
        yield Ranks()


__all__ = [
    "Ranks",
    "cpu_threads",
    "current_ranks",
    "distributed",
    "launched_distributed",
    "launched_ranks",
    "local_rank",
    "resolve_device",
]
