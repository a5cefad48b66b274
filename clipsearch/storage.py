"""Durable writes for index directories: atomic JSON commits and one writer at a time.

Image indexes and text collections share these, so both commit the same way: write a
temporary file, fsync it, rename it over the old one, fsync the directory.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError

LOCK_NAME = ".lock"


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON; durable once this returns, never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json_object(path: Path, what: str = "manifest") -> dict[str, Any] | None:
    """A committed JSON object, or None when there is none; anything unreadable is an error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise ClipsearchError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ClipsearchError(f"cannot read {what} {path}: not a JSON object")
    return data


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (a crash right after must not undo them)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writer_lock(directory: Path, what: str = "index") -> Iterator[None]:
    """One writer per directory: a second one fails at once instead of racing."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClipsearchError(
                f"{what} {directory} is being updated by another clipsearch process"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
