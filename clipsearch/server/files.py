"""Open an indexed image by its catalog row, and nothing else.

Clients name images by id only; the path comes from the catalog, never from a request.
Even so, the file at that path may have been swapped since it was indexed (for a symbolic
link to a private file, say), so before a byte is served:

- the catalog path must be absolute and normalized (no ``..``);
- the last component must not be a symbolic link (``O_NOFOLLOW``), unless the server was
  started with ``follow_symlinks`` (for indexes built following symbolic links);
- the opened file (``fstat``, so no race with a rename) must be a regular file with the
  size and modification time the catalog recorded: the indexed file, unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from clipsearch.server.errors import ApiError

# Pillow format names → MIME types; browsers display the first group (static/app.js knows).
WEB_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "AVIF": "image/avif",
}
OTHER_TYPES = {
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "JPEG2000": "image/jp2",
    "ICO": "image/vnd.microsoft.icon",
    "PPM": "image/x-portable-anymap",
}
FILE_COLUMNS = ("path", "size", "mtime_ns", "content_hash", "format")


@dataclass(frozen=True)
class IndexedFile:
    """An open indexed file, verified to be the one the catalog describes."""

    file: BinaryIO
    path: str
    size: int
    media_type: str
    version: str  # changes whenever the file's content may have changed

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def version_of(row: dict[str, Any]) -> str:
    """A short token for a catalog row's file content: used in ETags and cache keys."""
    key = f"{row.get('content_hash')}:{row.get('size')}:{row.get('mtime_ns')}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def media_type_of(format_name: str | None) -> str:
    name = (format_name or "").upper()
    return WEB_TYPES.get(name) or OTHER_TYPES.get(name) or "application/octet-stream"


def open_indexed(row: dict[str, Any], follow_symlinks: bool = False) -> IndexedFile:
    """Open the file of a catalog row (with ``FILE_COLUMNS``) after the checks above.

    The caller closes ``.file``.
    """
    path = row["path"]
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise ApiError(403, "the catalog names this file by a path that is not normalized")
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    # A FIFO swapped in for the file must not block the worker thread on open().
    flags |= getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ApiError(404, "the indexed file is no longer on disk") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ApiError(
                403,
                "the indexed file is a symbolic link; this server does not follow links "
                "(its follow_symlinks setting)",
            ) from None
        raise ApiError(403, f"cannot open the indexed file: {exc.strerror}") from None
    file = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ApiError(403, "the indexed path is no longer a regular file")
        if info.st_size != row["size"] or info.st_mtime_ns != row["mtime_ns"]:
            raise ApiError(404, "the file changed since it was indexed (re-index to serve it)")
        os.set_blocking(fd, True)
    except BaseException:
        file.close()
        raise
    return IndexedFile(file, path, info.st_size, media_type_of(row.get("format")), version_of(row))


def fd_path(file: BinaryIO) -> str | None:
    """A path that opens the very file behind ``file`` (no second lookup by name)."""
    candidate = f"/dev/fd/{file.fileno()}"
    return candidate if os.path.exists(candidate) else None


def read_chunks(file: BinaryIO, size: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The first ``size`` bytes (the Content-Length sent) in chunks; closes the file at the
    end, or when the client goes away."""
    try:
        while size > 0 and (data := file.read(min(chunk, size))):
            size -= len(data)
            yield data
    finally:
        file.close()
