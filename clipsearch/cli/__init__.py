"""The ``clipsearch`` command line: a thin layer over the Python API.

Each command lives in its own module and imports torch, open_clip or faiss only inside its
function body, so ``clipsearch --help`` stays fast.
"""

from clipsearch.cli.main import app, main

__all__ = ["app", "main"]
