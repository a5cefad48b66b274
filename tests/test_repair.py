"""Damage is reported in one line and mended by `clipsearch repair`, never crashed on. (A
full disk: tests/test_full_disk.py, on a real one.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.store import catalog
from clipsearch.store.manifest import read_manifest

from .conftest import TINY, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """Photos in two folders, indexed in two runs (two catalog parts)."""
    root = tmp_path_factory.mktemp("repair")
    photos = root / "photos"
    for i in range(12):
        folder = photos / ("first" if i < 8 else "second")
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}.png"
        )
    index_dir = root / "index"
    options = IndexOptions(workers=0)
    update_index([photos / "first"], index_dir, TINY, options)
    update_index([photos / "first", photos / "second"], index_dir, TINY, options)
    assert len(read_manifest(index_dir).catalog) == 2
    return photos, index_dir


def _copy(index_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return copy


def _query(index_dir: Path, *more: str):
    return run_cli("query", "a photo", "--index", str(index_dir), "-k", "20", "--json", *more)


def _one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_repair_of_no_index_is_one_line_and_creates_nothing(tmp_path):
    result = run_cli("repair", "--index", str(tmp_path / "nope"))
    _one_line_error(result, "no index at")
    assert not (tmp_path / "nope").exists()


def test_an_intact_index_is_left_as_it_is(built, tmp_path):
    index_dir = _copy(built[1], tmp_path)
    before = (index_dir / "manifest.json").read_text()
    result = run_cli("repair", "--index", str(index_dir))
    assert result.returncode == 0, result.stderr
    assert "is intact: 12 images, 2 catalog part(s)" in result.stdout
    assert (index_dir / "manifest.json").read_text() == before


def test_a_damaged_vector_index_is_rebuilt_from_the_catalog(built, tmp_path):
    index_dir = _copy(built[1], tmp_path)
    hits = json.loads(_query(index_dir).stdout)
    manifest = read_manifest(index_dir)
    (index_dir / manifest.vector_index.file).write_bytes(b"\0" * 64)
    _one_line_error(_query(index_dir), manifest.vector_index.file.split("/")[-1], "repair")
    result = run_cli("repair", "--index", str(index_dir), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["committed"] and report["images"] == 12 and len(report["damaged"]) == 1
    mended = read_manifest(index_dir)
    assert mended.catalog == manifest.catalog  # nothing re-embedded, no row lost
    assert json.loads(_query(index_dir).stdout) == hits


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_catalog_part_is_dropped_and_embedded_again(built, tmp_path, damage):
    photos, index_dir = built[0], _copy(built[1], tmp_path)
    manifest = read_manifest(index_dir)
    part = index_dir / manifest.catalog[1]  # the four images of "second"
    if damage == "truncated":
        part.write_bytes(part.read_bytes()[:100])
    else:
        part.unlink()
    _one_line_error(_query(index_dir), part.name, "repair")
    _one_line_error(_query(index_dir, "--where", "width > 1"), part.name)  # not "invalid filter"
    result = run_cli("repair", "--index", str(index_dir))
    assert result.returncode == 1
    assert f"damaged: {manifest.catalog[1]}" in result.stdout
    assert "8 images, 1 damaged file(s) dropped" in result.stdout
    assert len(json.loads(_query(index_dir).stdout)) == 8
    folders = [str(photos / "first"), str(photos / "second")]
    again = run_cli("index", *folders, "--index", str(index_dir))
    assert again.returncode == 0, again.stderr
    assert "indexed 4 new" in again.stdout
    assert len(json.loads(_query(index_dir).stdout)) == 12


def _catalog_rows(index_dir: Path) -> dict[int, tuple[str, bytes]]:
    manifest = read_manifest(index_dir)
    table = catalog.read_tables(index_dir, manifest.catalog, ["id", "path", "embedding"], None)
    return {
        i: (p, e.tobytes())
        for i, p, e in zip(
            table.column("id").to_pylist(),
            table.column("path").to_pylist(),
            catalog.embeddings_of(table),
            strict=True,
        )
    }


def test_rebuild_compacts_the_catalog_and_builds_the_kind_asked_for(built, tmp_path):
    """Two incremental runs left two parts; a rebuild merges them, keeps every id and
    embedding, and builds the vector index for the new settings, as a new snapshot."""
    index_dir = _copy(built[1], tmp_path)
    rows, before = _catalog_rows(index_dir), read_manifest(index_dir)
    hits = json.loads(_query(index_dir).stdout)
    result = run_cli("rebuild", "--index", str(index_dir), "--flat-threshold", "5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["parts_before"], report["parts_after"], report["images"]) == (2, 1, 12)
    after = read_manifest(index_dir)
    assert after.snapshot == before.snapshot + 1
    assert after.vector_index.info.kind == report["vector_index"]["kind"] == "ivf-flat"
    assert set(after.retired) >= set(before.catalog) | {before.vector_index.file}
    assert _catalog_rows(index_dir) == rows  # same ids, paths and embeddings
    again = json.loads(_query(index_dir).stdout)
    assert [h["id"] for h in again] == [h["id"] for h in hits]  # 12 images: nprobe finds all
    # --no-compact keeps the parts; back to exact search under the default settings.
    result = run_cli("rebuild", "--index", str(index_dir), "--no-compact")
    assert result.returncode == 0, result.stderr
    assert "catalog parts 1 → 1, vector index flat" in result.stdout
    assert read_manifest(index_dir).catalog == after.catalog


def test_compaction_merges_only_runs_of_small_parts(built, tmp_path):
    from clipsearch.store.repair import _compacted

    index_dir = _copy(built[1], tmp_path)
    manifest = read_manifest(index_dir)
    parts = manifest.catalog  # 8 rows, 4 rows
    schema = catalog.catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
    older = index_dir / parts[1]  # as written before catalogs held fingerprints
    pq.write_table(pq.read_table(older).drop_columns(["fingerprint"]), older)
    merged = _compacted(index_dir, parts, 20, schema)  # both under 10: one part of 12 rows
    assert len(merged) == 1 and merged[0] not in parts
    assert catalog.count_rows(index_dir, merged) == 12
    fingerprints = catalog.read_tables(index_dir, merged, ["fingerprint"], schema).column(0)
    assert fingerprints.null_count == 4  # the older part's rows, kept
    assert _compacted(index_dir, parts, 16, schema) == parts  # 8 is not under half of 16
    assert _compacted(index_dir, parts[1:], 20, schema) == parts[1:]  # nothing to merge with


def test_rebuild_refuses_no_index_in_one_line(tmp_path):
    _one_line_error(run_cli("rebuild", "--index", str(tmp_path / "nope")), "no index at")
    assert not (tmp_path / "nope").exists()
