"""Image preprocessing without torch: PIL resize and crop, numpy normalisation.

It reproduces open_clip's eval transform (torchvision Resize on the shorter side, or to a
square for ``squash``, then CenterCrop, ToTensor, Normalize) with the same PIL calls, so the
pixels match open_clip's to float rounding (tests/test_onnx_engine.py measures it on real
photos). Instances are picklable: decode workers run them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image
    from typing_extensions import TypeIs

# PIL's names for them; PIL itself is imported when an image is preprocessed, so a text
# query never imports it (~10 ms).
_INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST"}
RESIZE_MODES = ("shortest", "squash")


def is_pil_image(value: Any) -> TypeIs[Image.Image]:
    """A PIL image? (If PIL was never imported, nothing can be one.)"""
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(value, image_module.Image)


@dataclass(frozen=True)
class PreprocessConfig:
    """open_clip's preprocess_cfg, limited to what this module reproduces."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_open_clip(cls, cfg: dict) -> PreprocessConfig:
        """Check open_clip's settings; ValueError names what is not reproduced here."""
        size = cfg.get("size", 224)
        if isinstance(size, Sequence):
            if len(set(size)) != 1:
                raise ValueError(f"non-square image size {list(size)}")
            size = size[0]
        interpolation = cfg.get("interpolation", "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation {interpolation!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {resize_mode!r}")
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need three channels")
        return cls(int(size), mean, std, interpolation, resize_mode)


class Preprocess:
    """PIL image → float32 (3, size, size) array, normalised."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self._scale = (1.0 / (255.0 * np.asarray(cfg.std, np.float32))).reshape(3, 1, 1)
        self._shift = (np.asarray(cfg.mean, np.float32) / np.asarray(cfg.std, np.float32)).reshape(
            3, 1, 1
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(self.crop(image), dtype=np.float32).transpose(2, 0, 1)
        return pixels * self._scale - self._shift

    def crop(self, image: Image.Image) -> Image.Image:
        """The resized, centre-cropped RGB image (size x size)."""
        from PIL import Image

        size = self.cfg.size
        resample = getattr(Image.Resampling, _INTERPOLATIONS[self.cfg.interpolation])
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        if self.cfg.resize_mode == "squash":
            return image.resize((size, size), resample)
        # torchvision's Resize(int): the shorter side becomes `size`, the longer one is
        # truncated (not rounded); then CenterCrop rounds its offsets half to even.
        if width <= height:
            new_width, new_height = size, int(size * height / width)
        else:
            new_width, new_height = int(size * width / height), size
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), resample)
        left = round((new_width - size) / 2.0)
        top = round((new_height - size) / 2.0)
        return image.crop((left, top, left + size, top + size))
