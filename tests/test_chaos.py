"""kill -9 `clipsearch index` at random moments, then re-commit, while readers query
(benchmarks/chaos.py, a short run): nothing survives a kill, nothing locks the index, no
reader ever fails, and the final catalog is exact."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parent.parent / "benchmarks" / "chaos.py"


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc: Linux")
def test_kills_at_random_moments_lose_nothing_and_break_no_reader():
    serve = importlib.util.find_spec("fastapi") is not None
    command = [sys.executable, str(CHAOS), "--kills", "8", "--commits", "3", "--images", "60"]
    result = subprocess.run(
        command if serve else [*command, "--no-serve"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["killed_with_decode_workers"] > 0  # so "no orphans" means something
    assert report["orphans"] == 0 and report["lockouts"] == 0
    assert report["commits_after_the_kills"] == 3  # re-commits with the readers querying
    assert report["reader_errors"] == {}, report["error_examples"]
    assert report["final"]["exact"] and report["final"]["ids_stable"], report["final"]
    assert report["queries"]["api"] > 0 and report["queries"]["cli"] > 0
    assert not serve or report["queries"]["serve"] > 0
    assert sum(report["landed"].values()) == 8
