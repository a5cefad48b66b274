"""The background server a query leaves behind: it answers the next query, follows
re-indexing, is the only one of its index, and exits by itself once idle. Real processes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.server.discovery import read_info

from .conftest import MODEL_MODULES, TINY, run_cli, run_cli_watching_imports

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")

IDLE_SECONDS = 6


def write_photos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        noise = np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"{name}.png")


def query(cwd: Path, *args: str, warm: float) -> tuple[list[dict], bool]:
    """(rows, whether this process loaded a model) of `clipsearch query ... --json`."""
    env = {"CLIPSEARCH_WARM": str(warm)}
    result, heavy = run_cli_watching_imports("query", *args, "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), bool(heavy & MODEL_MODULES)


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may be slow to reap orphans)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_query_leaves_a_warm_server_that_exits_when_idle(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, ["a", "b", "c"])
    assert run_cli("index", str(photos), "-m", TINY, cwd=tmp_path).returncode == 0
    index_dir = tmp_path / "indexes" / "default"

    off, loaded = query(tmp_path, "a photo", "-k", "2", warm=0)
    assert loaded and len(off) == 2
    time.sleep(1)
    assert read_info(index_dir) is None  # turned off: nothing started

    first, loaded = query(tmp_path, "a photo", "-k", "2", warm=IDLE_SECONDS)
    assert loaded  # searched here, then started the server
    assert wait_for(lambda: read_info(index_dir) is not None)
    server = read_info(index_dir)
    second, loaded = query(tmp_path, "a photo", "-k", "2", warm=IDLE_SECONDS)
    assert not loaded  # answered by the server: no model in this process
    assert [r["path"] for r in second] == [r["path"] for r in first]

    # Only one background server per index: another query does not start a second one.
    query(tmp_path, "a photo", "-k", "2", "--local", warm=IDLE_SECONDS)
    time.sleep(2)
    servers = subprocess.run(["pgrep", "-f", f"serve --index {index_dir}"], capture_output=True)
    assert len(servers.stdout.split()) == 1, servers.stdout

    # A re-index is seen at once: no stale snapshot.
    write_photos(photos, ["d"])
    assert run_cli("index", str(photos), cwd=tmp_path).returncode == 0
    rows, loaded = query(tmp_path, "a photo", "-k", "10", warm=IDLE_SECONDS)
    assert not loaded and len(rows) == 4

    # Idle: it exits by itself, and takes its server.json with it.
    assert wait_for(lambda: not running(server.pid), timeout=IDLE_SECONDS + 15)
    assert read_info(index_dir) is None
