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


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a fully written temporary file to ``path``, durably: its bytes reach the disk
    before the rename, and the rename before this returns. Every file of an index or a text
    collection is written this way, the manifest last, so a power cut can never leave a
    manifest that names a file the disk does not hold."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON; durable once this returns, never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
    publish(tmp, path)


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


def fsync_file(path: str | os.PathLike) -> None:
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
            lock.seek(0)
            holder = lock.read().strip()
            raise ClipsearchError(
                f"{what} {directory} is being updated by another clipsearch process"
                + (f" (pid {holder})" if holder.isdigit() else "")
            ) from None
        try:
            # Who holds it, for the refusal above. The lock itself is the kernel's: it goes
            # when this process and every process it forked have exited (decode workers die
            # with their parent), so a killed writer never locks an index out.
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
