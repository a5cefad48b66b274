"""A small ConvNet image tower for 32-pixel images, registered as timm models.

ImageNet-style towers (ViT patches, ResNet stems) throw most of a 32-px image away in their
first stride-2/4 layers; on CIFAR-10 a plain VGG-like net that keeps full resolution for its
first convolution and halves it three times (the layout of the fast CIFAR-10 baselines) learns
far more per CPU-second. open_clip builds timm towers by name (``timm_model_name`` in an
architecture config), so registering the net with timm makes it an ordinary open_clip
architecture: ``clipsearch-convnet`` names it, checkpoints record it, and the same loading code
serves it everywhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    ]


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """conv, 2x2 max-pool, conv: one halving of resolution."""
    conv, norm, act = _conv_bn(c_in, c_out)
    return nn.Sequential(conv, nn.MaxPool2d(2), norm, act, *_conv_bn(c_out, c_out))


class ConvNet(nn.Module):
    """Stem at full resolution, three pooling stages, global pooling: widths are the stem's and
    each stage's output channels. Exposes the timm classifier interface open_clip relies on."""

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (32, 64, 256, 256),
        num_classes: int = 0,
        global_pool: str = "avg",
        **_ignored: Any,
    ) -> None:
        super().__init__()
        stem, *stages = widths
        layers: list[nn.Module] = _conv_bn(3, stem)
        c_in = stem
        for width in stages:
            layers.append(_stage(c_in, width))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.default_cfg: dict[str, Any] = {"pool_size": None}
        self.pretrained_cfg = self.default_cfg
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes: int = 0, global_pool: str = "avg") -> None:
        if global_pool not in ("avg", "max"):
            raise ValueError(f"ConvNet pools with 'avg' or 'max', not {global_pool!r}")
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # A few convolutions on 32 px: activations are small, there is nothing worth saving.
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def clipsearch_convnet(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return ConvNet((32, 64, 256, 256), **kwargs)


def clipsearch_convnet_small(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return ConvNet((32, 64, 128, 128), **kwargs)


def register_with_timm() -> None:
    """Add the nets to timm's registry (idempotent): open_clip creates towers through it."""
    from timm.models import is_model, register_model

    for fn in (clipsearch_convnet, clipsearch_convnet_small):
        if not is_model(fn.__name__):
            register_model(fn)
