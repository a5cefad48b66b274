"""Direct tests of three small owners of the index format: the manifest (what a snapshot
is), staging (rows waiting for a commit) and the `where` check (what SQL a filter may be,
locally and over HTTP). Each is also exercised end to end elsewhere; these pin their own
contracts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.query.filters import check_filter
from clipsearch.store import catalog
from clipsearch.store.layout import MANIFEST_NAME
from clipsearch.store.manifest import FORMAT_VERSION, Manifest, read_manifest
from clipsearch.store.staging import Staging
from clipsearch.store.storage import commit_snapshot

IDENTITY = ModelIdentity(
    "random:clipsearch-tiny", "clipsearch-tiny", "random:seed=0", 4, 32, (0.5,) * 3, (0.5,) * 3
)


# -- manifest ---------------------------------------------------------------------------------


def _commit(index_dir: Path, **fields) -> Manifest:
    manifest = Manifest(model=IDENTITY, embedding_dim=4, embedding_dtype="float16", **fields)
    index_dir.mkdir(parents=True, exist_ok=True)
    commit_snapshot(index_dir, manifest, None)
    return manifest


def test_a_committed_manifest_reads_back_as_written(tmp_path):
    written = _commit(tmp_path, snapshot=3, catalog=["catalog/part-a.parquet"], errors=None)
    read = read_manifest(tmp_path)
    assert read is not None and read.to_json() == written.to_json()
    assert read.files() == {"catalog/part-a.parquet"} and read.model_spec == IDENTITY.spec
    assert read_manifest(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read manifest"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"kind": "texts", "format_version": FORMAT_VERSION}), "is a text collection"),
        (json.dumps({"format_version": FORMAT_VERSION + 1}), "has format version 2"),
        (json.dumps({"format_version": FORMAT_VERSION}), "cannot read manifest"),  # no model
    ],
)
def test_a_manifest_that_cannot_be_read_is_one_clear_error(tmp_path, content, message):
    (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ClipsearchError, match=message):
        read_manifest(tmp_path)


# -- staging ----------------------------------------------------------------------------------


def _rows(ids: range) -> catalog.pa.Table:
    schema = catalog.catalog_schema(4, "float16")
    rows = [{"id": i, "path": f"/p/{i}.jpg", "size": i, "mtime_ns": i} for i in ids]
    return catalog.rows_to_table(rows, np.ones((len(rows), 4), np.float32), schema)


def test_staged_rows_survive_for_the_same_snapshot_and_model_only(tmp_path, capsys):
    staging = Staging(tmp_path, 3, IDENTITY)
    staging.write(_rows(range(0, 5)))
    staging.write(_rows(range(5, 8)))
    assert staging.count() == 8
    assert sum(t.num_rows for t in staging.tables()) == 8  # one staged part at a time
    again = Staging(tmp_path, 3, IDENTITY).leftovers(["id", "path"])
    assert sorted(again.column("id").to_pylist()) == list(range(8))
    assert again.column_names == ["id", "path"]

    # A commit in between (snapshot 4) makes them stale: discarded, with a note.
    assert Staging(tmp_path, 4, IDENTITY).leftovers(["id"]) is None
    assert "discarding 8 rows" in capsys.readouterr().err
    assert not (tmp_path / "staging").exists()

    Staging(tmp_path, 4, IDENTITY).write(_rows(range(2)))
    other_model = replace(IDENTITY, weights="random:seed=1")
    assert Staging(tmp_path, 4, other_model).leftovers(["id"]) is None
    assert "another model" in capsys.readouterr().err


# -- the where check -------------------------------------------------------------------------


def test_where_takes_predicates_over_columns_and_functions_that_read_nothing():
    for where in (
        "width > 1000 AND format = 'JPEG'",
        "path LIKE '/photos/2024/%' OR lower(path) LIKE '%.png'",
        "taken_at BETWEEN '2020-01-01' AND '2021-01-01'",
        "label IN ('cat', 'dog') AND label_probability > 0.5",
    ):
        assert check_filter(where) == where


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("", "the filter is empty"),
        ("id IN (SELECT 1)", "subqueries are not allowed"),
        ("read_parquet('/etc/x') IS NOT NULL", r"read_parquet\(\) is not allowed"),
        ("1=1; DROP TABLE catalog", "one predicate only"),
        ("1=1 ORDER BY id", "only a predicate"),
        ("width >", "syntax error"),
    ],
)
def test_where_refuses_anything_else_in_one_line(where, fragment):
    with pytest.raises(ClipsearchError, match=fragment) as refused:
        check_filter(where)
    assert "\n" not in str(refused.value)
