"""JPEG thumbnails made on demand and cached on disk (``INDEX/thumbnails/``), size-bounded.

A cache file is named ``<id>-<size>-<version>.jpg``; the version changes with the file's
content (``files.version_of``), so a file changed in place never gets a stale thumbnail.
A hit touches the file's mtime; when the folder grows past its bound the least recently
used files go first, down to 90 % of the bound. Writes are atomic (rename), so several
servers may share the folder.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from clipsearch.base import access
from clipsearch.base.images import DEFAULT_MAX_PIXELS, DecodeError, load_image
from clipsearch.server.errors import ApiError
from clipsearch.server.files import fd_path, open_indexed, version_of

logger = logging.getLogger("clipsearch.server")
JPEG_QUALITY = 85
SUFFIX = ".jpg"
_KEEP_AFTER_EVICTION = 0.9


class ThumbnailCache:
    def __init__(
        self, directory: Path, max_bytes: int, follow_symlinks: bool = False, makers: int = 2
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.follow_symlinks = follow_symlinks
        self._lock = threading.Lock()
        self._private = False  # the folder made owner-only (on the first write)
        self._total: int | None = None  # bytes in the folder, counted on first write
        # Decoding full-size photos is the costly part: at most this many at once.
        self._makers = threading.BoundedSemaphore(makers)

    def get(self, row: dict[str, Any], size: int) -> tuple[bytes, str]:
        """(JPEG bytes, version) of the thumbnail of a catalog row, at most ``size`` px."""
        version = version_of(row)
        target = self.directory / f"{int(row['id'])}-{size}-{version}{SUFFIX}"
        try:
            data = target.read_bytes()
            if data:
                os.utime(target)  # recently used: evicted last
                return data, version
        except OSError:
            pass
        with self._makers:
            data = self._make(row, size)
        self._store(target, data)
        return data, version

    def _make(self, row: dict[str, Any], size: int) -> bytes:
        indexed = open_indexed(row, self.follow_symlinks)
        try:
            # Decode through the verified descriptor: no second lookup of the path by name.
            source = fd_path(indexed.file) or indexed.path
            image, _ = load_image(source, min_side=size, max_pixels=DEFAULT_MAX_PIXELS)
        except DecodeError as exc:
            message = f"cannot make a thumbnail of image {row['id']}: {exc.reason}"
            raise ApiError(422, message) from None
        finally:
            indexed.file.close()
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return buffer.getvalue()

    def _store(self, target: Path, data: bytes) -> None:
        try:
            if not self._private:  # the owner's alone, even if made by an older clipsearch
                access.make_dir(self.directory, owner_only=True)
                os.chmod(self.directory, access.OWNER_DIR)
                self._private = True
            # A cache, not durable (no fsync per thumbnail, unlike base.durable): one that a
            # power cut left empty is made again (``get``).
            tmp = self.directory / f".{uuid.uuid4().hex}.tmp"
            access.write_owner_only(tmp, data)
            os.replace(tmp, target)
        except OSError as exc:  # a read-only index still serves, uncached
            logger.warning("cannot cache thumbnail %s: %s", target.name, exc)
            return
        self._forget_old_versions(target)
        with self._lock:
            if self._total is None:
                self._total = self.size_on_disk()
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._total = self._evict()

    def _forget_old_versions(self, target: Path) -> None:
        row_id, size, _ = target.name.split("-", 2)
        for old in self.directory.glob(f"{row_id}-{size}-*{SUFFIX}"):
            if old != target:
                old.unlink(missing_ok=True)

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((info.st_mtime, info.st_size, Path(entry.path)))
        return found

    def size_on_disk(self) -> int:
        try:
            return sum(size for _, size, _ in self._entries())
        except FileNotFoundError:
            return 0

    def _evict(self) -> int:
        """Delete least recently used thumbnails until the folder is below its bound."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        keep = self.max_bytes * _KEEP_AFTER_EVICTION
        for _, size, path in entries:
            if total <= keep:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total
