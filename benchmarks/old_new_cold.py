"""Cold commands of two checkouts, alternated round by round (the machine's noise hits both
alike): `import clipsearch`, `clipsearch index` of the demo's 300 photos into a new index,
and `clipsearch query --local` on it (no server: the model loaded, the snapshot read).

One virtual environment runs both (this one); PYTHONPATH picks the code, and the commands
run in a temporary folder, outside both checkouts (the current folder would win).

    git worktree add /tmp/old OLD_COMMIT
    python benchmarks/old_new_cold.py /tmp/old . --rounds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "import": ["-c", "import clipsearch"],
    "index": ["-m", "clipsearch", "index", "{photos}", "--index", "{index}",
              "--model", "bundled:cifar10-small"],
    "query": ["-m", "clipsearch", "query", "a photo of a dog", "-k", "5", "--local",
              "--index", "{index}"],
}  # fmt: skip


def timed(code: Path, args: list[str], work: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(code))
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        demo = ["-m", "clipsearch", "demo", "--dir", "demo"]
        subprocess.run([sys.executable, *demo], cwd=work, check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(checkouts["new"])))  # fmt: skip
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, code in checkouts.items():
                index = work / f"index-{name}"
                subprocess.run(["rm", "-rf", str(index)], check=True)
                for command, template in COMMANDS.items():
                    filled = [a.format(photos=work / "demo/photos", index=index) for a in template]
                    times.setdefault((name, command), []).append(timed(code, filled, work))
    for command in COMMANDS:
        old, new = (statistics.median(times[name, command]) for name in checkouts)
        print(f"{command:7s} old {old:.3f} s  new {new:.3f} s  new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
