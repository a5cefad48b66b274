"""The one owner of how index directories change: durable writes, snapshot commits, the
clean-up of replaced files, and one writer at a time.

Image indexes and text collections both go through it (see indexes/README.md, "The commit
protocol"): every file is written under a temporary name, fsynced, renamed, and its folder
fsynced (``publish``); a writer writes the new files of the snapshot it is making under
``pending/`` (``new_file_path``), out of the folders a reader may glob; the manifest is
written the same way, last (``commit_snapshot``). Before the manifest's rename, the commit
moves the new files from ``pending/`` into place and retires, not deletes, the files the
snapshot before named and the new one does not: moved into ``retired/`` (keeping their
relative path), so that the folders hold exactly what the committed manifest names at
every moment. ``remove_unreferenced`` deletes what a writer that died before its commit
left in ``pending/``, and retired files once RETIRED_GRACE_SECONDS have passed. Readers
find a file a manifest names with ``snapshot_path``, wherever it is now.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from clipsearch.base import access
from clipsearch.base.durable import fsync_dir, read_json_object, write_failure, write_json_atomic
from clipsearch.errors import ClipsearchError
from clipsearch.store.layout import LOCK_NAME, MANIFEST_NAME, PENDING_DIR, RETIRED_DIR

# How long a file dropped by a commit stays on disk for readers of the snapshot before: far
# longer than one query or one command takes. A reader that holds a snapshot longer (a
# server) rereads the manifest when a file is gone, and carries on with the new snapshot.
RETIRED_GRACE_SECONDS = 600


class SnapshotManifest(Protocol):
    """What the commit protocol needs of a manifest (image indexes and text collections)."""

    retired: dict[str, str]  # file → when a commit dropped it (ISO 8601 UTC)
    snapshot: int  # one more with every commit
    updated_at: str

    def files(self) -> set[str]:
        """The files this snapshot reads, relative to its directory."""
        ...

    def to_json(self) -> dict[str, Any]: ...


def commit_snapshot(
    directory: Path, manifest: SnapshotManifest, previous: SnapshotManifest | None
) -> None:
    """Atomically make ``manifest`` the current snapshot (durable once this returns).

    Before the manifest's rename, the files ``manifest`` names that wait in ``pending/``
    (``new_file_path``) are moved into place, and the files ``previous`` named and
    ``manifest`` does not are retired, not deleted: moved into ``retired/`` (a glob of
    ``catalog/`` is the new catalog from the instant it is committed, and never before),
    where a reader that opened ``previous`` a moment ago still finds them (``snapshot_path``).
    """
    now = datetime.now(timezone.utc)
    manifest.updated_at = now.isoformat(timespec="seconds")
    manifest.retired = _still_retired(previous, manifest, now)
    arriving = _waiting_in(directory, PENDING_DIR, manifest.files())
    try:
        # What the new snapshot reads must be in place (its new files, and any a commit that
        # died after its moves left in retired/), and what it does not read out of the way:
        # the files of the snapshot before, and those an older clipsearch retired in place.
        restore_live_files(directory, manifest)
        _move(directory, kept_files(previous) - manifest.files(), directory / RETIRED_DIR)
        write_json_atomic(directory / MANIFEST_NAME, manifest.to_json())
    except BaseException:
        # A commit that failed (a full disk) leaves the snapshot before as it was: its files
        # back in their folders and the new ones back in pending/, unless the new manifest
        # did get in place.
        with contextlib.suppress(OSError, ClipsearchError):
            committed = read_json_object(directory / MANIFEST_NAME)
            if committed is None or committed.get("snapshot") != manifest.snapshot:
                _move(directory, arriving, directory / PENDING_DIR)
                restore_live_files(directory, previous)
        raise


def new_file_path(directory: Path, name: str) -> Path:
    """Where a writer writes a new file of the snapshot it is making, the file that
    snapshot's manifest names ``name`` (relative to ``directory``): ``pending/NAME``, out of
    the folders a reader may glob, until ``commit_snapshot`` moves it to ``NAME``. Its
    folder is made here, with the index folder's read permissions (``access``)."""
    path = directory / PENDING_DIR / name
    access.make_dir(path.parent)
    return path


def snapshot_path(directory: Path, name: str) -> Path:
    """Where the file a manifest names (``name``, relative to ``directory``) is now: in its
    folder; in ``retired/`` once a commit replaced it (or moved it, then died before its
    manifest); or, before its commit, in ``pending/`` (a writer reading its own new files).
    A file in none is given at its place, for the reader's FileNotFoundError (it then
    rereads the manifest)."""
    live = directory / name
    if live.exists():
        return live
    for holder in (RETIRED_DIR, PENDING_DIR):
        waiting = directory / holder / name
        if waiting.exists():
            return waiting
    return live


def kept_files(manifest: SnapshotManifest | None) -> set[str]:
    """What clean-up must leave: the snapshot's files and those still in their grace."""
    return manifest.files() | set(manifest.retired) if manifest else set()


def restore_live_files(directory: Path, manifest: SnapshotManifest | None) -> None:
    """Move the files ``manifest`` names that are not in place into their folders: from
    ``pending/`` (new files, as its commit does) and from ``retired/`` (a writer moved them
    there, then died before its new manifest replaced this one)."""
    if manifest is None:
        return
    for holder in (PENDING_DIR, RETIRED_DIR):
        stranded = _waiting_in(directory, holder, manifest.files())
        _move(directory / holder, stranded, directory)


def remove_unreferenced(
    directory: Path, manifest: SnapshotManifest | None, candidates: Iterable[str]
) -> None:
    """Bring ``directory`` in line with the committed ``manifest``: its files in place
    (``restore_live_files``); what is left in ``pending/`` deleted, and the ``candidates``
    (files a writer makes, relative to ``directory``) that it does not name (both left by a
    writer that died before its commit), or moved to ``retired/`` if still in their grace
    (retired in place by an older clipsearch); and the files in ``retired/`` whose grace has
    passed deleted. A writer calls it before it writes anything and after its commit, never
    between: its own new files wait in ``pending/`` meanwhile."""
    restore_live_files(directory, manifest)
    shutil.rmtree(directory / PENDING_DIR, ignore_errors=True)
    live = manifest.files() if manifest else set()
    waiting = set(manifest.retired) - live if manifest else set()
    candidates = set(candidates) - live
    _move(directory, candidates & waiting, directory / RETIRED_DIR)
    for name in candidates - waiting:
        (directory / name).unlink(missing_ok=True)
    _remove_expired(directory / RETIRED_DIR, waiting)


def _waiting_in(directory: Path, holder: str, names: Iterable[str]) -> set[str]:
    """Those of ``names`` not in their place under ``directory`` but under ``holder``
    (``pending/`` or ``retired/``)."""
    return {
        name
        for name in names
        if not (directory / name).exists() and (directory / holder / name).exists()
    }


def _move(source: Path, names: Iterable[str], target: Path) -> None:
    """Move each of ``names`` (relative paths) from under ``source`` to the same place
    under ``target``, durably: every folder involved is fsynced before this returns (a
    commit renames its manifest only after). A name already gone is skipped."""
    touched: set[Path] = set()
    for name in sorted(names):
        origin, destination = source / name, target / name
        if not origin.exists():
            continue  # moved already, by a commit that died before its manifest
        touched |= {made.parent for made in access.make_dir(destination.parent)}
        os.replace(origin, destination)
        touched |= {origin.parent, destination.parent}
    for folder in sorted(touched):
        fsync_dir(folder)


def _remove_expired(retired: Path, waiting: set[str]) -> None:
    """Delete the files under ``retired`` that are not ``waiting`` (still in their grace):
    their grace has passed, or no manifest names them any more."""
    if not retired.is_dir():
        return
    for folder, _, files in os.walk(retired):  # symbolic links to folders are not followed
        for file in files:
            path = Path(folder, file)
            if path.relative_to(retired).as_posix() not in waiting:
                path.unlink(missing_ok=True)


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


@contextmanager
def writer_lock(directory: Path, what: str = "index") -> Iterator[None]:
    """One writer per directory: a second one fails at once instead of racing."""
    try:
        access.make_dir(directory, owner_only=True)
        lock = access.open_owner_only(directory / LOCK_NAME)
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
            # An index from before owner-only files is made so by its first writer.
            with contextlib.suppress(ClipsearchError):  # a damaged one: repair's to read
                access.tighten_unruled(directory, read_json_object(directory / MANIFEST_NAME))
            yield
        finally:
            os.ftruncate(lock.fileno(), 0)
            fcntl.flock(lock, fcntl.LOCK_UN)
