"""An index of N images at scale: streaming build, memory-mapped search, filters, cold CLI.

    python benchmarks/scale.py --n 1000000 [--dim 512] [--max-memory 1.5G] [--dir DIR]

1. writes N clustered synthetic unit vectors (two-level clusters: 1,024 topics of 64
   sub-topics; a query's true neighbours are the nearest members of its sub-topic) as a
   committed index, through the real catalog and manifest code, a chunk at a time (never
   all N in memory), with no vector index yet;
2. builds the vector index with the product's own command, `clipsearch rebuild`, in a
   subprocess (build time, its peak RSS);
3. finds the exact top 10 of 200 fresh queries (new draws from the same clusters, not
   database rows) over the stored float16 vectors, chunk by chunk;
4. in a fresh process that opens the index through `clipsearch.Index` (the read path of the
   CLI, API and server): one query at a time, warm, unfiltered and with DuckDB filters
   matching 1% and 10% of the rows; that process's peak RSS;
5. times a whole `clipsearch query` process (`random:ViT-B-32`'s text tower; dim 512 only).

The last line printed is one JSON object with the figures. The index is kept in --dir
(re-used by a later run with the same N and dim when the catalog is complete).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_index import catalog_part, commit_first_snapshot

from clipsearch.model.identity import ModelIdentity
from clipsearch.store import catalog, layout, vectors
from clipsearch.store.manifest import read_manifest

TOPICS, SUBTOPICS = 1024, 64
CHUNK = 100_000
K = 10
FILTERS = {"1%": "width < 377", "10%": "width < 888"}  # width is uniform in [320, 6000)
MODEL = "random:ViT-B-32"  # a 512-dim model, for the cold CLI query


class Clusters:
    """Two-level clustered unit vectors, reproducible chunk by chunk."""

    def __init__(self, dim: int) -> None:
        rng = np.random.default_rng(0)
        self.dim = dim
        self.topics = rng.standard_normal((TOPICS, dim), dtype=np.float32)
        self.topics /= np.linalg.norm(self.topics, axis=1, keepdims=True)
        self.offsets = rng.standard_normal((TOPICS * SUBTOPICS, dim), dtype=np.float32)
        self.offsets *= 0.8 / np.sqrt(dim)

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        sub = rng.integers(0, TOPICS * SUBTOPICS, n)
        x = self.topics[sub // SUBTOPICS] + self.offsets[sub]
        x += rng.standard_normal((n, self.dim), dtype=np.float32) * (0.5 / np.sqrt(self.dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def write_catalog(index_dir: Path, n: int, dim: int) -> None:
    """A committed index of n rows without a vector index; kept when already complete."""
    manifest_path = index_dir / "manifest.json"
    if manifest_path.exists():
        old = read_manifest(index_dir)
        if old.counts["images"] == n and old.embedding_dim == dim:
            print(f"re-using the catalog of {n:,} rows in {index_dir}", file=sys.stderr)
            return
        raise SystemExit(f"{index_dir} holds another index: remove it or choose another --dir")
    identity = _identity(dim)
    schema = catalog.catalog_schema(dim, "float16")
    clusters = Clusters(dim)
    parts = []
    start = time.perf_counter()
    for begin in range(0, n, CHUNK):
        ids = np.arange(begin, min(n, begin + CHUNK), dtype=np.int64)
        table = catalog_part(ids, clusters.draw(len(ids), seed=begin // CHUNK + 1), schema)
        parts.append(catalog.write_new_table(index_dir, layout.CATALOG_DIR, "part", table))
        done = begin + len(ids)
        if done % (10 * CHUNK) == 0 or done == n:
            rate = done / (time.perf_counter() - start)
            print(f"catalog: {done:,}/{n:,} rows ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    commit_first_snapshot(index_dir, identity, parts, n)  # no vector index yet


def _identity(dim: int) -> ModelIdentity:
    if dim == 512:
        from clipsearch.model import Model

        return Model.load(MODEL).identity
    return ModelIdentity(f"synthetic:{dim}", None, "synthetic", dim, 224, (0.5,) * 3, (0.5,) * 3)


# The CLI in a process that reports its own peak RSS as it exits. VmHWM, not ru_maxrss:
# Linux carries ru_maxrss across fork and exec, so a child would report its parent's peak.
HIGH_WATER = "open('/proc/self/status').read().split('VmHWM:')[1].split()[0]"
CLI_REPORTING_PEAK = f"""
import atexit, sys
atexit.register(lambda: print("VmHWM_KB", {HIGH_WATER}, file=sys.stderr))
from clipsearch.cli import main
sys.argv = ["clipsearch", *sys.argv[1:]]
main()
"""


def build(index_dir: Path, max_memory: str | None) -> tuple[float, float]:
    """`clipsearch rebuild` in a subprocess: seconds and peak RSS (MiB)."""
    args = ["rebuild", "--index", str(index_dir), "--no-compact", "--json"]
    if max_memory:
        args += ["--max-memory", max_memory]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CLI_REPORTING_PEAK, *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"rebuild failed: {result.stderr}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("VmHWM_KB ")]
    print(result.stdout, file=sys.stderr)
    return seconds, int(peak[-1].split()[1]) / 1024


def exact_top_k(index_dir: Path, queries: np.ndarray) -> np.ndarray:
    """Exact top K ids of each query over the stored vectors, merged chunk by chunk."""
    manifest = read_manifest(index_dir)
    nearest = vectors.RunningTopK(len(queries), K)
    for ids, stored in catalog.iter_embeddings(index_dir, manifest.catalog):
        nearest.merge(*vectors.exact_top_k(queries, stored, K), ids)
    return nearest.ids


QUERY_PROCESS = """
import json, sys, time
import numpy as np
from clipsearch import Index

index = Index.open(sys.argv[1])
queries = np.load(sys.argv[2])
where = sys.argv[3] or None
for q in queries[-5:]:
    index.search(q, k=10)  # the footers, the first session
out = {"found": [], "cold_ms": [], "ms": []}
for key in ("cold_ms", "ms"):  # a first pass touches the lists; the second runs warm
    for q in queries[:-5]:
        start = time.perf_counter()
        hits = index.search(q, k=10, where=where)
        out[key].append((time.perf_counter() - start) * 1000)
        if key == "ms":
            out["found"].append([h.id for h in hits])
status = open("/proc/self/status").read()
out["peak_rss_mib"] = int(HIGH_WATER) / 1024
# Resident memory of its own (not the mapped index file's pages, which are the page cache's,
# shared with other readers and given back under memory pressure).
out["private_rss_mib"] = int(status.split("RssAnon:")[1].split()[0]) / 1024
print(json.dumps(out))
""".replace("HIGH_WATER", HIGH_WATER)


def query(index_dir: Path, queries: np.ndarray, where: str = "") -> dict:
    """One query at a time in a fresh process that opens the index: latencies, hits, peak RSS.
    With ``where``, the first query runs the filter; later ones re-use its result."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queries.npy"
        np.save(path, queries)
        result = subprocess.run(
            [sys.executable, "-c", QUERY_PROCESS, str(index_dir), str(path), where],
            capture_output=True,
            text=True,
        )
    if result.returncode:
        raise SystemExit(f"the query process failed: {result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cold_cli_query(index_dir: Path) -> float | None:
    if read_manifest(index_dir).model.spec != MODEL:
        return None
    env = {**os.environ, "CLIPSEARCH_WARM": "0"}
    command = [
        sys.executable,
        "-m",
        "clipsearch",
        "query",
        "a photo of a dog",
        "--index",
        str(index_dir),
        "-k",
        "10",
        "--local",
    ]
    subprocess.run(command, env=env, capture_output=True, check=True)  # the ONNX export, once
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--max-memory", help="passed to `clipsearch rebuild`, e.g. 6G")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, help="where the index goes (default: a temp dir)")
    args = parser.parse_args()
    index_dir = args.dir or Path(tempfile.gettempdir()) / f"clipsearch-scale-{args.n}-{args.dim}"

    write_catalog(index_dir, args.n, args.dim)
    build_s, build_rss = build(index_dir, args.max_memory)
    manifest = read_manifest(index_dir)
    queries = Clusters(args.dim).draw(args.queries, seed=10**9)
    truth = exact_top_k(index_dir, queries)
    measured = query(index_dir, np.concatenate([queries, queries[:5]]))
    found = measured["found"]
    filtered = {}
    for name, where in FILTERS.items():
        runs = query(index_dir, queries[:55], where)
        filtered[name] = {
            "where": where,
            "first_ms": round(runs["cold_ms"][0], 1),  # runs the DuckDB filter
            "p50_ms": round(float(np.median(runs["ms"])), 2),
            "cold_pass_p50_ms": round(float(np.median(runs["cold_ms"])), 2),
            "short": sum(len(f) < K for f in runs["found"]),  # queries given fewer than k hits
            "peak_rss_mib": round(runs["peak_rss_mib"]),
        }
    recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth.tolist(), strict=True)])
    figures = {
        "n": args.n,
        "dim": args.dim,
        "kind": manifest.vector_index.info.kind,
        "params": {k: v for k, v in manifest.vector_index.info.params.items()},
        "max_memory": args.max_memory,
        "build_s": round(build_s, 1),
        "build_peak_rss_mib": round(build_rss),
        "vector_index_bytes": (index_dir / manifest.vector_index.file).stat().st_size,
        "query_p50_ms": round(float(np.median(measured["ms"])), 2),
        "query_p99_ms": round(float(np.percentile(measured["ms"], 99)), 2),
        "cold_pass_p50_ms": round(float(np.median(measured["cold_ms"])), 2),
        "recall_at_10": round(float(recall), 4),
        "query_peak_rss_mib": round(measured["peak_rss_mib"]),
        "query_private_rss_mib": round(measured["private_rss_mib"]),
        "filtered": filtered,
        "cold_cli_query_s": cold_cli_query(index_dir),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
