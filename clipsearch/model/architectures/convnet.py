"""A small ConvNet image tower for 32-pixel images, registered as timm models.

ImageNet-style towers (ViT patches, ResNet stems) throw most of a 32-px image away in their
first stride-2/4 layers; on CIFAR-10 a plain VGG-like net that keeps full resolution for its
first convolution and halves it three times (the layout of the fast CIFAR-10 baselines) learns
far more per CPU-second. open_clip builds timm towers by name (``timm_model_name`` in an
architecture config), so registering the net with timm makes it an ordinary open_clip
architecture: ``clipsearch-convnet`` names it, checkpoints record it, and the same loading code
serves it everywhere.

``clipsearch-convnet-whitened`` adds the three initialisation tricks of the fastest CIFAR-10
trainers (Keller Jordan's airbench, after hlb-CIFAR10): a 2x2 stem convolution that whitens
image patches, its weights computed from training images and never trained (``fit_whitening``;
the trainer calls it before the first step); identity ("dirac") initialisation of the first
filters of every 3x3 convolution, so a fresh net passes its input through; and global max
pooling. Same widths as ``clipsearch-convnet``; the smaller stem makes it ~15% faster.
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


WHITEN_KERNEL = 2
WHITEN_CHANNELS = 2 * 3 * WHITEN_KERNEL**2  # each eigenvector of the patch covariance, and -it


def _whitening_stem() -> list[nn.Module]:
    """A 2x2 convolution (no padding: 32 px -> 31) whose weights ``fit_whitening`` sets."""
    conv = nn.Conv2d(3, WHITEN_CHANNELS, WHITEN_KERNEL, padding=0, bias=True)
    conv.weight.requires_grad_(False)  # fixed by the data; the bias still trains
    assert conv.bias is not None  # bias=True
    nn.init.zeros_(conv.bias)
    return [conv, nn.GELU()]


def _dirac_init(module: nn.Module) -> None:
    """The first c_in filters of each 3x3 convolution start as the identity (the rest keep
    their random init): each stage starts close to passing its input through."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            nn.init.dirac_(conv.weight.data[: conv.in_channels])


class ConvNet(nn.Module):
    """Stem at full resolution, three pooling stages, global pooling: widths are the stem's and
    each stage's output channels (``whiten``: the stem is the whitening convolution, whose
    width is fixed, and the 3x3 convolutions start dirac-initialised). Exposes the timm
    classifier interface open_clip relies on."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 256, 256),
        num_classes: int = 0,
        global_pool: str = "avg",
        whiten: bool = False,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        stem, *stages = widths
        if whiten:
            layers, c_in = _whitening_stem(), WHITEN_CHANNELS
        else:
            layers, c_in = _conv_bn(3, stem), stem
        for width in stages:
            layers.append(_stage(c_in, width))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.whitens = whiten  # the trainer fits the stem to the data (fit_whitening)
        if whiten:
            _dirac_init(self.features)
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

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to whiten 2x2 patches of ``images`` (N, 3, H, W, as preprocessed):
        its filters are the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue),
        and their negatives (the GELU after it would otherwise drop half of each)."""
        if not self.whitens:
            raise ValueError("fit_whitening needs a ConvNet built with whiten=True")
        stem = self.features[0]
        assert isinstance(stem, nn.Conv2d) and stem.bias is not None  # _whitening_stem's
        k = WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
        filters = filters.reshape(-1, 3, k, k).to(stem.weight.dtype)
        stem.weight.copy_(torch.cat([filters, -filters]))
        stem.bias.zero_()


def clipsearch_convnet(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return ConvNet((32, 64, 256, 256), **kwargs)


def clipsearch_convnet_small(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return ConvNet((32, 64, 128, 128), **kwargs)


def clipsearch_convnet_whitened(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return ConvNet((WHITEN_CHANNELS, 64, 256, 256), whiten=True, **kwargs)


def register_with_timm() -> None:
    """Add the nets to timm's registry (idempotent): open_clip creates towers through it."""
    from timm.models import is_model, register_model

    for fn in (clipsearch_convnet, clipsearch_convnet_small, clipsearch_convnet_whitened):
        if not is_model(fn.__name__):
            register_model(fn)
