"""Collectives of the training step: gather features from every rank, in rank order.

With one process these return their input, so the step reads the same either way.
Every rank contributes the same number of rows (batches are split evenly).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own rows, summed over
    all ranks' losses (an all_reduce, which gloo supports, unlike reduce_scatter)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, world: int) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        return _all_gather(tensor, world)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None


def gather_with_grad(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated; the gradient of the whole flows back to each
    rank's own part, so negatives from other ranks train this rank too."""
    if world == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, world)


def gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated, without gradient."""
    if world == 1:
        return tensor
    with torch.no_grad():
        return _all_gather(tensor, world)


def _all_gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
