"""Decode an uploaded query image with the same safe decoder the indexer uses.

The body size is bounded before this runs (``security.BodyLimit``); here each file is
bounded too, and decoded by ``clipsearch.base.images.load_image`` with the server's pixel cap,
so a small file that declares a huge image is refused before its pixels are decoded.
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO

from PIL import Image

from clipsearch.base.images import DecodeError, load_image
from clipsearch.server.errors import ApiError

_COPY_CHUNK = 1 << 20


def decode_upload(
    file: BinaryIO, filename: str | None, max_bytes: int, max_pixels: int, min_side: int
) -> Image.Image:
    """An uploaded file → an upright RGB image; 413 when too large, 400 when unreadable."""
    label = repr(filename) if filename else "the uploaded image"
    # load_image reads a path: spool the upload to a private temporary file.
    with tempfile.NamedTemporaryFile(prefix="clipsearch-upload-") as tmp:
        written = 0
        while chunk := file.read(_COPY_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise ApiError(413, f"{label} is larger than {max_bytes:,} bytes")
            tmp.write(chunk)
        tmp.flush()
        if not written:
            raise ApiError(400, f"{label} is empty")
        try:
            image, _ = load_image(tmp.name, min_side=min_side, max_pixels=max_pixels)
        except DecodeError as exc:
            status = 413 if exc.reason.startswith("too many pixels") else 400
            raise ApiError(status, f"cannot read {label}: {exc.reason}") from None
    return image
