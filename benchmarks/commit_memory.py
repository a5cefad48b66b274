"""What a `clipsearch index` run holds in memory when it commits N embedded images.

    python benchmarks/commit_memory.py --n 1000000 [--dir DIR] [--max-memory 400M]

Makes N small files (placeholder bytes, never decoded) in 1,000 folders and stages a row for
each, as an interrupted run leaves them: random embeddings of the bundled model's width
under `staging/` with its `state.json`. Then `clipsearch index` runs in a subprocess: it
scans the N files, finds every one staged, embeds nothing, and commits (catalog parts, the
vector index). The last line printed is one JSON object: n, dim, staged embedding bytes
(what a commit that held every staged row would hold at least), the run's seconds and peak
RSS (VmHWM), and the catalog parts written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import CLI_REPORTING_PEAK
from synthetic_index import catalog_part, clustered

from clipsearch.model import Model
from clipsearch.model.identity import ModelIdentity
from clipsearch.store import catalog
from clipsearch.store.manifest import read_manifest
from clipsearch.store.staging import Staging

MODEL = "bundled:cifar10-small"
STAGED_PART_ROWS = 512  # what `clipsearch index --checkpoint-every` stages by default
FOLDERS = 1000


def make_files(root: Path, n: int) -> list[Path]:
    """N distinct small files, kept when already there."""
    paths = [root / f"{i % FOLDERS:03d}" / f"{i:07d}.jpg" for i in range(n)]
    if (root / "complete").exists():
        return paths
    for folder in range(min(n, FOLDERS)):
        (root / f"{folder:03d}").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        path.write_bytes(i.to_bytes(8, "little"))
    (root / "complete").touch()
    return paths


def stage(index_dir: Path, paths: list[Path], identity: ModelIdentity) -> None:
    """Staged rows for every file, as an interrupted first run would have left them."""
    staging = Staging(index_dir, 0, identity)
    schema = catalog.catalog_schema(identity.dim, "float16")
    for begin in range(0, len(paths), STAGED_PART_ROWS):
        chunk = paths[begin : begin + STAGED_PART_ROWS]
        ids = np.arange(begin, begin + len(chunk), dtype=np.int64)
        table = catalog_part(ids, clustered(len(ids), identity.dim, seed=begin), schema)
        stats = [p.stat() for p in chunk]
        table = table.set_column(1, "path", pa.array([str(p) for p in chunk]))
        table = table.set_column(2, "size", pa.array([s.st_size for s in stats], pa.int64()))
        mtimes = pa.array([s.st_mtime_ns for s in stats], pa.int64())
        table = table.set_column(3, "mtime_ns", mtimes)
        table = table.set_column(4, "content_hash", pa.nulls(len(chunk), pa.string()))
        staging.write(table.cast(schema))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--dir", type=Path, help="for the files and the index (default: temp)")
    parser.add_argument("--max-memory", default="400M", help="for the vector index")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="clipsearch-commit-"))
    start = time.perf_counter()
    paths = make_files(work / "photos", args.n)
    index_dir = work / "index"
    if index_dir.exists():
        raise SystemExit(f"{index_dir} exists: remove it first (the run commits into it)")
    identity = Model.load(MODEL).identity
    stage(index_dir, paths, identity)
    print(f"files and staging ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    start = time.perf_counter()
    command = [
        *("index", str(work / "photos"), "--index", str(index_dir), "--model", MODEL),
        *("--max-memory", args.max_memory, "--json"),
    ]
    run = subprocess.run(
        [sys.executable, "-c", CLI_REPORTING_PEAK, *command],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"clipsearch index failed: {run.stderr[-2000:]}")
    summary = json.loads(run.stdout)
    peak_kb = int(run.stderr.split("VmHWM_KB")[-1].split()[0])
    manifest = read_manifest(index_dir)
    result = {
        "n": args.n,
        "dim": identity.dim,
        "staged_embedding_mib": round(args.n * identity.dim * 2 / 2**20),
        "embedded": summary["embedded"],
        "resumed": summary["resumed"],
        "run_s": round(seconds, 1),
        "run_peak_rss_mib": peak_kb // 1024,
        "catalog_parts": len(manifest.catalog),
        "vector_index": manifest.vector_index.info.kind,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
