"""Cold `clipsearch query` wall time on a 100k-image index, beside what it is made of.

    python benchmarks/query_latency.py [--n 100000] [--model random:ViT-B-32]

Embedding 100k real images with ViT-B-32 takes over an hour on this CPU, so the index is
fabricated: clustered random unit vectors written through the real catalog, vector-index and
manifest code, with the identity of the real model, so a real text query runs against it.
Measured in the same run: the whole command (process start to printed results), importing
torch + open_clip alone, loading the model, and a warm in-process search.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clipsearch import catalog, vectors
from clipsearch.manifest import Manifest, commit_manifest


def clustered_unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(8, n // 500), dim)).astype(np.float32)
    data = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def fabricate_index(directory: Path, n: int, identity: dict) -> None:
    dim = int(identity["dim"])
    embeddings = clustered_unit_vectors(n, dim)
    schema = catalog.catalog_schema(dim, "float16")
    now = datetime.now(timezone.utc)
    parts = []
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        rows = [
            {
                "id": i,
                "path": f"/photos/{i // 1000:03d}/img_{i:06d}.jpg",
                "size": 1_000_000 + i,
                "mtime_ns": 1_600_000_000_000_000_000 + i,
                "content_hash": f"{i:032x}",
                "width": 4000,
                "height": 3000,
                "format": "JPEG",
                "taken_at": None,
                "indexed_at": now,
            }
            for i in range(start, stop)
        ]
        table = catalog.rows_to_table(rows, embeddings[start:stop], schema)
        path = catalog.write_table(directory / catalog.CATALOG_DIR, "part", table)
        parts.append(path.relative_to(directory).as_posix())
    index, info = vectors.build(np.arange(n, dtype=np.int64), embeddings)
    (directory / "vectors").mkdir(exist_ok=True)
    vectors.save(index, directory / "vectors" / "index-000001.faiss")
    manifest = Manifest(
        model=identity,
        embedding_dim=dim,
        embedding_dtype="float16",
        snapshot=1,
        next_id=n,
        counts={"images": n, "errors": 0},
        catalog=parts,
    )
    manifest.vector_index = {"file": "vectors/index-000001.faiss", **info.__dict__}
    commit_manifest(directory, manifest)


def wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default="random:ViT-B-32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from clipsearch.model import Model
    from clipsearch.search import Index

    start = time.perf_counter()
    model = Model.load(args.model)
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "index"
        directory.mkdir()
        fabricate_index(directory, args.n, model.identity)
        cli = str(Path(sys.executable).with_name("clipsearch"))
        query = [cli, "query", "a photo of a dog", "--index", str(directory)]
        cold = wall(query, args.repeats)
        imports = wall([sys.executable, "-c", "import torch, open_clip"], args.repeats)
        index = Index.open(directory)
        index.search("warm-up", k=10)
        warm = []
        for text in ["a photo of a dog", "a red car", "two people on a beach"] * 5:
            t0 = time.perf_counter()
            index.search(text, k=10)
            warm.append(time.perf_counter() - t0)
    print(f"\n{args.n:,}-image index, {args.model} ({model.dim} dims), CPU")
    print("| what | time |\n| --- | ---: |")
    print(f'| cold `clipsearch query "a photo of a dog"`, wall | {cold:.2f} s |')
    print(f"| of which `import torch, open_clip` alone | {imports:.2f} s |")
    print(f"| model load ({args.model}, in process) | {load_seconds:.2f} s |")
    print(
        f"| warm `Index.search(text)` p50 (encode + search + lookup) | "
        f"{statistics.median(warm) * 1000:.0f} ms |"
    )


if __name__ == "__main__":
    main()
