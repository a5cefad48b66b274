"""A disk that fills up for real under `clipsearch index`: a small tmpfs in a private mount
namespace, filled to one level of free space after another (tests/full_disk.py drives it).
Whatever the write that meets the full disk (the lock's note, staged rows, a catalog part,
the vector index, the manifest), the run ends in one line, readers keep answering from the
snapshot before, and the same command finishes the job once there is room."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.bundled import DEMO_MODEL

DRIVER = Path(__file__).with_name("full_disk.py")


def _photos(root: Path) -> tuple[Path, Path]:
    first, more = root / "first", root / "more"
    for i in range(13):
        folder = first if i < 8 else more
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return first, more


def test_a_full_disk_loses_nothing_and_locks_nobody_out(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs of its own")
    first, more = _photos(tmp_path / "photos")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    # Root may mount in a new mount namespace; anyone else in a new user namespace as well.
    namespace = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-r", "-m"]
    script = (
        f'mount -t tmpfs -o size=4m none "{mount}" || exit 99; exec "{sys.executable}" '
        f'"{DRIVER}" "{mount}" "{tmp_path / "saved"}" "{first}" "{more}" "{DEMO_MODEL}"'
    )
    ran = subprocess.run([*namespace, "sh", "-c", script], capture_output=True, text=True)
    if ran.returncode == 99 or "unshare failed" in ran.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {ran.stderr.strip()[-200:]}")
    assert ran.returncode == 0, ran.stderr
    levels = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(levels) >= 8

    for level in levels:
        attempt, during = level["attempt"], level["query_while_full"]
        if attempt["rc"]:
            lines = attempt["stderr"].strip().splitlines()
            assert attempt["rc"] == 2 and "Traceback" not in attempt["stderr"], attempt
            assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1]
            assert "unchanged" in lines[-1]
            assert len(during["paths"]) == 8  # the snapshot before, whole
        # Searching a full disk's index works: nothing is written to answer.
        assert during["rc"] == 0, during["stderr"]
        assert len(during["paths"]) in (8, 13)
        # Freed, the same command finishes: each photo once, nothing half-written left.
        assert level["again"]["rc"] == 0, level["again"]["stderr"]
        assert sorted(level["query_after"]["paths"]) == sorted(
            str(p) for p in [*first.iterdir(), *more.iterdir()]
        )
        assert level["temporary_files"] == [] and level["staged"] == []
        if "cannot commit index" in attempt["stderr"]:  # the rows it embedded were kept
            assert "5 embedded by an interrupted run, re-used" in level["again"]["stdout"]
            assert "files to embed" not in level["again"]["stderr"]

    others = levels[0]["others"]
    assert len(others) == 3
    for name, result in others.items():
        lines = result["stderr"].strip().splitlines()
        assert result["rc"] != 0 and "Traceback" not in result["stderr"], (name, result)
        assert lines[-1].startswith("error: cannot write") and "No space left" in lines[-1]

    failed = [level["attempt"]["stderr"] for level in levels if level["attempt"]["rc"]]
    # The disk filled while staging rows, while committing them, and (with room) not at all.
    assert any("cannot save embedded rows" in e for e in failed)
    assert any("cannot commit index" in e for e in failed)
    assert levels[-1]["attempt"]["rc"] == 0
