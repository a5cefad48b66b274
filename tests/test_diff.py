"""The scan against the catalog (`clipsearch.ingest.diff`), on real files and a catalog
table as the indexer reads it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from clipsearch.ingest.diff import content_hash, diff
from clipsearch.ingest.scan import FileEntry


def _entry(path: Path) -> FileEntry:
    info = path.stat()
    return FileEntry(str(path), info.st_size, info.st_mtime_ns)


def _catalog(rows: list[tuple[int, Path | str, int, int, str | None]]) -> pa.Table:
    columns = ["id", "path", "size", "mtime_ns", "content_hash"]
    data = [[row[i] for row in rows] for i in range(5)]
    data[1] = [str(p) for p in data[1]]
    types = [pa.int64(), pa.string(), pa.int64(), pa.int64(), pa.string()]
    return pa.table([pa.array(d, t) for d, t in zip(data, types, strict=True)], names=columns)


def _hasher(entry: FileEntry) -> str | None:
    return content_hash(entry.path, entry.size)


def test_every_kind_of_change_in_one_scan(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, data in [("same", b"a" * 10), ("edited", b"b" * 20), ("moved to", b"c" * 30)]:
        (photos / f"{name}.jpg").write_bytes(data)
    (photos / "brand new.jpg").write_bytes(b"d" * 40)
    (photos / "still broken.jpg").write_bytes(b"e" * 5)
    (photos / "fixed.jpg").write_bytes(b"f" * 6)
    same, edited, moved, new, broken, fixed = (
        _entry(photos / f"{n}.jpg")
        for n in ("same", "edited", "moved to", "brand new", "still broken", "fixed")
    )
    moved_hash = content_hash(moved.path, moved.size)
    catalog = _catalog(
        [
            (0, same.path, same.size, same.mtime_ns, "h0"),
            (1, edited.path, edited.size - 1, edited.mtime_ns, "h1"),  # size differs
            (2, photos / "moved from.jpg", moved.size, 1, moved_hash),  # file gone
            (3, photos / "deleted.jpg", 99, 1, "h3"),  # file gone, nothing like it
            (4, tmp_path / "elsewhere" / "other.jpg", 5, 1, "h4"),  # outside the roots
        ]
    )
    errors = [
        {"path": broken.path, "size": broken.size, "mtime_ns": broken.mtime_ns, "reason": "x"},
        {"path": fixed.path, "size": fixed.size + 1, "mtime_ns": 1, "reason": "x"},
        {"path": str(tmp_path / "elsewhere" / "bad.jpg"), "size": 1, "mtime_ns": 1, "reason": "x"},
    ]
    entries = [same, edited, moved, new, broken, fixed]
    changes = diff(entries, catalog, errors, [str(photos)], _hasher)
    assert changes.unchanged == 1
    assert changes.changed == [(edited, 1)]
    assert changes.moved == [(moved, 2)]
    assert changes.removed == [3]  # row 4 lies outside the scanned folder: kept
    assert sorted(e.path for e in changes.new) == sorted([new.path, fixed.path])
    assert [e["path"] for e in changes.known_errors] == [broken.path, errors[2]["path"]]
    assert changes.catalog_changes


def test_a_file_root_an_empty_catalog_and_nothing_scanned(tmp_path):
    photo = tmp_path / "one.jpg"
    photo.write_bytes(b"x")
    entry = _entry(photo)
    empty = _catalog([])
    first = diff([entry], empty, [], [str(photo)], _hasher)
    assert first.new == [entry] and not first.removed and first.unchanged == 0
    catalog = _catalog([(7, photo, entry.size, entry.mtime_ns, "h")])
    again = diff([entry], catalog, [], [str(photo)], _hasher)
    assert again.unchanged == 1 and not again.catalog_changes
    photo.unlink()
    gone = diff([], catalog, [], [str(photo)], _hasher)  # the root itself is the indexed file
    assert gone.removed == [7]
    sibling = diff([], catalog, [], [str(photo) + "2"], _hasher)  # a prefix is not a folder
    assert sibling.removed == [] and not sibling.catalog_changes


def test_changed_files_come_in_scan_order(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(5)]
    for path in paths:
        path.write_bytes(b"z" * 3)
    entries = [_entry(p) for p in paths]
    # The catalog lists them in another order, every one with another mtime.
    rows = [(10 + i, paths[i], 3, e.mtime_ns + 1, "h") for i, e in enumerate(entries)]
    changes = diff(entries, _catalog(rows[::-1]), [], [str(tmp_path)], _hasher)
    assert changes.changed == [(e, 10 + i) for i, e in enumerate(entries)]
