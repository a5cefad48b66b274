"""A small real index for the server's tests: families of coloured PNG files, indexed with
the tiny model (shared by test_serve.py and test_serve_live.py)."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.ingest.scan import ScanOptions

from .conftest import TINY

COLORS = {"red": 0.0, "green": 1 / 3, "blue": 2 / 3}  # hue of each family of test images


def color(family: str, i: int) -> tuple[int, int, int]:
    """A distinct colour per image: the tiny random model tells images apart by colour, and
    near-duplicates would tie within the float16 precision of stored embeddings."""
    hue = (COLORS[family] + (i - 1.5) * 0.06) % 1
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95 - 0.2 * (i % 2))
    return int(255 * red), int(255 * green), int(255 * blue)


def write_image(path: Path, color: tuple[int, int, int], seed: int, width: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 40, (48, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def build(root: Path, index_dir: Path, follow_symlinks: bool = False) -> Path:
    options = IndexOptions(workers=0, scan=ScanOptions(follow_symlinks=follow_symlinks))
    update_index([root], index_dir, TINY, options)
    return index_dir
