"""The Parquet catalog on real files: streaming reads and lookups by id."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.store import catalog, layout

DIM = 8


def _part(index_dir: Path, ids: range) -> str:
    schema = catalog.catalog_schema(DIM, "float16")
    rows = [
        {
            "id": i,
            "path": f"/photos/{i:04d}.jpg",
            "size": 1000 + i,
            "mtime_ns": i,
            "content_hash": None,
            "width": 10 * i,
            "height": 7,
            "format": "JPEG",
            "taken_at": None,
            "indexed_at": datetime(2026, 12, 5, 11, 0, tzinfo=timezone.utc),
        }
        for i in ids
    ]
    embeddings = np.random.default_rng(ids.start).standard_normal((len(ids), DIM))
    table = catalog.rows_to_table(rows, embeddings.astype(np.float32), schema)
    path = catalog.write_table(index_dir / layout.CATALOG_DIR, "part", table)
    return path.relative_to(index_dir).as_posix()


@pytest.fixture
def parts(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    monkeypatch.setattr(catalog, "ROW_GROUP_ROWS", 5)  # several row groups per part
    return tmp_path, [_part(tmp_path, range(0, 23)), _part(tmp_path, range(30, 41))]


def test_lookup_reads_only_the_row_groups_holding_the_ids(parts):
    index_dir, names = parts
    lookup = catalog.RowLookup(index_dir, names)
    assert len(lookup._where) == 5 + 3  # 23 rows in groups of 5, then 11
    table = lookup.rows([40, 3, 3, 22, 25, 999], ["path", "width"])
    assert sorted(table.column("id").to_pylist()) == [3, 22, 40]  # 25, 999 do not exist
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert by_id[40] == {"id": 40, "path": "/photos/0040.jpg", "width": 400}
    empty = lookup.rows([25], ["path"])
    assert empty.num_rows == 0 and empty.schema.names == ["id", "path"]


def test_iter_embeddings_streams_every_row_in_batches(parts):
    index_dir, names = parts
    batches = list(catalog.iter_embeddings(index_dir, names, batch_rows=4))
    assert max(len(ids) for ids, _ in batches) == 4
    ids = np.concatenate([ids for ids, _ in batches])
    np.testing.assert_array_equal(ids, [*range(0, 23), *range(30, 41)])
    whole = catalog.read_tables(index_dir, names, ["id", "embedding"], None)
    np.testing.assert_array_equal(
        np.concatenate([v for _, v in batches]), catalog.embeddings_of(whole)
    )
    assert catalog.count_rows(index_dir, names) == 34


def test_embeddings_come_back_as_unit_rows(parts):
    # Stored as float16: the model's unit rows come back unit, so dot products are cosines.
    index_dir, names = parts
    _, stored = next(catalog.iter_embeddings(index_dir, names))
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)


def test_a_damaged_part_is_one_error_naming_it_and_repair(parts):
    index_dir, names = parts
    (index_dir / names[1]).write_bytes(b"PAR1 truncated")
    for read in (
        lambda: catalog.RowLookup(index_dir, names),
        lambda: list(catalog.iter_embeddings(index_dir, names)),
        lambda: catalog.count_rows(index_dir, names),
    ):
        with pytest.raises(ClipsearchError, match=r"catalog part part-.*clipsearch repair"):
            read()
    (index_dir / names[1]).unlink()
    with pytest.raises(FileNotFoundError):  # gone: a reader retries on the newest snapshot
        catalog.RowLookup(index_dir, names)


def test_snapshot_rows_are_the_same_through_the_lookup_and_duckdb(tmp_path):
    """The lookup serves catalog columns; DuckDB, zero-shot tags: the rows must not differ."""
    from clipsearch.query.snapshot import Snapshot
    from clipsearch.store.manifest import Manifest
    from clipsearch.store.storage import commit_snapshot

    names = [_part(tmp_path, range(0, 20)), _part(tmp_path, range(20, 25))]
    manifest = Manifest(
        model=ModelIdentity(
            "random:clipsearch-tiny",
            "clipsearch-tiny",
            "random:seed=0",
            DIM,
            32,
            (0.5,) * 3,
            (0.5,) * 3,
        ),
        embedding_dim=DIM,
        embedding_dtype="float16",
        snapshot=1,
        next_id=25,
        catalog=names,
    )
    commit_snapshot(tmp_path, manifest, None)
    snapshot = Snapshot(tmp_path)
    columns = ["path", "size", "width", "taken_at", "indexed_at"]
    fast = snapshot.rows([24, 2, 7], columns)
    assert "_lookup" in snapshot.__dict__ and "db" not in snapshot.__dict__
    select = ", ".join(snapshot._selectable(c) for c in ["id", *columns])
    slow = snapshot.db.execute(f"SELECT {select} FROM catalog WHERE id IN (24, 2, 7)").fetchall()
    expected = {row[0]: dict(zip(["id", *columns], row, strict=True)) for row in slow}
    for row in expected.values():  # DuckDB gives UTC wall time; rows() says it is UTC
        row["indexed_at"] = row["indexed_at"].replace(tzinfo=timezone.utc)
    assert fast == expected
    assert fast[2]["indexed_at"] == datetime(2026, 12, 5, 11, 0, tzinfo=timezone.utc)
    assert pa.types.is_timestamp(pa.scalar(fast[2]["indexed_at"]).type)


def test_write_parts_splits_and_joins_tables_in_order(tmp_path):
    source = [_part(tmp_path / "source", ids) for ids in (range(7), range(7, 7), range(7, 28))]
    tables = [catalog.read_tables(tmp_path / "source", [p], None, None) for p in source]
    written = catalog.write_parts(tmp_path, tables, part_rows=10)
    assert [catalog.count_rows(tmp_path, [p]) for p in written] == [10, 10, 8]
    ids = catalog.read_tables(tmp_path, written, ["id"], None).column("id").to_pylist()
    assert ids == list(range(28))
    assert catalog.write_parts(tmp_path, [tables[1]]) == []  # no rows, no part
