"""An index is its owner's alone: folders 0700 and files 0600 whatever the umask, older
indexes tightened by their next write, and shared on purpose when the owner opens its
folders. Real index runs, a real background server and real thumbnails."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.base.access import MODES_KEY
from clipsearch.store.layout import SERVER_FILE

from .conftest import TINY, run_cli, wait_for_server


def _photos(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        Image.new("RGB", (40, 32), (40 * i % 256, 90, 200 - 30 * i % 200)).save(folder / f"{i}.png")
    return folder


def _modes(root: Path) -> dict[str, int]:
    """Every folder and file under ``root`` (itself included) → its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.stat().st_mode)
    return found


def _under_umask(umask: int, *args: str) -> list[str]:
    """The command line of the real CLI in a process started under ``umask``."""
    command = f'umask {umask:03o} && exec {sys.executable} -m clipsearch "$@"'
    return ["bash", "-c", command, "clipsearch", *args]


def _with_umask(umask: int, *args: str, cwd: Path):
    return subprocess.run(
        _under_umask(umask, *args), cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _assert_owner_only(root: Path) -> None:
    modes = _modes(root)
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert not loose, f"not the owner's alone: {loose}"


def test_a_new_index_is_the_owners_alone_whatever_the_umask(tmp_path):
    photos = _photos(tmp_path / "photos", 4)
    # The default index: indexes/ (which lists the names of indexes) is made too.
    result = _with_umask(0o000, "index", str(photos), "--model", TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_owner_only(tmp_path / "indexes")
    index_dir = tmp_path / "indexes" / "default"
    names = set(_modes(index_dir))
    assert {"manifest.json", ".lock"} <= names and any(n.startswith("catalog/") for n in names)
    assert any(n.startswith("vectors/") for n in names)
    # A page of hits inlines small copies of the photos: the owner's alone too.
    page = tmp_path / "hits.html"
    result = _with_umask(0o000, "query", "a photo", "--local", "--html", str(page), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data:image/" in page.read_text() and stat.S_IMODE(page.stat().st_mode) == 0o600


def test_the_background_server_announces_itself_owner_only(tmp_path):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    photos = _photos(tmp_path / "photos", 3)
    index_dir = tmp_path / "index"
    assert run_cli("index", str(photos), "--index", str(index_dir), "--model", TINY).returncode == 0
    process = subprocess.Popen(
        _under_umask(0o000, "serve", "--index", str(index_dir), "--port", "0", "--idle-exit", "60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = wait_for_server(index_dir, process)
        assert info is not None, process.communicate(timeout=30)[1]
        assert info.token and len(info.token) >= 32
        _assert_owner_only(index_dir)  # server.json and .idle-server.lock included
        assert {SERVER_FILE, ".idle-server.lock"} <= set(_modes(index_dir))
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_thumbnails_are_the_owners_alone(tmp_path):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    from clipsearch.query.search import Index
    from clipsearch.server.thumbnails import ThumbnailCache

    photos = _photos(tmp_path / "photos", 2)
    index_dir = tmp_path / "index"
    assert run_cli("index", str(photos), "--index", str(index_dir), "--model", TINY).returncode == 0
    rows = Index.open(index_dir).snapshot.table(["id", "path", "size", "mtime_ns"]).to_pylist()
    cache = ThumbnailCache(index_dir / "thumbnails", 1 << 20)
    (index_dir / "thumbnails").mkdir(mode=0o755)  # as an older clipsearch made it
    os.chmod(index_dir / "thumbnails", 0o755)
    before = os.umask(0)
    try:
        for row in rows:
            cache.get(row, 256)
    finally:
        os.umask(before)
    assert len(list((index_dir / "thumbnails").glob("*.jpg"))) == 2
    _assert_owner_only(index_dir / "thumbnails")


def _open_up(root: Path, folders: int, files: int) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, folders if path.is_dir() else files)


def test_an_older_index_is_tightened_by_its_next_write(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    index_dir = tmp_path / "index"
    assert run_cli("index", str(photos), "--index", str(index_dir), "--model", TINY).returncode == 0
    # As written before owner-only files: the umask's modes and no file_modes in the manifest.
    manifest = json.loads((index_dir / "manifest.json").read_text())
    del manifest[MODES_KEY]
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    _open_up(index_dir, 0o755, 0o644)
    _photos(photos, 1, start=3)
    result = run_cli("index", str(photos), "--index", str(index_dir), "--model", TINY)
    assert result.returncode == 0, result.stderr
    _assert_owner_only(index_dir)
    assert json.loads((index_dir / "manifest.json").read_text())[MODES_KEY] == "folder"


def test_an_index_shared_on_purpose_stays_shared(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    index_dir = tmp_path / "index"
    assert run_cli("index", str(photos), "--index", str(index_dir), "--model", TINY).returncode == 0
    _open_up(index_dir, 0o750, 0o640)  # what indexes/README.md says: chmod -R g+rX INDEX
    before = set(_modes(index_dir))
    time.sleep(0.01)
    _photos(photos, 2, start=3)
    result = _with_umask(
        0o077, "index", str(photos), "--index", str(index_dir), "--model", TINY, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    modes = _modes(index_dir)
    new = {name: oct(mode) for name, mode in modes.items() if name not in before}
    assert any(n.startswith("catalog/") for n in new) and any(n.startswith("vectors/") for n in new)
    for name, mode in modes.items():
        if name == ".lock":
            assert mode == 0o600  # a lock is nobody else's business
        else:
            assert mode == (0o750 if (index_dir / name).is_dir() else 0o640), (name, oct(mode))
