"""What ships inside the package so that clipsearch works offline on a fresh install.

    NAME/                 a model trained by this project, as an ONNX model directory
                          (``clipsearch.model.onnx_format``), named by the spec ``bundled:NAME``
    cifar10-samples.parquet
                          CIFAR-10 test images the bundled models never saw, with their labels
                          (columns ``image``: PNG bytes, ``label_name``, ``test_row``)

How each file was made, and what the models score, is in README.md beside this file;
``train/bundle.py`` makes them again.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent
SAMPLES = BUNDLED_DIR / "cifar10-samples.parquet"
DEMO_MODEL = "bundled:cifar10-small"


def model_names() -> list[str]:
    """The names ``bundled:NAME`` accepts: the model directories shipped here."""
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "clipsearch_onnx.json").is_file())


def model_dir(name: str) -> Path:
    return BUNDLED_DIR / name
