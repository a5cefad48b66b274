"""The one owner of how index directories change: durable writes, snapshot commits, the
clean-up of replaced files, and one writer at a time.

Image indexes and text collections both go through it (see indexes/README.md, "The commit
protocol"): every file is written under a temporary name, fsynced, renamed, and its folder
fsynced (``publish``); the manifest is written the same way, last (``commit_snapshot``); the
files the snapshot before named and the new one does not are retired, not deleted, and
``remove_unreferenced`` deletes them once RETIRED_GRACE_SECONDS have passed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from clipsearch.errors import ClipsearchError

LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
# How long a file dropped by a commit stays on disk for readers of the snapshot before: far
# longer than one query or one command takes. A reader that holds a snapshot longer (a
# server) rereads the manifest when a file is gone, and carries on with the new snapshot.
RETIRED_GRACE_SECONDS = 600


class SnapshotManifest(Protocol):
    """What the commit protocol needs of a manifest (image indexes and text collections)."""

    retired: dict[str, str]  # file → when a commit dropped it (ISO 8601 UTC)
    updated_at: str

    def files(self) -> set[str]:
        """The files this snapshot reads, relative to its directory."""
        ...

    def to_json(self) -> dict[str, Any]: ...


def commit_snapshot(
    directory: Path, manifest: SnapshotManifest, previous: SnapshotManifest | None
) -> None:
    """Atomically make ``manifest`` the current snapshot (durable once this returns).

    The files ``previous`` named and ``manifest`` does not are retired, not deleted: a
    reader that opened ``previous`` a moment ago still finds them.
    """
    now = datetime.now(timezone.utc)
    manifest.updated_at = now.isoformat(timespec="seconds")
    manifest.retired = _still_retired(previous, manifest, now)
    write_json_atomic(directory / MANIFEST_NAME, manifest.to_json())


def kept_files(manifest: SnapshotManifest | None) -> set[str]:
    """What clean-up must leave: the snapshot's files and those still in their grace."""
    return manifest.files() | set(manifest.retired) if manifest else set()


def remove_unreferenced(
    directory: Path, manifest: SnapshotManifest | None, candidates: Iterable[str]
) -> None:
    """Delete the ``candidates`` (files a writer makes, relative to ``directory``) that
    neither the committed snapshot nor a recently replaced one names: left by a writer that
    died before its commit, or retired longer than the grace period."""
    kept = kept_files(manifest)
    for name in candidates:
        if name not in kept:
            (directory / name).unlink(missing_ok=True)


def _still_retired(
    previous: SnapshotManifest | None, new: SnapshotManifest, now: datetime
) -> dict[str, str]:
    if previous is None:
        return {}
    live = new.files()
    kept = {
        name: at
        for name, at in previous.retired.items()
        if name not in live
        and (now - datetime.fromisoformat(at)).total_seconds() < RETIRED_GRACE_SECONDS
    }
    stamp = now.isoformat(timespec="seconds")
    return {**kept, **{name: stamp for name in previous.files() - live}}


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a fully written temporary file to ``path``, durably: its bytes reach the disk
    before the rename, and the rename before this returns. Every file of an index or a text
    collection is written this way, the manifest last, so a power cut can never leave a
    manifest that names a file the disk does not hold."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def publishing(tmp: str | os.PathLike, path: str | os.PathLike) -> Iterator[Path]:
    """Write ``tmp`` in the block; then it replaces ``path`` (``publish``). If the writing or
    the publishing fails (a full disk), ``tmp`` is removed: nothing half-written is left."""
    try:
        yield Path(tmp)
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


@contextmanager
def writer_lock(directory: Path, what: str = "index") -> Iterator[None]:
    """One writer per directory: a second one fails at once instead of racing."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise ClipsearchError(f"cannot write in {directory}: {write_failure(exc)}") from None
    with lock:
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
            # Who holds it, for the refusal above: only a note, which a full disk may refuse
            # (written unbuffered, so closing the file does not try again). The lock itself
            # is the kernel's: it goes when this process and every process it forked have
            # exited (decode workers die with their parent), so a killed writer never locks
            # an index out.
            os.ftruncate(lock.fileno(), 0)
            with contextlib.suppress(OSError):
                os.write(lock.fileno(), f"{os.getpid()}\n".encode())
            yield
        finally:
            os.ftruncate(lock.fileno(), 0)
            fcntl.flock(lock, fcntl.LOCK_UN)
