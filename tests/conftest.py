"""Shared fixtures: a tiny real model, real data from ../shared when present, CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions hold: none for a normal user; for root,
    who reads anything, setpriv(1) dropping the capabilities that bypass them."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root reads anything, and setpriv(1) is not here to take that away")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


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


# The real CLI in a fresh process that, as it exits, says which heavy modules it imported.
WATCH_IMPORTS = (
    "import sys\n"
    "from clipsearch.cli import main\n"
    "sys.argv = ['clipsearch', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    watched = {'torch', 'open_clip', 'torchvision', 'onnxruntime', 'ftfy', 'PIL', 'duckdb'}\n"
    "    heavy = watched & set(sys.modules)\n"
    "    print('IMPORTED', ','.join(sorted(heavy)) or '-', file=sys.stderr)\n"
)
MODEL_MODULES = frozenset({"torch", "onnxruntime"})  # either engine: a model was loaded
TORCH_MODULES = frozenset({"torch", "open_clip", "torchvision"})


def imported(stderr: str) -> set[str]:
    """The heavy modules a WATCH_IMPORTS process reported."""
    lines = [line for line in stderr.splitlines() if line.startswith("IMPORTED ")]
    assert lines, f"the process did not report its imports:\n{stderr[-1500:]}"
    return set(lines[-1].removeprefix("IMPORTED ").split(",")) - {"-"}


def run_cli_watching_imports(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 300
) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", WATCH_IMPORTS, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, imported(result.stderr)


# `clipsearch ARGS` made to pause at one call ("module:Name.attribute"), before it or after
# it: it says "paused" and waits there for the test to kill it, whatever the machine's speed.
_PAUSED_CLI = """
import functools, importlib, sys
from clipsearch.cli import main

where, when = sys.argv.pop(1), sys.argv.pop(1)
module, _, path = where.partition(":")
*parents, name = path.split(".")
owner = importlib.import_module(module)
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)

@functools.wraps(original)
def paused(*args, **kwargs):
    if when == "after":
        original(*args, **kwargs)
    print("paused", flush=True)
    sys.stdin.readline()
    raise SystemExit("not killed")

setattr(owner, name, paused)
main()
"""


def paused_cli(where: str, *args: str, after: bool = False, stderr=None) -> subprocess.Popen:
    """``clipsearch ARGS`` in a child process that pauses at ``where`` (before the call, or
    ``after`` it); read "paused\n" from its stdout, then kill it."""
    when = "after" if after else "before"
    return subprocess.Popen(
        [sys.executable, "-c", _PAUSED_CLI, where, when, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
    )


def wait_for_server(index_dir: Path, process: subprocess.Popen, timeout: float = 60.0):
    """The ServerInfo a `clipsearch serve` process announced for ``index_dir``, or None if
    it exited or did not announce itself in time."""
    from clipsearch.server.discovery import read_info

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        info = read_info(index_dir)
        if info is not None and info.pid == process.pid:
            return info
        time.sleep(0.1)
    return None


# -- a live server and a real browser --------------------------------------------------------

# Where a Chromium may be: the system's (Debian: apt-get install chromium), else the one
# Playwright downloads (python -m playwright install chromium).
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 90.0


def serve_command(index_dir: Path) -> list[str]:
    """`clipsearch serve` for ``index_dir`` on a free port."""
    serve = [sys.executable, "-m", "clipsearch", "serve", "--index", str(index_dir)]
    return [*serve, "--port", "0", "--log-level", "warning"]


def browser_or_skip():
    """(Playwright's sync_playwright, a Chromium to drive), or a skip saying how to get one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    chromium = find_chromium(sync_playwright)
    if chromium is None:
        pytest.skip(
            "no Chromium found: apt-get install -y chromium, or python -m playwright install "
            "chromium"
        )
    return sync_playwright, chromium


def find_chromium(sync_playwright) -> Path | None:
    for name in SYSTEM_CHROMIUMS:
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        with sync_playwright() as playwright:
            bundled = Path(playwright.chromium.executable_path)
    except Exception:  # Playwright's driver could not start: no browser from it either
        return None
    return bundled if bundled.exists() else None


def wait_js(page, script: str, timeout: float = 20.0) -> None:
    """Poll a JavaScript condition (page.wait_for_function would eval, which the CSP forbids)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(script):
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")
