"""`clipsearch index` on a disk that really fills up; run by tests/test_full_disk.py inside a
private mount namespace where MOUNT is a small tmpfs of its own.

    python tests/full_disk.py MOUNT SAVED FIRST MORE MODEL

Indexes FIRST into MOUNT/index and keeps a copy of that index in SAVED (outside the tmpfs).
Then, for each amount of free space in LEAVE: the index as it was after FIRST, the disk
filled up to that amount, `clipsearch index FIRST MORE`, a query (with no room at all, the
other commands that write too), the disk freed, the same `clipsearch index` again, a query.
Prints one JSON object per amount of free space.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Bytes left free: from nothing to more than a commit of five images needs (~25 KB).
LEAVE = [0, 4096, 8192, 12288, 16384, 20480, 24576, 32768, 65536]


def clipsearch(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "clipsearch", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def query(index: Path) -> dict:
    result = clipsearch("query", "a photo", "--index", index, "-k", "50", "--json")
    paths = [hit["path"] for hit in json.loads(result.stdout)] if result.returncode == 0 else []
    return {"rc": result.returncode, "stderr": result.stderr, "paths": paths}


def fill(mount: Path, leave: int) -> None:
    """Write a file that leaves ``leave`` bytes of the filesystem free."""
    stat = os.statvfs(mount)
    with open(mount / "filler", "wb") as filler:
        filler.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))


def main() -> None:
    mount, saved, first, more, model = sys.argv[1:]
    index = Path(mount) / "index"
    made = clipsearch("index", first, "--index", index, "--model", model)
    if made.returncode:
        raise SystemExit(f"the first run failed: {made.stderr}")
    shutil.copytree(index, saved)
    for leave in LEAVE:
        shutil.rmtree(index)
        shutil.copytree(saved, index)
        fill(Path(mount), leave)
        attempt = clipsearch("index", first, more, "--index", index, "--model", model)
        during = query(index)
        others = {  # the other commands that write, on a disk with no room at all
            " ".join(args): clipsearch(*args, "--index", index)
            for args in (
                ["classify", "--labels", "cat,dog", "--write-tags"],
                ["duplicates", "--html", f"{mount}/page.html"],
                ["rebuild"],
            )
            if leave == 0
        }
        (Path(mount) / "filler").unlink()
        again = clipsearch("index", first, more, "--index", index, "--model", model)
        after = query(index)
        report = {
            "leave": leave,
            "attempt": {"rc": attempt.returncode, "stderr": attempt.stderr},
            "query_while_full": during,
            "others": {
                name: {"rc": r.returncode, "stderr": r.stderr} for name, r in others.items()
            },
            "again": {"rc": again.returncode, "stderr": again.stderr, "stdout": again.stdout},
            "query_after": after,
            "temporary_files": [str(p) for p in index.rglob("*.tmp")],
            "staged": [str(p) for p in (index / "staging").rglob("*") if p.is_file()],
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
