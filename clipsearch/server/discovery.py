"""``INDEX/server.json``: tells ``clipsearch query`` that a server answers for this index.

Written by ``clipsearch serve`` once it listens, removed when it stops. It holds the
server's token, so it is the owner's alone (0600, whatever the umask), and a reader trusts
only a file of its own user. A server killed hard leaves the file behind: readers check that
its process is alive and that the server answers, and otherwise ignore the file. Standard
library only (the CLI imports this).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from clipsearch.store.layout import SERVER_FILE


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int
    index: str
    started_at: str
    token: str | None = None  # None: a server that asks for none (serve --no-auth)


def new_info(url: str, index_dir: Path, token: str | None) -> ServerInfo:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ServerInfo(url, os.getpid(), str(index_dir), now, token)


def write_info(index_dir: Path, info: ServerInfo) -> Path:
    """Write the file atomically (a reader never sees half of it), readable by its owner
    alone from its first byte."""
    # Only servers write: readers stay light.
    from clipsearch.base.access import OWNER_FILE, write_owner_only
    from clipsearch.base.durable import publishing

    path = index_dir / SERVER_FILE
    tmp = index_dir / f".{SERVER_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with publishing(tmp, path, mode=OWNER_FILE):
        write_owner_only(tmp, (json.dumps(asdict(info), indent=2) + "\n").encode())
    return path


def read_info(index_dir: Path) -> ServerInfo | None:
    """The file's contents, or None when absent, another user's, or not what a server
    writes (another user's file could send our queries to their server)."""
    try:
        with open(index_dir / SERVER_FILE, encoding="utf-8") as f:
            if hasattr(os, "getuid") and os.fstat(f.fileno()).st_uid != os.getuid():
                return None
            data = json.loads(f.read())
        token = data.get("token")
        info = ServerInfo(
            str(data["url"]),
            int(data["pid"]),
            str(data["index"]),
            data["started_at"],
            str(token) if token is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
