"""Contrastive losses over a batch of N normalized image and text embeddings.

``keys`` (optional, int64 of shape (N,)) marks pairs that are positives of each other: equal
keys (same caption, or same class for class-labelled data) are not pushed apart. Each row's
target is then uniform over its positives instead of one-hot on the diagonal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_targets(keys: torch.Tensor) -> torch.Tensor:
    """(N, N) targets: row i uniform over the j with keys[j] == keys[i] (i itself included)."""
    same = (keys[:, None] == keys[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    keys: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric cross-entropy over ``logit_scale * image @ text.T`` (scale already exp'd).

    ``smoothing`` moves that share of each row's target mass onto all N columns evenly."""
    logits = logit_scale * image @ text.T
    if keys is None:
        target = torch.arange(len(logits), device=logits.device)
    else:
        target = positive_targets(keys)  # symmetric, so it serves both directions
    return (
        F.cross_entropy(logits, target, label_smoothing=smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=smoothing)
    ) / 2


def siglip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP: every pair is a binary positive/negative decision, summed per image."""
    logits = logit_scale * image @ text.T + logit_bias
    if keys is None:
        positive = torch.eye(len(logits), device=logits.device)
    else:
        positive = (keys[:, None] == keys[None, :]).float()
    return -F.logsigmoid((2 * positive - 1) * logits).sum() / len(logits)


def contrastive_loss(
    kind: str,
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None,
    keys: torch.Tensor | None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    # Features may arrive in bf16/fp16 from autocast: the softmax is computed in fp32.
    image, text = image.float(), text.float()
    if kind == "siglip":
        assert logit_bias is not None  # build_model refuses siglip without a logit bias
        return siglip_loss(image, text, logit_scale.float(), logit_bias.float(), keys)
    return clip_loss(image, text, logit_scale.float(), keys, smoothing)
