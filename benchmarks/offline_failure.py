"""How long a command takes to say that a model cannot be downloaded (issue 29).

Runs each command with the code of two checkouts (``--old``, ``--new``), alternated, from a
scratch folder outside both (so that PYTHONPATH picks the code), with an empty Hugging Face
cache and an empty ONNX export cache: what a newcomer without network meets. Each run must
fail with exit code 2 and one ``error:`` line; the table gives the median wall time.

    git worktree add /tmp/old29 HEAD
    python benchmarks/offline_failure.py --old /tmp/old29 --new "$PWD" --rounds 5

On a machine with network, ``--simulate-offline`` sets HF_HUB_OFFLINE=1, which the hub probe
takes as "unreachable".
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

from PIL import Image

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"


def commands(scratch: Path) -> dict[str, list[str]]:
    photos = scratch / "photos"
    photos.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "red.png")
    labels = scratch / "labels.txt"
    labels.write_text("a red photo\na blue photo\n")
    return {
        f"info --model {DEFAULT_MODEL}": ["info", "--model", DEFAULT_MODEL],
        "info --model hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K": [
            "info",
            "--model",
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        ],
        "index PHOTOS (default model)": ["index", str(photos)],
        "query --image P --texts FILE (default model)": [
            "query",
            "--image",
            str(photos / "red.png"),
            "--texts",
            str(labels),
        ],
    }


def run_once(code: Path, args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "clipsearch", *args],
        env={**env, "PYTHONPATH": str(code)},
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    if result.returncode != 2 or len(lines) != 1 or "cannot be reached (offline)" not in lines[0]:
        raise SystemExit(
            f"{code}: clipsearch {' '.join(args)} did not fail as expected:\n"
            f"exit {result.returncode}\n{result.stderr[-2000:]}"
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the code before")
    parser.add_argument("--new", type=Path, required=True, help="checkout of the code after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--simulate-offline", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="offline-failure-") as tmp:
        scratch = Path(tmp)
        (scratch / "hf-cache").mkdir()
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(scratch / "hf-cache"),
            "CLIPSEARCH_CACHE": str(scratch / "clipsearch-cache"),
            "CLIPSEARCH_MODEL": "",
            "CLIPSEARCH_INDEX": "",
            "CLIPSEARCH_WARM": "0",
        }
        if options.simulate_offline:
            env["HF_HUB_OFFLINE"] = "1"
        runs = commands(scratch)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(options.rounds):
            for name, args in runs.items():
                for label, code in (("old", options.old), ("new", options.new)):
                    seconds = run_once(code.resolve(), args, env, scratch)
                    times.setdefault((name, label), []).append(seconds)

    print(f"{'command':<62} {'old s':>7} {'new s':>7}   (median of {options.rounds}; all runs)")
    for name in runs:
        old, new = times[(name, "old")], times[(name, "new")]
        every = " ".join(f"{x:.2f}" for x in old) + " | " + " ".join(f"{x:.2f}" for x in new)
        print(f"{name:<62} {statistics.median(old):7.2f} {statistics.median(new):7.2f}   {every}")


if __name__ == "__main__":
    main()
