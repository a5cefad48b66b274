"""Keep libraries' log lines off the user's terminal: clipsearch reports problems itself.

open_clip logs errors and warnings on the root logger while it loads a model, and
onnxruntime.quantization advises there too ("consider pre-processing"); both would be
noise beside clipsearch's own one-line errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(previous)
