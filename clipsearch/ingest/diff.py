"""Compare a fresh scan with the catalog: what is new, changed, moved, removed or unchanged.

Only files under the scanned roots are compared, so indexing a second folder into the same
index adds to it instead of removing the first folder's images.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipsearch.ingest.scan import FileEntry

_HASH_CHUNK = 1 << 20  # content hash = size + first MiB + last MiB


def content_hash(path: str | os.PathLike, size: int) -> str:
    """A fast fingerprint to recognise a moved file: size plus its first and last MiB."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(_HASH_CHUNK))
        if size > 2 * _HASH_CHUNK:
            f.seek(size - _HASH_CHUNK)
        digest.update(f.read(_HASH_CHUNK))
    return digest.hexdigest()


@dataclass
class Changes:
    new: list[FileEntry] = field(default_factory=list)
    changed: list[tuple[FileEntry, int]] = field(default_factory=list)  # (file, its catalog id)
    moved: list[tuple[FileEntry, int]] = field(default_factory=list)  # (new location, moved id)
    removed: list[int] = field(default_factory=list)  # catalog ids whose file is gone
    unchanged: int = 0
    known_errors: list[dict[str, Any]] = field(default_factory=list)  # still-valid error rows

    @property
    def catalog_changes(self) -> bool:
        return bool(self.new or self.changed or self.moved or self.removed)


def under_roots(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def normalized_roots(paths: Iterable[str | os.PathLike]) -> list[str]:
    return [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]


def diff(
    entries: Sequence[FileEntry],
    catalog_files: list[dict[str, Any]],
    error_rows: list[dict[str, Any]],
    roots: Sequence[str],
    hasher: Callable[[FileEntry], str | None],
) -> Changes:
    """Classify every scanned file and every catalog row under ``roots``.

    catalog_files: rows with id, path, size, mtime_ns, content_hash.
    error_rows: rows with path, size, mtime_ns, reason (files that failed before).
    hasher: content hash of a scanned file, called only for move candidates (None: unreadable).
    """
    changes = Changes()
    by_path = {row["path"]: row for row in catalog_files}
    failed_before = {row["path"]: row for row in error_rows}
    for entry in entries:
        row = by_path.pop(entry.path, None)
        if row is None:
            error = failed_before.get(entry.path)
            if error and (error["size"], error["mtime_ns"]) == (entry.size, entry.mtime_ns):
                changes.known_errors.append(error)
            else:
                changes.new.append(entry)
        elif (row["size"], row["mtime_ns"]) == (entry.size, entry.mtime_ns):
            changes.unchanged += 1
        else:
            changes.changed.append((entry, row["id"]))
    # Rows and errors outside the scanned roots belong to other folders: keep them as they are.
    changes.known_errors += [r for r in error_rows if not under_roots(r["path"], roots)]
    gone = [row for row in by_path.values() if under_roots(row["path"], roots)]
    changes.new, moved_ids = _find_moves(changes, gone, hasher)
    changes.removed = [row["id"] for row in gone if row["id"] not in moved_ids]
    return changes


def _find_moves(
    changes: Changes, gone: list[dict[str, Any]], hasher: Callable[[FileEntry], str | None]
) -> tuple[list[FileEntry], set[int]]:
    """Match new files to vanished rows by size, then content hash; return what stays new."""
    gone_by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in gone:
        gone_by_size[row["size"]].append(row)
    still_new, moved_ids = [], set()
    for entry in changes.new:
        candidates = gone_by_size.get(entry.size)
        digest = hasher(entry) if candidates else None
        match = next((r for r in candidates or () if r["content_hash"] == digest), None)
        if digest is None or match is None:
            still_new.append(entry)
            continue
        candidates.remove(match)
        moved_ids.add(match["id"])
        changes.moved.append((entry, match["id"]))
    return still_new, moved_ids
