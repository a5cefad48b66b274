"""Files written durably: under a temporary name, fsynced, renamed, the folder fsynced.

Every file clipsearch writes that must survive a crash or a full disk goes through
``publishing`` (index files, manifests, model checkpoints, training state, cached
classifiers): a reader sees the old file or the new one, never half of one, and a failed
write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipsearch.base import access
from clipsearch.errors import ClipsearchError


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a fully written temporary file to ``path``, durably: its bytes reach the disk
    before the rename, and the rename before this returns. Every file of an index or a text
    collection is written this way, the manifest last, so a power cut can never leave a
    manifest that names a file the disk does not hold."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def publishing(
    tmp: str | os.PathLike, path: str | os.PathLike, mode: int | None = None
) -> Iterator[Path]:
    """Write ``tmp`` in the block; then it replaces ``path`` (``publish``) with ``mode``, by
    default the read permissions of its folder (``access``: 0600 in an owner-only index,
    whatever the umask). If the writing or the publishing fails (a full disk), ``tmp`` is
    removed: nothing half-written is left."""
    try:
        yield Path(tmp)
        os.chmod(tmp, access.file_mode_for(Path(path).parent) if mode is None else mode)
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON; durable once this returns, never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    # The file closes (the inner context) before publishing puts it in place.
    with publishing(tmp, path), open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)


# What a failed write into an index most likely met, in the words of os.strerror.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)


def write_failure(exc: BaseException) -> str:
    """Why a write failed, in a few words ("No space left on device"): an OSError's reason,
    or the one that Arrow ("[errno 28]") and FAISS bury in a longer message."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = " ".join(reason.split())
    numbered = re.search(r"\[errno (\d+)\]", text)
    if numbered:
        return os.strerror(int(numbered[1]))
    return next((os.strerror(c) for c in _WRITE_ERRNOS if os.strerror(c) in text), text)


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
