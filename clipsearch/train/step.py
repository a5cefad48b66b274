"""One contrastive step's forward and backward over the global batch.

With ``accum`` micro-batches the loss is still the one over the full global batch: features
of all micro-batches are first computed without gradient; then each micro-batch is computed
again with gradient and its loss taken against the cached features of the others (as
open_clip's gradient accumulation). Summing those backward passes gives the full batch's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from clipsearch.train.dist import gather, gather_with_grad
from clipsearch.train.loss import contrastive_loss

Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


def forward(model: Any, images: torch.Tensor, texts: torch.Tensor, autocast: Callable) -> Features:
    """Normalized image and text features, exp(logit_scale) and the logit bias (or None).

    Each distinct caption is encoded once: class-prompt batches repeat a few dozen captions
    hundreds of times, and the text tower (a pretrained language model above all) would
    otherwise cost as much as the image tower. Indexing back carries the gradient to all.
    """
    unique, inverse = torch.unique(texts, dim=0, return_inverse=True)
    with autocast():
        out = model(images, unique)
    text_features = out["text_features"][inverse]
    return out["image_features"], text_features, out["logit_scale"], out.get("logit_bias")


def contrastive_step(
    model: Any,
    module: torch.nn.Module,
    batch: dict[str, Any],
    *,
    accum: int,
    kind: str,
    use_keys: bool,
    world: int,
    autocast: Callable[[], AbstractContextManager],
    backward: Callable[[torch.Tensor], None],
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Forward and backward this rank's share of one global batch; return the loss.

    ``model`` is what to call with gradient (the DDP wrapper, or ``module`` itself);
    gradients are left in ``.grad`` for the optimizer.
    """
    images, texts = batch["images"], batch["texts"]
    keys = gather(batch["keys"], world) if use_keys else None
    if accum == 1:
        img, txt, scale, bias = forward(model, images, texts, autocast)
        loss = contrastive_loss(
            kind,
            gather_with_grad(img, world),
            gather_with_grad(txt, world),
            scale,
            bias,
            keys,
            smoothing,
        )
        backward(loss)
        return loss.detach()

    micro_images, micro_texts = images.chunk(accum), texts.chunk(accum)
    if len(micro_images) != accum or len({len(m) for m in micro_images}) != 1:
        raise ValueError(f"the per-rank batch of {len(images)} does not split into {accum}")
    rng_states, cached_img, cached_txt = [], [], []
    with torch.no_grad(), _batchnorm_stats_kept(module):
        for mi, mt in zip(micro_images, micro_texts, strict=True):
            rng_states.append(_rng_state())  # so the recompute draws the same dropout
            img, txt, _, _ = forward(module, mi, mt, autocast)
            cached_img.append(img)
            cached_txt.append(txt)
    all_img = _by_rank_and_micro(gather(torch.cat(cached_img), world), world, accum)
    all_txt = _by_rank_and_micro(gather(torch.cat(cached_txt), world), world, accum)

    for j, (mi, mt) in enumerate(zip(micro_images, micro_texts, strict=True)):
        last = j == accum - 1
        _set_rng_state(rng_states[j])
        # DDP reduces gradients once, after the last micro-batch's backward.
        sync = nullcontext() if last or model is module else model.no_sync()
        with sync:
            img, txt, scale, bias = forward(model, mi, mt, autocast)
            if not last:  # logit_scale's gradient is taken once, not once per micro-batch
                scale = scale.detach()
                bias = bias.detach() if bias is not None else None
            full_img = _splice(all_img, j, gather_with_grad(img, world))
            full_txt = _splice(all_txt, j, gather_with_grad(txt, world))
            loss = contrastive_loss(kind, full_img, full_txt, scale, bias, keys, smoothing)
            backward(loss)
    return loss.detach()


def _by_rank_and_micro(features: torch.Tensor, world: int, accum: int) -> torch.Tensor:
    return features.view(world, accum, -1, features.shape[-1])


def _splice(cached: torch.Tensor, j: int, live: torch.Tensor) -> torch.Tensor:
    """The global batch in rank-major, micro-batch-minor order (the order of the data),
    with micro-batch ``j`` of every rank taken from ``live`` (which carries gradient)."""
    world, accum = cached.shape[:2]
    live = live.view(world, -1, live.shape[-1])
    parts = [live[r] if a == j else cached[r, a] for r in range(world) for a in range(accum)]
    return torch.cat(parts, dim=0)


@contextmanager
def _batchnorm_stats_kept(module: torch.nn.Module) -> Iterator[None]:
    """The caching pass must not update BatchNorm running statistics: the recompute will."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in bn.named_buffers(recurse=False)} for bn in bns]
    try:
        yield
    finally:
        for bn, buffers in zip(bns, saved, strict=True):
            for name, value in buffers.items():
                getattr(bn, name).copy_(value)


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])
