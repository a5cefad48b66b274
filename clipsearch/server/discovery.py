"""``INDEX/server.json``: tells ``clipsearch query`` that a server answers for this index.

Written by ``clipsearch serve`` once it listens, removed when it stops. A server killed
hard leaves the file behind: readers check that its process is alive and that the server
answers, and otherwise ignore the file. Standard library only (the CLI imports this).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

SERVER_FILE = "server.json"


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int
    index: str
    started_at: str


def new_info(url: str, index_dir: Path) -> ServerInfo:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ServerInfo(url, os.getpid(), str(index_dir), now)


def write_info(index_dir: Path, info: ServerInfo) -> Path:
    """Write the file atomically (a reader never sees half of it)."""
    path = index_dir / SERVER_FILE
    from clipsearch.store.storage import publishing  # only servers write: readers stay light

    tmp = index_dir / f".{SERVER_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with publishing(tmp, path):
        tmp.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return path


def read_info(index_dir: Path) -> ServerInfo | None:
    """The file's contents, or None when absent or not what a server writes."""
    try:
        data = json.loads((index_dir / SERVER_FILE).read_text(encoding="utf-8"))
        info = ServerInfo(
            str(data["url"]), int(data["pid"]), str(data["index"]), data["started_at"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.url.startswith(("http://", "https://")) else None


def remove_info(index_dir: Path, info: ServerInfo) -> None:
    """Remove the file if it is still ours (a newer server may have replaced it)."""
    if read_info(index_dir) == info:
        (index_dir / SERVER_FILE).unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True
