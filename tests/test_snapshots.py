"""Readers and writers of one index at the same time: snapshots readers can rely on.

A commit retires the files of the snapshot before instead of deleting them, so a reader that
opened that snapshot a moment ago still finds them; long-lived readers move to the newest
snapshot. These tests race real processes against real commits (kills: test_chaos.py).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.query.search import Index
from clipsearch.store import storage
from clipsearch.store.manifest import read_manifest

from .conftest import TINY, run_cli


def _photos(folder: Path, start: int, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.png"
        )


def _options() -> IndexOptions:
    return IndexOptions(workers=0, batch_size=16)


def test_a_commit_keeps_the_files_of_the_snapshot_before_for_its_readers(tmp_path, monkeypatch):
    photos, index_dir = tmp_path / "photos", tmp_path / "index"
    _photos(photos, 0, 6)
    update_index([photos], index_dir, TINY, _options())
    first = read_manifest(index_dir)
    reader = Index.open(index_dir)  # holds the first snapshot
    stale = Index.open(index_dir)  # holds it too, and reads nothing until the end
    _photos(photos, 6, 4)
    update_index([photos], index_dir, TINY, _options())
    second = read_manifest(index_dir)
    assert first.files() - second.files()  # the commit replaced files...
    assert set(second.retired) == first.files() - second.files()
    for name in first.files():  # ...and left them for readers of the first snapshot
        assert (index_dir / name).is_file() != (name in second.retired)
        assert (index_dir / "retired" / name).is_file() == (name in second.retired)
    query = np.ones(128, np.float32)
    assert len(reader.search(query, k=20)) == 6  # the old snapshot, whole
    assert reader.refresh() and len(reader.search(query, k=20)) == 10

    # Past the grace period, the next commit deletes them, and a reader still on the first
    # snapshot moves to the newest one instead of failing.
    monkeypatch.setattr(storage, "RETIRED_GRACE_SECONDS", 0)
    (photos / "0000.png").unlink()
    update_index([photos], index_dir, TINY, _options())
    third = read_manifest(index_dir)
    expired = first.files() - second.files()  # retired by the second commit, long enough
    assert not third.retired.keys() & expired
    for name in expired:
        assert not (index_dir / name).exists() and not (index_dir / "retired" / name).exists()
    for name in third.retired:  # what the third commit replaced waits its grace period
        assert (index_dir / "retired" / name).is_file()
    assert len(stale.search(query, k=20)) == 9


def test_readers_never_fail_while_an_index_is_recommitted(tmp_path):
    """Processes and threads query in a loop while `clipsearch index` commits ten times."""
    photos, index_dir = tmp_path / "photos", tmp_path / "index"
    _photos(photos, 0, 8)
    assert run_cli("index", str(photos), "--index", str(index_dir), "-m", TINY).returncode == 0
    stop = threading.Event()
    failures: list[str] = []
    searches = [0]

    def api_reader() -> None:
        live = Index.open(index_dir)  # a long-lived reader, as `clipsearch serve` holds
        while not stop.is_set():
            try:
                fresh = Index.open(index_dir)
                fresh.search(np.ones(128, np.float32), k=5, columns=["width"])
                live.refresh()
                live.search(np.ones(128, np.float32), k=5)
                searches[0] += 1
            except Exception as exc:  # any error at all is a failure of the snapshot promise
                failures.append(f"api: {type(exc).__name__}: {exc}")

    cli_runs: list[subprocess.CompletedProcess] = []

    def cli_reader() -> None:
        while not stop.is_set():
            cli_runs.append(
                run_cli("query", "a photo", "--index", str(index_dir), "--local", "-k", "3")
            )

    readers = [threading.Thread(target=api_reader), threading.Thread(target=cli_reader)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(10):
            _photos(photos, 8 + 3 * round_, 3)
            if round_ % 3 == 2:
                (photos / f"{round_:04d}.png").unlink()  # removals rewrite catalog parts
            result = run_cli("index", str(photos), "--index", str(index_dir))
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        for thread in readers:
            thread.join(timeout=120)
    assert read_manifest(index_dir).snapshot == 11
    assert searches[0] >= 10 and len(cli_runs) >= 3
    failures += [f"cli: {r.stderr.strip()}" for r in cli_runs if r.returncode != 0]
    assert not failures, failures[:5]
