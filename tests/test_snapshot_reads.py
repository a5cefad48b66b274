"""Reads of one committed snapshot (`clipsearch.query.snapshot.Snapshot`) and
`Index.refresh()`, on a small index written through the real catalog, manifest and FAISS code."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from clipsearch import Index
from clipsearch.errors import ClipsearchError, NotFound
from clipsearch.model.identity import ModelIdentity
from clipsearch.query.snapshot import Snapshot
from clipsearch.store import catalog, layout, vectors
from clipsearch.store.manifest import Manifest, read_manifest
from clipsearch.store.snapshots import commit_next

DIM = 8
IDENTITY = ModelIdentity(
    "random:clipsearch-tiny", "clipsearch-tiny", "random:seed=0", DIM, 32, (0.5,) * 3, (0.5,) * 3
)


def _part(index_dir: Path, ids: range, seed: int) -> tuple[str, np.ndarray]:
    rows = [
        {
            "id": i,
            "path": f"/photos/{i:03d}.jpg",
            "size": 1000 + i,
            "mtime_ns": 10 * i,
            "width": 100 * (i + 1),
            "height": 50,
            "format": "JPEG",
            "indexed_at": datetime(2026, 12, 5, tzinfo=timezone.utc),
        }
        for i in ids
    ]
    vecs = np.random.default_rng(seed).standard_normal((len(rows), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    table = catalog.rows_to_table(rows, vecs, catalog.catalog_schema(DIM, "float32"))
    return catalog.write_new_table(index_dir, layout.CATALOG_DIR, "part", table), vecs


def _commit(
    index_dir: Path,
    parts: list[tuple[str, np.ndarray]],
    before: Manifest | None,
    identity: ModelIdentity = IDENTITY,
) -> None:
    ids = np.arange(sum(len(v) for _, v in parts))  # the parts hold ids 0..n-1 in order
    built = vectors.build(ids, np.concatenate([v for _, v in parts]))
    manifest = Manifest(
        model=identity,
        embedding_dim=DIM,
        embedding_dtype="float32",
        next_id=len(ids),
        catalog=[p for p, _ in parts],
        counts={"images": len(ids), "errors": 0},
    )
    commit_next(index_dir, before, manifest, built)


@pytest.fixture
def index_dir(tmp_path) -> Path:
    parts = [_part(tmp_path, range(0, 6), 1), _part(tmp_path, range(6, 10), 2)]
    _commit(tmp_path, parts, None)
    return tmp_path


def test_rows_by_id_and_columns(index_dir):
    snapshot = Snapshot(index_dir)
    rows = snapshot.rows([7, 2, 99], ["path", "width"])
    assert sorted(rows) == [2, 7]  # an unknown id is no row
    assert rows[7] == {"id": 7, "path": "/photos/007.jpg", "width": 800}
    assert "fingerprint" in snapshot.columns() and "embedding" in snapshot.columns()
    with pytest.raises(ClipsearchError, match="unknown catalog column"):
        snapshot.rows([1], ["colour"])


def test_filters_ids_of_files_and_embeddings(index_dir):
    snapshot = Snapshot(index_dir)
    assert snapshot.matching_ids("width > 500").tolist() == [5, 6, 7, 8, 9]
    assert snapshot.matching_ids("width > 500") is snapshot.matching_ids("width > 500")  # kept
    with pytest.raises(ClipsearchError, match="invalid"):
        snapshot.matching_ids("width >")
    assert snapshot.id_of_file("/photos/003.jpg", 1003, 30) == 3
    assert snapshot.id_of_file("/photos/003.jpg", 1003, 31) is None  # changed since
    every_id, every = snapshot.embeddings()
    some_ids, some = snapshot.embeddings([8, 1])
    assert sorted(some_ids.tolist()) == [1, 8] and every.shape == (10, DIM)
    for row_id, vector in zip(some_ids, some, strict=True):
        np.testing.assert_array_equal(vector, every[every_id.tolist().index(row_id)])
    assert snapshot.embeddings([])[1].shape == (0, DIM)


def test_refresh_moves_an_open_index_to_the_newest_snapshot(index_dir):
    index = Index.open(index_dir)
    assert len(index) == 10 and index.refresh() is False
    before = read_manifest(index_dir)
    every = Snapshot(index_dir).embeddings()[1]
    kept = [(before.catalog[0], every[:6]), (before.catalog[1], every[6:])]
    _commit(index_dir, [*kept, _part(index_dir, range(10, 13), 3)], before)
    assert len(index) == 10  # still the snapshot it opened
    assert index.refresh() is True and len(index) == 13
    assert index.snapshot.rows([12], ["path"])[12]["path"] == "/photos/012.jpg"
    assert index.refresh() is False


def _add_part(index_dir: Path, identity: ModelIdentity = IDENTITY) -> None:
    before = read_manifest(index_dir)
    every = Snapshot(index_dir).embeddings()[1]
    kept = [(before.catalog[0], every[:6]), (before.catalog[1], every[6:])]
    _commit(index_dir, [*kept, _part(index_dir, range(10, 13), 3)], before, identity)


def test_refresh_warms_the_new_snapshot_before_it_is_used(index_dir):
    index = Index.open(index_dir)
    old = index.snapshot
    _ = old.vectors
    seen = []

    def prepare(snapshot: Snapshot) -> None:
        assert index.snapshot is old  # searches meanwhile still use the old snapshot
        seen.append((snapshot.number, len(snapshot.matching_ids("id >= 0"))))

    _add_part(index_dir)
    assert index.refresh(prepare=prepare) and seen == [(2, 13)] and index.snapshot.number == 2
    assert index.snapshot.vectors is not old.vectors  # the commit rebuilt it: loaded anew

    # Zero-shot labels are committed with a snapshot of their own; the vectors stay loaded.
    from clipsearch.zeroshot.classify import Prediction, write_tags

    warm = index.snapshot
    _ = warm.vectors
    write_tags(index_dir, [Prediction("/photos/004.jpg", "sunny", 0.9, id=4)])
    assert index.refresh() is True and index.snapshot.number == 3
    assert index.snapshot.vectors is warm.vectors
    assert read_manifest(index_dir).tags == "tags/tags-000003.parquet"
    assert index.snapshot.matching_ids("label = 'sunny'").tolist() == [4]
    tagged = index.snapshot.rows([4], ["label", "indexed_at"])[4]  # read through DuckDB
    assert tagged["label"] == "sunny"
    assert tagged["indexed_at"] == datetime(2026, 12, 5, tzinfo=timezone.utc)
    assert tagged["indexed_at"].tzinfo is not None
    assert index.refresh() is False


def test_refresh_refuses_an_index_rebuilt_with_another_model(index_dir):
    index = Index.open(index_dir)
    _add_part(index_dir, replace(IDENTITY, weights="sha256:other"))
    with pytest.raises(ClipsearchError, match="another model"):
        index.refresh()
    assert index.snapshot.number == 1 and len(index) == 10  # still answering from the old one


def test_search_like_indexed_images_by_id(index_dir):
    index = Index.open(index_dir)
    hits = index.search(like=[3], k=3, columns=["width"])
    assert hits[0].id == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].columns == {"width": 400} and hits.snapshot == 1
    both = index.search(like=[3, 8], k=10)
    expected = Snapshot(index_dir).embeddings([3, 8])[1].sum(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(index.query_vector(like=[3, 8]), expected, atol=1e-6)
    assert {both[0].id, both[1].id} == {3, 8}
    with pytest.raises(NotFound, match="no image with id 99"):
        index.search(like=[99])
    with pytest.raises(ClipsearchError, match="empty query"):
        index.search(k=3)


def test_rows_from_memory_answer_like_the_parquet_parts(index_dir):
    from clipsearch.server.rows import RowStore

    on_disk = Snapshot(index_dir)
    in_memory = Snapshot(index_dir)
    _ = in_memory.vectors  # loaded: stored embeddings come from it, not from Parquet
    in_memory.keep_rows(RowStore(in_memory))
    columns = ["path", "width", "indexed_at"]
    assert in_memory.rows([7, 2, 99], columns) == on_disk.rows([7, 2, 99], columns)
    for where in ("width > 500", "path LIKE '%/00_.jpg'"):
        assert in_memory.matching_ids(where).tolist() == on_disk.matching_ids(where).tolist()
    assert "embedding" not in in_memory.columns()  # never copied into memory
    with pytest.raises(ClipsearchError, match="unknown catalog column"):
        in_memory.rows([1], ["embedding"])
    with pytest.raises(ClipsearchError, match="invalid filter"):
        in_memory.matching_ids("id IN (SELECT 1 FROM read_parquet('/etc/passwd'))")
    held_ids, held = in_memory.embeddings([9, 0, 9])
    read_ids, read = on_disk.embeddings([9, 0])
    assert held_ids.tolist() == read_ids.tolist() == [0, 9]
    # Both renormalized float16 rows, at different times: equal to the last bit or so.
    np.testing.assert_allclose(held, read, rtol=0, atol=1e-6)


def test_a_commit_between_finding_and_reading_the_vector_file_is_no_damage(index_dir, monkeypatch):
    # The chaos run caught it: a reader found vectors/index-000001.faiss in place, a commit
    # retired it, and the read that followed called the index damaged. Here the commit (a real
    # one) runs at exactly that moment; the reader must find the file in retired/.
    real_load = vectors.load
    committed = []

    def commit_then_load(path, mmap=False):
        if not committed:
            committed.append(True)
            _add_part(index_dir)
            assert not Path(path).exists()  # the path the reader found is gone now
        return real_load(path, mmap=mmap)

    snapshot = Snapshot(index_dir)
    monkeypatch.setattr(vectors, "load", commit_then_load)
    assert snapshot.vectors.ntotal == 10  # the snapshot it opened, from retired/
    assert read_manifest(index_dir).snapshot == 2


def test_labels_an_older_clipsearch_wrote_beside_the_catalog_still_filter(index_dir):
    # Before labels were committed with a snapshot, classify wrote tags.parquet at the top.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipsearch.store import layout
    from clipsearch.zeroshot.classify import Prediction, write_tags

    legacy = pa.table({"id": pa.array([2], pa.int64()), "label": ["cloudy"]})
    pq.write_table(legacy, index_dir / layout.LEGACY_TAGS_NAME)
    assert Snapshot(index_dir).matching_ids("label = 'cloudy'").tolist() == [2]
    write_tags(index_dir, [Prediction("/photos/004.jpg", "sunny", 0.9, id=4)])
    assert not (index_dir / layout.LEGACY_TAGS_NAME).exists()  # replaced by the new labels
    snapshot = Snapshot(index_dir)
    assert snapshot.matching_ids("label = 'cloudy'").tolist() == []
    assert snapshot.matching_ids("label = 'sunny'").tolist() == [4]
