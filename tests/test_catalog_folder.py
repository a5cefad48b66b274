"""The folder is the catalog: a glob of `INDEX/catalog/*.parquet` lists exactly the rows of the
committed snapshot at every moment after a commit (indexes/README.md, "What a reader may rely
on"), while readers of the snapshot before still find its files in `INDEX/retired/`; a
writer's new files wait in `INDEX/pending/` until its commit, also when it is killed before
it; and a writer killed between retiring files and committing its manifest loses nothing.

Real photos, the real tiny model, Parquet, DuckDB and FAISS throughout."""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from clipsearch import Index
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.indexer import IndexOptions, IndexSummary, update_index
from clipsearch.query.snapshot import Snapshot
from clipsearch.store import repair, snapshots, storage
from clipsearch.store.manifest import Manifest, read_manifest

from .conftest import TINY, paused_cli, run_cli

QUERY = np.ones(128, np.float32)  # the tiny model's embedding size


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for seed, name in enumerate(["a.jpg", "b.png", "c.jpg", "trip/d.png", "trip/e.jpg"]):
        _photo(root / name, seed)
    return root


def _index(photos: Path, index_dir: Path) -> IndexSummary:
    return update_index([photos], index_dir, TINY, IndexOptions(workers=0, batch_size=8))


def _change(photos: Path) -> None:
    """Delete one photo, move one, change one in place."""
    (photos / "b.png").unlink()
    shutil.move(photos / "c.jpg", photos / "trip" / "c-moved.jpg")
    _photo(photos / "trip" / "d.png", 99, size=(64, 50))
    os.utime(photos / "trip" / "d.png", ns=(1, 1_000_000_000))


def _folder_paths(index_dir: Path) -> list[str]:
    """The paths a glob of the catalog folder lists, duplicates kept (indexes/README.md's SQL)."""
    glob = str(index_dir / "catalog" / "*.parquet")
    query = f"SELECT path FROM read_parquet('{glob}', union_by_name = true)"
    return sorted(path for (path,) in duckdb.sql(query).fetchall())


def _index_paths(index_dir: Path) -> list[str]:
    """The paths of the rows of the committed snapshot, as clipsearch reads it."""
    return sorted(Index.open(index_dir).snapshot.table(["path"]).column("path").to_pylist())


def _disk_paths(photos: Path) -> list[str]:
    return sorted(str(p) for p in photos.rglob("*") if p.is_file())


def _catalog_files(index_dir: Path) -> set[str]:
    return {f"catalog/{p.name}" for p in (index_dir / "catalog").iterdir()}


def _pending_files(index_dir: Path) -> set[str]:
    """The files waiting in pending/, by the names a manifest gives them."""
    pending = index_dir / "pending"
    return {p.relative_to(pending).as_posix() for p in pending.rglob("*") if p.is_file()}


def _rows(snapshot: Snapshot) -> dict[str, tuple[int, list[float]]]:
    table = snapshot.table(["id", "path", "embedding"]).to_pylist()
    return {row["path"]: (row["id"], row["embedding"]) for row in table}


def test_a_glob_of_the_catalog_folder_is_the_catalog_right_after_a_reindex(photos, tmp_path):
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    assert _folder_paths(index_dir) == _index_paths(index_dir) == _disk_paths(photos)

    _change(photos)
    summary = _index(photos, index_dir)
    assert (summary.changed, summary.moved, summary.removed) == (1, 1, 1)
    # At once, not 10 minutes later: no deleted photo, no moved photo twice.
    assert _folder_paths(index_dir) == _index_paths(index_dir) == _disk_paths(photos)
    manifest = read_manifest(index_dir)
    assert _catalog_files(index_dir) == set(manifest.catalog)
    # What the commit replaced waits for readers of the snapshot before, out of the folder.
    assert manifest.retired
    for name in manifest.retired:
        assert (index_dir / "retired" / name).is_file() and not (index_dir / name).exists()

    # A part an older clipsearch retired in place is moved out by the next writer, which
    # commits nothing here (nothing changed).
    name = next(n for n in manifest.retired if n.startswith("catalog/"))
    os.replace(index_dir / "retired" / name, index_dir / name)
    assert not _index(photos, index_dir).committed
    assert (index_dir / "retired" / name).is_file() and not (index_dir / name).exists()
    assert _folder_paths(index_dir) == _index_paths(index_dir) == _disk_paths(photos)


def test_readers_of_the_snapshot_before_read_it_from_retired(photos, tmp_path):
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    index = Index.open(index_dir)  # holds snapshot 1; reads nothing before the commit
    lazy = Snapshot(index_dir)  # likewise
    busy = Snapshot(index_dir)  # has read its parts already, through DuckDB and by id
    before = _rows(busy)
    every_id = sorted(i for i, _ in before.values())
    assert sorted(busy.matching_ids("id >= 0").tolist()) == every_id
    assert busy.rows([every_id[0]], ["path"])
    old_files = read_manifest(index_dir).files()

    _change(photos)
    _index(photos, index_dir)
    retired = read_manifest(index_dir).retired
    assert old_files & set(retired)  # the files it reads were moved out of their folders

    paths = sorted(before)
    assert str(photos / "b.png") in paths  # deleted since, still in the old snapshot
    for snapshot in (lazy, busy):
        assert _rows(snapshot) == before and snapshot.number == 1
        # DuckDB's view (built before the commit in `busy`) looks again for the parts
        assert sorted(snapshot.matching_ids("id < 1000").tolist()) == every_id
        found = snapshot.rows(every_id, ["path"])
        assert sorted(row["path"] for row in found.values()) == paths
        ids, embeddings = snapshot.embeddings()
        assert sorted(ids.tolist()) == every_id and embeddings.shape == (len(paths), 128)
        assert snapshot.number == 1  # never moved to the newest snapshot
    hits = index.search(QUERY, k=10)
    assert hits.snapshot == 1 and sorted(hit.path for hit in hits) == paths
    assert index.refresh()
    assert sorted(hit.path for hit in index.search(QUERY, k=10)) == _disk_paths(photos)


def test_a_writer_killed_between_its_moves_and_its_manifest_loses_nothing(photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")  # so that errors/ has a file too
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    manifest = read_manifest(index_dir)
    images = _disk_paths(photos)
    images.remove(str(photos / "broken.jpg"))
    assert manifest.errors and _index_paths(index_dir) == images
    before = _rows(Snapshot(index_dir))

    # A commit moves the files of the snapshot it replaces into retired/, then renames its
    # manifest: this one died in between, so the committed manifest names files that sit
    # in retired/.
    for name in manifest.files():
        (index_dir / "retired" / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(index_dir / name, index_dir / "retired" / name)
    assert not _catalog_files(index_dir)

    # Readers still answer from the committed snapshot.
    hits = Index.open(index_dir).search(QUERY, k=10)
    assert hits.snapshot == manifest.snapshot and sorted(hit.path for hit in hits) == images
    assert _rows(Snapshot(index_dir)) == before

    # The next `clipsearch index` puts them back before anything else, and finds nothing
    # to do: nothing was lost.
    result = run_cli("index", str(photos), "--index", str(index_dir))
    assert result.returncode == 0, result.stderr
    assert "0 new, 0 changed, 0 moved, 0 removed, 1 errors" in result.stdout
    assert read_manifest(index_dir).snapshot == manifest.snapshot  # no commit needed
    for name in manifest.files():
        assert (index_dir / name).is_file() and not (index_dir / "retired" / name).exists()
    assert _folder_paths(index_dir) == _index_paths(index_dir) == images
    assert _rows(Snapshot(index_dir)) == before


def test_a_commit_that_fails_puts_the_files_it_moved_back(photos, tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    manifest = read_manifest(index_dir)
    before = _folder_paths(index_dir)
    at_the_rename: list[tuple[set[str], set[str]]] = []

    def full_disk(path: Path, data: dict) -> None:
        at_the_rename.append((_catalog_files(index_dir), set(data["catalog"])))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    _change(photos)
    with monkeypatch.context() as patch:
        patch.setattr(storage, "write_json_atomic", full_disk)  # the manifest's write fails
        with pytest.raises(ClipsearchError, match="No space left on device"):
            _index(photos, index_dir)
    # When the manifest would have been renamed, the folder held exactly what it names.
    [(folder, named)] = at_the_rename
    assert folder == named and not folder & set(manifest.catalog)
    assert read_manifest(index_dir).snapshot == manifest.snapshot
    for name in manifest.files():  # moved to retired/ before the manifest, and back
        assert (index_dir / name).is_file() and not (index_dir / "retired" / name).exists()
    # ...and the parts the failed run wrote, no snapshot's, are gone.
    assert _folder_paths(index_dir) == _index_paths(index_dir) == before
    assert not (index_dir / "pending").exists()
    summary = _index(photos, index_dir)
    assert summary.committed and _catalog_files(index_dir) == set(read_manifest(index_dir).catalog)
    assert _folder_paths(index_dir) == _index_paths(index_dir) == _disk_paths(photos)


def test_a_writer_killed_before_its_commit_shows_nothing_in_the_folders(photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")  # so that errors/ gets a new file too
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    committed = read_manifest(index_dir)
    before = _folder_paths(index_dir)
    _change(photos)  # a part rewritten, rows moved and added
    for seed in range(6):
        _photo(photos / "new" / f"{seed}.jpg", 100 + seed)

    # The real `clipsearch index`, paused when it has written every new file of its
    # snapshot, its manifest unwritten, and killed there.
    options = ["--index", str(index_dir), "--workers", "0", "--checkpoint-every", "2"]
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        writer = paused_cli(
            "clipsearch.store.snapshots:commit_snapshot",
            *["index", str(photos), *options],
            stderr=stderr,
        )
        try:
            if writer.stdout.readline() != "paused\n":
                writer.wait(timeout=60)
                stderr.seek(0)
                pytest.fail(f"the writer stopped before its commit: {stderr.read()[-2000:]}")
            # Its new files are written, and none is where a reader globs.
            assert _catalog_files(index_dir) == set(committed.catalog)
            assert _folder_paths(index_dir) == _index_paths(index_dir) == before
            waiting = _pending_files(index_dir)
            assert {name.split("/")[0] for name in waiting} == {"catalog", "vectors", "errors"}
            assert not waiting & committed.files()
        finally:
            writer.kill()
            writer.communicate()
    assert writer.returncode == -signal.SIGKILL
    assert read_manifest(index_dir).snapshot == committed.snapshot
    assert _catalog_files(index_dir) == set(committed.catalog)
    assert _folder_paths(index_dir) == _index_paths(index_dir) == before

    # The next run deletes the dead writer's files and commits every photo once.
    result = run_cli("index", str(photos), "--index", str(index_dir))
    assert result.returncode == 0, result.stderr
    images = [p for p in _disk_paths(photos) if not p.endswith("broken.jpg")]
    assert _folder_paths(index_dir) == _index_paths(index_dir) == images
    assert _catalog_files(index_dir) == set(read_manifest(index_dir).catalog)
    assert not (index_dir / "pending").exists()


def test_while_a_writer_holds_new_files_the_glob_is_the_committed_catalog(
    photos, tmp_path, monkeypatch
):
    index_dir = tmp_path / "index"
    _index(photos, index_dir)
    new_files: list[set[str]] = []

    def checked(commit):
        """``commit``, first checking the index as it is with every new file written."""

        def check_then_commit(directory: Path, manifest: Manifest, previous: Manifest) -> None:
            new = manifest.files() - previous.files()
            new_files.append(new)
            assert _catalog_files(directory) == set(previous.catalog)
            assert _folder_paths(directory) == _index_paths(directory)
            assert _pending_files(directory) == new
            commit(directory, manifest, previous)
            assert _catalog_files(directory) == set(manifest.catalog)
            assert not _pending_files(directory)

        return check_then_commit

    # Both the indexer and repair commit through store.snapshots.
    monkeypatch.setattr(snapshots, "commit_snapshot", checked(snapshots.commit_snapshot))
    _change(photos)
    _index(photos, index_dir)  # rewrites a part, adds one
    _photo(photos / "f.jpg", 7)
    _index(photos, index_dir)  # adds one more: small parts to compact
    parts = len(read_manifest(index_dir).catalog)
    report = repair.rebuild_index(index_dir)  # merges them into a new part
    assert report.parts_after < parts
    assert len(new_files) == 3
    assert all(any(name.startswith("catalog/") for name in new) for new in new_files)
    assert all(any(name.startswith("vectors/") for name in new) for new in new_files)
    assert not (index_dir / "pending").exists()
    assert _folder_paths(index_dir) == _index_paths(index_dir) == _disk_paths(photos)


def test_a_text_build_killed_before_its_first_commit_is_no_obstacle(tmp_path, tiny_model):
    from clipsearch.texts import TextCollection

    texts = tmp_path / "captions.txt"
    texts.write_text("a red square\na blue circle\n", encoding="utf-8")
    # What a first build killed before its commit leaves: its new files, in pending/ only.
    directory = tmp_path / "caps"
    for name in ("catalog/texts-0123456789ab.parquet", "vectors/index-000001.faiss.tmp"):
        (directory / "pending" / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / "pending" / name).write_bytes(b"half")
    built = TextCollection.build(texts, directory, tiny_model)
    assert len(built) == 2 and not (directory / "pending").exists()
    files = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert files == {".lock", "manifest.json", *built.manifest.files()}

    # A folder of someone's own named pending/ is no collection's: refused, left as it is.
    other = tmp_path / "other"
    (other / "pending").mkdir(parents=True)
    (other / "pending" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ClipsearchError, match="not a text collection and not empty"):
        TextCollection.build(texts, other, tiny_model)
    assert (other / "pending" / "notes.txt").read_text(encoding="utf-8") == "mine"
