"""The background server that keeps an index warm between ``clipsearch query`` runs.

A query that had to load the model itself starts ``clipsearch serve --port 0 --idle-exit
SECONDS`` for its index, detached; the next query finds it through ``INDEX/server.json``
and answers without loading anything. The server follows new snapshots as any server does,
exits by itself once idle for SECONDS, and at most one such server runs per index (it
holds ``INDEX/.idle-server.lock``). Standard library only: the query CLI imports this.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def start_background_server(
    index_dir: Path, idle_seconds: float, engine: str = "auto", device: str = "auto"
) -> bool:
    """Start the background server for ``index_dir`` unless it cannot run there; True when
    one was started (it exits at once if another holds the index's lock)."""
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):
        return False  # the serve extra is not installed
    if not os.access(index_dir, os.W_OK):
        return False  # it could not announce itself in server.json
    command = [
        sys.executable,
        "-m",
        "clipsearch",
        "serve",
        "--index",
        str(index_dir),
        "--port",
        "0",
        "--idle-exit",
        str(idle_seconds),
        "--engine",
        engine,
        "--device",
        device,
        "--log-level",
        "warning",
    ]
    try:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not killed by the terminal's Ctrl-C or hang-up
            close_fds=True,
        )
    except OSError:
        return False
    return True
