"""Who may read an index: its owner alone, unless the owner shares its folder on purpose.

An index holds paths, embeddings and small copies of private photos, so a new index folder
is 0700 and every file written into it 0600, whatever the umask. The folder's mode is the
policy: a file written later gets the read permissions its folder grants (``chmod g+rx`` on
the folders shares new files with the group too), never more. Indexes written before this
rule (their manifest lacks ``file_modes``) are made owner-only by their next write.
Thumbnails, locks and ``server.json`` stay the owner's alone in any case
(``OWNER_FILE``): the freedesktop thumbnail specification asks that of thumbnail caches,
and ``server.json`` holds the server's token.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import TextIO

OWNER_DIR = 0o700
OWNER_FILE = 0o600
# The manifest key that says an index follows the rule above (storage writes it).
MODES_KEY = "file_modes"
MODES_VALUE = "folder"


def dir_mode_for(parent: Path) -> int:
    """A new folder's mode inside ``parent``: the owner's rwx, plus the read and search
    permissions ``parent`` grants its group and others."""
    return OWNER_DIR | (stat.S_IMODE(os.stat(parent).st_mode) & 0o055)


def file_mode_for(folder: Path) -> int:
    """A new file's mode in ``folder``: the owner's rw, plus read for whom ``folder`` lets
    read."""
    return OWNER_FILE | (stat.S_IMODE(os.stat(folder).st_mode) & 0o044)


def make_dir(path: Path, owner_only: bool = False) -> list[Path]:
    """Create ``path`` and its missing parents, each with its parent's read permissions at
    most (``owner_only``: 0700, for a new index folder and ``indexes/``, which lists the
    indexes' names); an existing folder is left as it is. The folders created, outermost
    first (a durable move fsyncs their parents)."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        mode = OWNER_DIR if owner_only else dir_mode_for(new.parent)
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
            new.mkdir()
            os.chmod(new, mode)  # mkdir's mode passes through the umask: set it exactly
    return missing[::-1]


def open_owner_only(path: Path) -> TextIO:
    """Open a file to read and append, creating it, as its owner's alone (a lock)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, OWNER_FILE)
    try:
        os.fchmod(descriptor, OWNER_FILE)  # an older file, or a umask-less mode: make it so
    except OSError:
        os.close(descriptor)
        raise
    return open(descriptor, "a+", encoding="utf-8")


def write_owner_only(path: Path, data: bytes) -> None:
    """Write (or overwrite) a file that is its owner's alone from its first byte: a
    thumbnail, ``server.json``, a page of thumbnails."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_FILE)
    with open(descriptor, "wb") as f:
        os.fchmod(f.fileno(), OWNER_FILE)  # os.open's mode passes through the umask
        f.write(data)


def tighten_unruled(index_dir: Path, manifest: dict | None) -> None:
    """Make an index written before the rule owner-only: the folder and every folder in it
    0700, every file 0600 (symbolic links are left alone). ``manifest`` is its committed
    manifest as JSON; one that carries ``file_modes`` follows the rule already, and its
    folder modes are the owner's choice."""
    if manifest is None or manifest.get(MODES_KEY) == MODES_VALUE:
        return
    os.chmod(index_dir, OWNER_DIR)
    for root, folders, files in os.walk(index_dir):
        for name in folders:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, OWNER_DIR)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with contextlib.suppress(FileNotFoundError):  # a reader's clean-up raced us
                    os.chmod(path, OWNER_FILE)
