"""Defaults and where they come from: flags beat environment variables beat built-ins.

No heavy imports here: the CLI's help and ``clipsearch info`` read this module.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_SPEC = "ViT-B-32:laion2b_s34b_b79k"
MODEL_ENV = "CLIPSEARCH_MODEL"
INDEX_ENV = "CLIPSEARCH_INDEX"
ENGINE_ENV = "CLIPSEARCH_ENGINE"
ENGINES = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
CACHE_ENV = "CLIPSEARCH_CACHE"
WARM_ENV = "CLIPSEARCH_WARM"
DEFAULT_WARM_SECONDS = 300
INDEXES_DIR = "indexes"
# Cosine similarity of two images' embeddings from which `clipsearch duplicates` compares
# their fingerprints: calibrated in benchmarks/RESULTS.md ("Duplicates").
DEFAULT_DUPLICATE_THRESHOLD = 0.90
DEFAULT_INDEX_NAME = "default"
# Images with more pixels are refused when indexing (decompression bombs); a server takes
# a lower bound for uploads from whoever reaches it (server.config.DEFAULT_MAX_UPLOAD_PIXELS).
DEFAULT_MAX_PIXELS = 100_000_000


def let_decoders_share_cores() -> None:
    """Make idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE).

    Between its operations the model's threads otherwise spin, holding the cores that the
    decode workers need: on 2 cores indexing ran 6% faster with this and the model alone 1%
    slower (benchmarks/RESULTS.md). OpenMP reads the variable when torch (or faiss) loads it,
    so call this before those imports; a value the user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def default_model_spec() -> str:
    """The model used when none is named: $CLIPSEARCH_MODEL, else the built-in."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL_SPEC


def cache_root() -> Path:
    """Where clipsearch keeps what it can rebuild (ONNX exports): $CLIPSEARCH_CACHE, else
    $XDG_CACHE_HOME/clipsearch, else ~/.cache/clipsearch."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clipsearch"


def resolve_index_dir(name_or_path: str | None = None) -> Path:
    """Map an index name or path to a directory.

    None → $CLIPSEARCH_INDEX, else ``indexes/default`` under the current directory;
    a bare name (no path separator) → ``indexes/NAME``; anything else is a path.
    """
    value = name_or_path or os.environ.get(INDEX_ENV)
    if not value:
        return Path.cwd() / INDEXES_DIR / DEFAULT_INDEX_NAME
    if "/" in value or os.sep in value or value in (".", "..") or value.startswith("~"):
        return Path(value).expanduser().absolute()
    return Path.cwd() / INDEXES_DIR / value
