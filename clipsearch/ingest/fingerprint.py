"""A picture of each image small enough to keep in the catalog: 8 x 8 grey levels of the
upright image (64 bytes), made while indexing from the image already decoded.

Copies of one photo (re-encoded, resized, cropped by a few percent, in another format,
stored rotated with an EXIF tag) differ from it by a few grey levels; different photos,
even of one subject that a model embeds alike, by tens. `clipsearch duplicates` asks both:
embeddings close enough, and pictures this close (calibration: benchmarks/RESULTS.md,
"Duplicates").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SIDE = 8
SIZE = SIDE * SIDE  # bytes
# Root-mean-square difference in grey levels (0-255) up to which two pictures show one photo:
# re-encoded, resized, rotated copies measured within 9, 5% crops mostly within 15, the
# closest different photos 17 apart (benchmarks/RESULTS.md, "Duplicates").
MAX_DIFFERENCE = 14.0


def of_image(image: Image.Image) -> bytes:
    """The fingerprint of a decoded, upright image."""
    from PIL import Image

    return image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX).tobytes()


def differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference, in grey levels, of the fingerprints in each row of two
    (n, SIZE) uint8 arrays."""
    return np.sqrt(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2, axis=-1))


def difference(a: bytes, b: bytes) -> float:
    """Root-mean-square difference of two fingerprints, in grey levels."""
    return float(differences(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)))


def alike(a: bytes, b: bytes) -> bool:
    """Whether two fingerprints show one photo."""
    return difference(a, b) <= MAX_DIFFERENCE
