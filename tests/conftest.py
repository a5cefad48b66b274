"""Shared fixtures: a tiny real model, real data from ../shared when present, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CLIPSEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY = "random:clipsearch-tiny"


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory) -> Path:
    """ONNX exports go to a folder of this test session (subprocesses inherit it), never
    to the user's cache."""
    path = tmp_path_factory.mktemp("export-cache")
    os.environ["CLIPSEARCH_CACHE"] = str(path)
    # No background servers left behind by the suite's queries (the test of them asks).
    os.environ["CLIPSEARCH_WARM"] = "0"
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny model in the torch engine (training, saving and the reference numbers)."""
    from clipsearch.model import Model

    return Model.load(TINY, engine="torch")


@pytest.fixture(scope="session")
def tiny_onnx():
    """The same weights in the onnx engine (exported once into the session's cache)."""
    from clipsearch.model import Model

    return Model.load(TINY, engine="onnx")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (clone beside ../shared to run this)")
    return SHARED_DATA


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 300
):
    """Run the real console entry point in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
