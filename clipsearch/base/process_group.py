"""Several processes on one job (torchrun): who am I, and the few collectives we need.

Outside torchrun everything here is a no-op for a single process, so callers never branch
on whether they run distributed, and torch is imported only by a process that joins a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` (never None), on every rank; the others pass None."""
        if self.world == 1:
            assert value is not None
            return value
        import torch.distributed as dist

        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        found: T = box[0]  # what rank 0 put in
        return found

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` on rank 0 (in rank order); an empty list elsewhere."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        boxes: list[Any] = [None] * self.world if self.is_main else []  # filled by torch
        dist.gather_object(value, boxes if self.is_main else None, dst=0)
        return boxes


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job (no process group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def join() -> Group:
    """Join the torchrun job this process belongs to (NCCL on GPUs, gloo on CPUs)."""
    if not launched_by_torchrun():
        return Group()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), local_rank)
