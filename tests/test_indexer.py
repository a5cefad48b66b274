"""The indexer on real image files made here, with the real tiny model, Parquet, DuckDB, FAISS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipsearch.bundled import DEMO_MODEL
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.ingest.scan import ScanOptions
from clipsearch.store import vectors
from clipsearch.store.manifest import read_manifest
from clipsearch.store.snapshots import index_lock

from .conftest import TINY, run_cli, without_root_powers


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _options(**overrides) -> IndexOptions:
    return IndexOptions(**{"workers": 0, "batch_size": 8, **overrides})


def _catalog(index_dir: Path) -> list[dict]:
    manifest = read_manifest(index_dir)
    rows = []
    for part in manifest.catalog:
        rows += pq.read_table(index_dir / part).to_pylist()
    return sorted(rows, key=lambda r: r["path"])


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    _photo(root / "a.jpg", 1)
    _photo(root / "nested" / "deeper" / "b.png", 2)
    _photo(root / "фото с пробелом.jpg", 3)
    _photo(root / "写真" / "猫.webp", 4)
    _photo(root / ".hidden.jpg", 5)
    (root / "notes.txt").write_text("not an image, not even considered")
    return root


def test_first_run_indexes_every_image_once(photos, tmp_path):
    index_dir = tmp_path / "index"
    summary = update_index([photos], index_dir, TINY, _options())
    assert (summary.new, summary.errors, summary.images, summary.committed) == (4, 0, 4, True)
    rows = _catalog(index_dir)
    assert [Path(r["path"]).name for r in rows] == [
        "a.jpg",
        "b.png",
        "фото с пробелом.jpg",
        "猫.webp",
    ]
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 3]
    assert all(Path(r["path"]).is_absolute() for r in rows)
    assert {r["format"] for r in rows} == {"JPEG", "PNG", "WEBP"}
    assert all((r["width"], r["height"]) == (48, 40) for r in rows)
    embeddings = np.array([r["embedding"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=2e-3)  # float16
    manifest = read_manifest(index_dir)
    assert manifest.model.spec == TINY and manifest.embedding_dim == 128
    assert manifest.counts == {"images": 4, "errors": 0}
    assert manifest.vector_index.info.kind == "flat" and manifest.vector_index.info.count == 4


def test_embeddings_match_the_model(photos, tmp_path, tiny_model):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    row = next(r for r in _catalog(index_dir) if r["path"].endswith("a.jpg"))
    expected = tiny_model.embed_images([photos / "a.jpg"])[0]
    np.testing.assert_allclose(np.array(row["embedding"], np.float32), expected, atol=2e-3)


def test_duckdb_reads_the_catalog_directly(photos, tmp_path):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    glob = str(index_dir / "catalog" / "*.parquet")
    paths = duckdb.sql(f"SELECT path FROM '{glob}' ORDER BY path").fetchall()
    assert [Path(p).name for (p,) in paths] == ["a.jpg", "b.png", "фото с пробелом.jpg", "猫.webp"]
    (dim,) = duckdb.sql(f"SELECT len(embedding) FROM '{glob}' LIMIT 1").fetchall()[0]
    assert dim == 128


def test_every_mode_and_format_is_indexed(tmp_path):
    root = tmp_path / "modes"
    for i, (name, mode) in enumerate(
        [
            ("rgb.bmp", "RGB"),
            ("gray.png", "L"),
            ("palette.gif", "P"),
            ("la.png", "LA"),
            ("rgba.png", "RGBA"),
            ("cmyk.jpg", "CMYK"),
            ("tiff.tif", "RGB"),
            ("bw.png", "1"),
        ]
    ):
        _photo(root / name, i, mode=mode)
    deep = Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 20).astype(np.uint16))
    assert deep.mode == "I;16"
    deep.save(root / "sixteen.png")
    summary = update_index([root], tmp_path / "index", TINY, _options())
    assert (summary.new, summary.errors, summary.images) == (9, 0, 9)


def test_broken_files_are_errors_and_indexing_goes_on(photos, tmp_path):
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.jpg").write_text("hello, I am not a JPEG")
    good = _photo(tmp_path / "whole.png", 9, size=(200, 160)).read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    index_dir = tmp_path / "index"
    summary = update_index([photos], index_dir, TINY, _options(max_pixels=10**6))
    assert (summary.new, summary.errors, summary.images) == (4, 3, 4)
    manifest = read_manifest(index_dir)
    errors = {
        Path(r["path"]).name: r["reason"]
        for r in pq.read_table(index_dir / manifest.errors).to_pylist()
    }
    assert errors["empty.jpg"] == "empty file"
    assert errors["text.jpg"] == "not an image"
    assert errors["truncated.png"].startswith("truncated or corrupt image")
    # unchanged broken files are remembered: a second run does no work and loads no model
    again = update_index([photos], index_dir, None, _options())
    assert (again.new, again.errors, again.committed) == (0, 3, False)


def test_unreadable_files_and_folders_are_listed_and_the_rest_indexed(photos, tmp_path):
    """A photo and a folder nobody may read (as root: with the power to read anything
    taken away), each listed with its reason; the other photos are indexed."""
    secret = _photo(photos / "secret.png", 6)
    locked = photos / "locked"
    _photo(locked / "inside.png", 7)
    secret.chmod(0)
    locked.chmod(0)
    command = [sys.executable, "-m", "clipsearch", "index", str(photos), "--json"]
    index_dir = str(tmp_path / "index")
    try:
        result = subprocess.run(
            [*without_root_powers(), *command, "--index", index_dir, "--model", DEMO_MODEL],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    reasons = {Path(e["path"]).name: e["reason"] for e in report["error_files"]}
    assert reasons == {"secret.png": "unreadable: permission denied", "locked": "permission denied"}
    assert (report["new"], report["images"]) == (4, 4)


def test_a_name_that_is_not_utf8_is_an_error_and_the_run_goes_on(photos, tmp_path):
    latin1 = Path(os.fsdecode(os.fsencode(photos) + b"/caf\xe9.png"))  # not UTF-8 on disk
    _photo(latin1, 8)
    index_dir = tmp_path / "index"
    summary = update_index([photos], index_dir, DEMO_MODEL, _options())
    assert (summary.new, summary.errors, summary.images) == (4, 1, 4)
    errors = pq.read_table(index_dir / read_manifest(index_dir).errors).to_pylist()
    assert [(Path(e["path"]).name, e["reason"]) for e in errors] == [
        ("caf\\xe9.png", "file name is not UTF-8: rename it")
    ]
    again = update_index([photos], index_dir, None, _options())
    assert (again.new, again.errors, again.committed) == (0, 1, False)  # remembered
    from clipsearch import Index

    hits = Index.open(index_dir).search(image=latin1, k=2)  # a query image may be named so
    assert len(hits) == 2


def test_an_index_inside_the_photos_is_not_indexed(photos):
    # `clipsearch index .` in a photo folder keeps the index under it, and `clipsearch
    # serve` caches JPEG thumbnails in the index: they are not photos of the library.
    index_dir = photos / "indexes" / "default"
    assert update_index([photos], index_dir, DEMO_MODEL, _options()).new == 4
    _photo(index_dir / "thumbnails" / "1-256-0123456789abcdef.jpg", 9)
    again = update_index([photos], index_dir, DEMO_MODEL, _options())
    assert (again.new, again.images, again.committed) == (0, 4, False)
    # A folder that merely has a manifest.json and a catalog/ (a web gallery) is photos.
    gallery = photos / "gallery"
    (gallery / "manifest.json").parent.mkdir()
    (gallery / "manifest.json").write_text('{"name": "holidays", "catalog": []}')
    _photo(gallery / "catalog" / "beach.jpg", 10)
    assert update_index([photos], index_dir, DEMO_MODEL, _options()).new == 1


def test_pixel_cap_makes_an_error_not_a_crash(tmp_path):
    _photo(tmp_path / "p" / "big.png", 1, size=(300, 300))
    _photo(tmp_path / "p" / "small.png", 2)
    summary = update_index([tmp_path / "p"], tmp_path / "index", TINY, _options(max_pixels=50_000))
    assert (summary.images, summary.errors) == (1, 1)


def test_add_modify_delete_move_between_runs(photos, tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    before = {Path(r["path"]).name: r for r in _catalog(index_dir)}

    _photo(photos / "new.jpg", 10)
    _photo(photos / "a.jpg", 11, size=(64, 50))  # modified in place
    os.utime(photos / "a.jpg", ns=(1, 1_000_000_000))
    (photos / "nested" / "deeper" / "b.png").unlink()
    (photos / "moved").mkdir()
    shutil.move(photos / "фото с пробелом.jpg", photos / "moved" / "renamed.jpg")

    summary = update_index([photos], index_dir, None, _options())
    assert (summary.new, summary.changed, summary.moved, summary.removed) == (1, 1, 1, 1)
    assert summary.embedded == 2  # the moved file kept its embedding
    after = {Path(r["path"]).name: r for r in _catalog(index_dir)}
    assert sorted(after) == ["a.jpg", "new.jpg", "renamed.jpg", "猫.webp"]
    assert after["a.jpg"]["id"] == before["a.jpg"]["id"]
    assert (after["a.jpg"]["width"], after["a.jpg"]["height"]) == (64, 50)
    assert after["a.jpg"]["embedding"] != before["a.jpg"]["embedding"]
    assert after["renamed.jpg"]["id"] == before["фото с пробелом.jpg"]["id"]
    assert after["renamed.jpg"]["embedding"] == before["фото с пробелом.jpg"]["embedding"]
    assert after["new.jpg"]["id"] == 4  # ids are never reused
    manifest = read_manifest(index_dir)
    assert manifest.counts["images"] == 4 and manifest.snapshot == 2
    index = vectors.load(index_dir / manifest.vector_index.file)
    assert index.ntotal == 4
    # catalog/ holds the live parts, nothing else; the parts the commit replaced wait for
    # readers of the snapshot before in retired/catalog/
    live = {Path(p).name for p in manifest.catalog}
    retired = {Path(p).name for p in manifest.retired if p.startswith("catalog/")}
    assert retired and not live & retired
    assert {p.name for p in (index_dir / "catalog").iterdir()} == live
    assert {p.name for p in (index_dir / "retired" / "catalog").iterdir()} == retired


def test_nothing_changed_loads_no_model(photos, tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    manifest_before = (index_dir / "manifest.json").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a no-op re-index must not load the model")

    monkeypatch.setattr("clipsearch.model.Model.load", refuse)
    summary = update_index([photos], index_dir, None, _options())
    assert (summary.new, summary.unchanged, summary.committed) == (0, 4, False)
    assert (index_dir / "manifest.json").read_text() == manifest_before
    # deleting a file needs no model either
    (photos / "a.jpg").unlink()
    summary = update_index([photos], index_dir, None, _options())
    assert (summary.removed, summary.images) == (1, 3)


def test_a_second_folder_adds_to_the_index(photos, tmp_path):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    other = tmp_path / "other"
    _photo(other / "x.png", 20)
    summary = update_index([other], index_dir, None, _options())
    assert (summary.new, summary.removed, summary.images) == (1, 0, 5)


def test_hidden_and_excluded_files(photos, tmp_path):
    index_dir = tmp_path / "index"
    options = _options(scan=ScanOptions(exclude=("*.webp",), include_hidden=True))
    update_index([photos], index_dir, TINY, options)
    names = sorted(Path(r["path"]).name for r in _catalog(index_dir))
    assert names == [".hidden.jpg", "a.jpg", "b.png", "фото с пробелом.jpg"]


def test_symlink_loop_is_survived(photos, tmp_path):
    (photos / "nested" / "loop").symlink_to(photos)
    summary = update_index(
        [photos], tmp_path / "index", TINY, _options(scan=ScanOptions(follow_symlinks=True))
    )
    assert summary.images >= 4
    manifest = read_manifest(tmp_path / "index")
    reasons = pq.read_table(tmp_path / "index" / manifest.errors).column("reason").to_pylist()
    assert "symlink loop" in reasons


def test_a_different_model_is_refused(photos, tmp_path, tiny_model):
    checkpoint = tiny_model.save(tmp_path / "checkpoint")
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, str(checkpoint), _options())
    with pytest.raises(ClipsearchError, match=r"was built with model '.*checkpoint', not 'random"):
        update_index([photos], index_dir, "random:clipsearch-tiny", _options())
    # the same weights elsewhere (a moved checkpoint) are the same model
    moved = shutil.copytree(checkpoint, tmp_path / "moved")
    summary = update_index([photos], index_dir, str(moved), _options())
    assert summary.committed is False


class _InterruptAfter:
    """A progress that stops the run like Ctrl-C once ``count`` images are embedded."""

    def __init__(self, count: int) -> None:
        self.count, self.done = count, 0

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        self.done += count
        if self.done >= self.count:
            raise KeyboardInterrupt


def test_a_resume_with_another_model_discards_the_staged_rows(photos, tmp_path, capsys):
    index_dir = tmp_path / "index"
    for i in range(12):
        _photo(photos / "more" / f"{i:02d}.png", 50 + i)
    with pytest.raises(KeyboardInterrupt):
        update_index([photos], index_dir, TINY, _options(part_rows=4), _InterruptAfter(8))
    assert list((index_dir / "staging").glob("part-*.parquet"))
    other = "random:clipsearch-convnet-small"
    summary = update_index([photos], index_dir, other, _options())
    assert summary.resumed == 0 and summary.embedded == summary.images == 16
    assert "note: discarding 8 rows an interrupted run embedded with another model" in (
        capsys.readouterr().err
    )
    assert read_manifest(index_dir).model_spec == other
    assert {len(r["embedding"]) for r in _catalog(index_dir)} == {256}  # not the 128 of tiny


def test_a_commit_streams_staged_rows_into_bounded_parts(tmp_path):
    root = tmp_path / "photos"
    for i in range(23):
        _photo(root / f"{i:02d}.png", 100 + i)
    index_dir = tmp_path / "index"
    update_index([root], index_dir, TINY, _options(part_rows=4, catalog_part_rows=10))
    manifest = read_manifest(index_dir)
    sizes = [pq.read_metadata(index_dir / part).num_rows for part in manifest.catalog]
    assert sizes == [10, 10, 3]
    rows = _catalog(index_dir)
    assert [r["path"] for r in rows] == sorted(str(p) for p in root.iterdir())
    assert sorted(r["id"] for r in rows) == list(range(23))
    # The vector index holds each row under its id, and a later run adds in place.
    _photo(root / "new.png", 999)
    update_index([root], index_dir, TINY, _options(part_rows=4, catalog_part_rows=10))
    rows = _catalog(index_dir)
    index = vectors.load(index_dir / read_manifest(index_dir).vector_index.file)
    info = read_manifest(index_dir).vector_index.info
    embeddings = np.array([r["embedding"] for r in rows], np.float32)
    found = index.search(embeddings, 1)[1][:, 0]
    assert found.tolist() == [r["id"] for r in rows] and info.count == 24


def test_one_writer_at_a_time(tmp_path):
    index_dir = tmp_path / "index"
    pid = rf"\(pid {os.getpid()}\)"
    with index_lock(index_dir), pytest.raises(ClipsearchError, match=f"another clipsearch.*{pid}"):
        update_index([tmp_path], index_dir, TINY, _options())
    update_index([tmp_path], index_dir, TINY, _options())  # released: the next writer runs


def test_missing_path_is_a_clear_error_before_any_work(tmp_path):
    with pytest.raises(ClipsearchError, match="no such file or directory"):
        update_index([tmp_path / "nope"], tmp_path / "index", TINY, _options())
    assert not (tmp_path / "index").exists()


def test_parallel_workers_give_the_same_catalog(photos, tmp_path):
    update_index([photos], tmp_path / "serial", TINY, _options())
    update_index([photos], tmp_path / "parallel", TINY, _options(workers=2))
    serial, parallel = _catalog(tmp_path / "serial"), _catalog(tmp_path / "parallel")
    assert [r["path"] for r in serial] == [r["path"] for r in parallel]
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-3)


# `clipsearch index` whose first finished batch SIGKILLs a busy decode worker (files are
# still in flight: 4 tasks of 8, 160 files behind them).
_KILLS_A_WORKER = """
import multiprocessing, os, signal, sys
from pathlib import Path
from clipsearch.ingest.indexer import IndexOptions, update_index

class Killer:
    killed = False
    def start(self, total): pass
    def advance(self, count):
        if not self.killed:
            self.killed = True
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

options = IndexOptions(workers=2, batch_size=8)
summary = update_index([sys.argv[1]], Path(sys.argv[2]), sys.argv[3], options, Killer())
print(summary.new, summary.errors)
"""

# `clipsearch index` in which decoding one file (crash.png) crashes its worker, every time:
# what a decoder's bug does on a hostile file.
_CRASHES_ON_ONE_FILE = """
import os, signal
from clipsearch.cli import main
from clipsearch.ingest import loader

load_image = loader.load_image
def crashing(path, **kwargs):
    if str(path).endswith("crash.png"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return load_image(path, **kwargs)
loader.load_image = crashing
main()
"""


def test_a_decode_worker_killed_midway_loses_no_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(200):
        _photo(folder / f"{seed:03d}.png", seed)
    script = [sys.executable, "-c", _KILLS_A_WORKER, str(folder), str(tmp_path / "index"), TINY]
    result = subprocess.run(script, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "0"]  # all indexed, none failed
    assert len(_catalog(tmp_path / "index")) == 200


def test_a_file_that_crashes_its_decoder_is_a_listed_error(photos, tmp_path):
    _photo(photos / "crash.png", 99)
    command = [sys.executable, "-c", _CRASHES_ON_ONE_FILE, "index", str(photos)]
    options = ["--index", str(tmp_path / "index"), "--model", TINY, "--workers", "2"]
    result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("indexed 4 new, 0 changed, 0 moved, 0 removed, 1 errors")
    assert "crash.png: its decoder crashed" in result.stdout


def test_cli_index_summary_and_json(photos, tmp_path):
    (photos / "text.jpg").write_text("not a jpeg")
    result = run_cli("index", str(photos), "--model", TINY, "--workers", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("indexed 4 new, 0 changed, 0 moved, 0 removed, 1 errors in ")
    assert "1 file could not be read:" in result.stdout
    assert "text.jpg: not an image" in result.stdout
    assert (tmp_path / "indexes" / "default" / "manifest.json").is_file()
    again = run_cli("index", str(photos), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["new"], report["unchanged"], report["errors"]) == (0, 4, 1)
    assert report["error_files"][0]["reason"] == "not an image"


def test_cli_refuses_other_model_in_one_line(photos, tmp_path):
    assert run_cli("index", str(photos), "-m", TINY, "--workers", "0", cwd=tmp_path).returncode == 0
    result = run_cli("index", str(photos), "-m", "random:ViT-B-32", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --model: index ")


def _wait_for_staged_parts(process, staging: Path, count: int, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(staging.glob("part-*.parquet"))) >= count:
            return
        assert process.poll() is None, "the run finished before it could be interrupted"
        time.sleep(0.005)
    raise AssertionError("no staged parts appeared")


@pytest.mark.slow
def test_interrupt_and_kill_then_resume(tmp_path):
    import signal
    import subprocess
    import sys

    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    root.mkdir()
    for i in range(300):
        Image.fromarray(np.roll(base, i * 7, axis=1)).save(root / f"{i:03d}.jpg")
    index_dir = tmp_path / "indexes" / "default"
    first = sorted(root.iterdir())[:10]
    (tmp_path / "first").mkdir()
    for path in first:
        shutil.copy(path, tmp_path / "first" / path.name)
    assert run_cli("index", str(tmp_path / "first"), "-m", TINY, cwd=tmp_path).returncode == 0
    snapshot = (index_dir / "manifest.json").read_text()
    command = [
        sys.executable,
        "-m",
        "clipsearch",
        "index",
        str(root),
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "16",
    ]

    # Ctrl-C: a clean stop with a one-line message. The child must take SIGINT as a terminal
    # does: a shell without job control (nohup ... &) starts background jobs ignoring it.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_staged_parts(process, index_dir / "staging", 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted: images embedded so far")

    # kill -9 later on: nothing committed, readers still see the first snapshot
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_staged_parts(process, index_dir / "staging", 3)
    process.kill()
    process.wait()
    assert (index_dir / "manifest.json").read_text() == snapshot
    glob = str(index_dir / "catalog" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall()[0] == (10,)
    staged = sum(
        pq.read_metadata(p).num_rows for p in (index_dir / "staging").glob("part-*.parquet")
    )
    assert staged >= 48

    result = run_cli("index", str(root), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resumed"] == staged
    assert report["embedded"] == 300 - staged
    assert report["images"] == 310 and report["new"] == 300
    paths = [p for (p,) in duckdb.sql(f"SELECT path FROM '{glob}'").fetchall()]
    assert len(paths) == len(set(paths)) == 310
    ids = [i for (i,) in duckdb.sql(f"SELECT id FROM '{glob}'").fetchall()]
    assert len(set(ids)) == 310
    assert not (index_dir / "staging").exists()


def test_torchrun_two_processes_match_one(photos, tmp_path):
    import subprocess
    import sys

    for i in range(20):
        _photo(photos / "more" / f"{i:02d}.png", 100 + i)
    (photos / "broken.jpg").write_text("not a jpeg")
    args = ["index", str(photos), "-m", TINY, "--workers", "0", "--checkpoint-every", "4"]
    single = run_cli(*args, "--index", str(tmp_path / "single"), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    multi = subprocess.run(
        [*torchrun, "-m", "clipsearch", *args, "--index", str(tmp_path / "multi")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr
    assert multi.stdout.count("indexed 24 new") == 1  # rank 0 alone reports
    one, two = _catalog(tmp_path / "single"), _catalog(tmp_path / "multi")
    assert [(r["id"], r["path"]) for r in one] == [(r["id"], r["path"]) for r in two]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-3)
    manifest = read_manifest(tmp_path / "multi")
    assert manifest.counts == {"images": 24, "errors": 1}
    assert not (tmp_path / "multi" / "staging").exists()


def test_no_op_cli_run_does_not_import_torch(photos, tmp_path):
    import subprocess
    import sys

    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options())
    code = (
        "import sys\n"
        "from clipsearch.cli import main\n"
        f"sys.argv = ['clipsearch', 'index', {str(photos)!r}, '--index', {str(index_dir)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "indexed 0 new" in result.stdout and "TORCH False" in result.stdout


def test_a_run_that_never_committed_leaves_a_folder_queries_recognise(tmp_path):
    """A first run that failed (an offline model, Ctrl-C) before its first commit leaves its
    lock and staged rows: a query says there is no index yet, not "not a clipsearch index"."""
    index_dir = tmp_path / "own"
    with index_lock(index_dir):
        (index_dir / "staging").mkdir()
    result = run_cli("query", "a photo", "--index", str(index_dir), "--local")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no index at {index_dir} yet:")
    assert "clipsearch index" in result.stderr and len(result.stderr.splitlines()) == 1
    (index_dir / "notes.txt").write_text("somebody else's folder")
    other = run_cli("query", "a photo", "--index", str(index_dir), "--local")
    assert other.returncode == 2 and "is not a clipsearch index" in other.stderr
