"""A picture of each image small enough to keep in the catalog: 8 x 8 grey levels of the
upright image (64 bytes), made while indexing from the image already decoded.

Two pictures are compared by their pattern, not their brightness: each less its mean grey,
the difference measured against the larger of their contrasts (standard deviations). Copies
of one photo (re-encoded, resized, cropped by a few percent, in another format, stored
rotated with an EXIF tag) keep the pattern; different photos, even of one subject that a
model embeds alike, do not. In absolute grey levels two different night shots (every level
near black) were as close as a copy. `clipsearch duplicates` asks both: embeddings close
enough, and pictures this close (calibration: benchmarks/RESULTS.md, "Duplicates").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SIDE = 8
SIZE = SIDE * SIDE  # bytes
# Root-mean-square difference of the two patterns, as a share of their contrast, up to which
# two pictures show one photo: 99.6% of copies within it, dim and night shots included, the
# closest two different photos 0.43 apart (benchmarks/RESULTS.md, "Duplicates").
MAX_DIFFERENCE = 0.36
# Contrast, in grey levels, below which a picture counts as this flat: a blank frame's few
# levels of noise are not a pattern to be magnified (night shots measured: median 2.7).
MIN_CONTRAST = 2.0


def of_image(image: Image.Image) -> bytes:
    """The fingerprint of a decoded, upright image."""
    from PIL import Image

    return image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX).tobytes()


def differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far apart the patterns of the fingerprints in each row of two (n, SIZE) uint8
    arrays are: root-mean-square difference of each less its mean, over the larger contrast."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a -= a.mean(axis=-1, keepdims=True)
    b -= b.mean(axis=-1, keepdims=True)
    contrast = np.maximum(np.maximum(a.std(axis=-1), b.std(axis=-1)), MIN_CONTRAST)
    return np.sqrt(np.mean((a - b) ** 2, axis=-1)) / contrast


def difference(a: bytes, b: bytes) -> float:
    """How far apart the patterns of two fingerprints are (see ``differences``)."""
    return float(differences(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)))


def alike(a: bytes, b: bytes) -> bool:
    """Whether two fingerprints show one photo."""
    return difference(a, b) <= MAX_DIFFERENCE
