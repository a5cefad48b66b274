"""autofaiss beside clipsearch on the same stored vectors and the same memory budget.

    python3 -m venv /tmp/autofaiss-venv && /tmp/autofaiss-venv/bin/pip install autofaiss
    python benchmarks/scale.py --n 10000000 --max-memory 6G          # clipsearch's figures
    python benchmarks/vs_autofaiss.py --index /tmp/clipsearch-scale-10000000-512 \\
        --max-memory 6G --python /tmp/autofaiss-venv/bin/python

Exports the index's stored (float16) embeddings as .npy files, has autofaiss build an index
from them within the same --max-memory (its own venv, never a clipsearch dependency), then
queries it with the same 200 fresh queries scale.py uses, one at a time, warm, and scores
recall@10 against exact search over the same vectors. The last line printed is one JSON
object: build_s, build_peak_rss_mib, index_key, vector_index_bytes, query_p50_ms,
recall_at_10, query_peak_rss_mib.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import HIGH_WATER, Clusters, exact_top_k

from clipsearch.store import catalog
from clipsearch.store.manifest import read_manifest

BUILD = f"""
import atexit, sys
atexit.register(lambda: print("VmHWM_KB", {HIGH_WATER}, file=sys.stderr))
from autofaiss import build_index
build_index(
    embeddings=sys.argv[1], index_path=sys.argv[2], index_infos_path=sys.argv[3],
    max_index_memory_usage=sys.argv[4], current_memory_available="8G", metric_type="ip",
    nb_cores=2, should_be_memory_mappable=True,
)
"""

QUERY = f"""
import json, sys, time
import faiss, numpy as np
index = faiss.read_index(sys.argv[1], faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
infos = json.load(open(sys.argv[2]))
faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
queries = np.load(sys.argv[3])
for q in queries[:5]:
    index.search(q[None, :], 10)
ms, found = [], []
for q in queries:
    start = time.perf_counter()
    _, ids = index.search(q[None, :], 10)
    ms.append((time.perf_counter() - start) * 1000)
    found.append(ids[0].tolist())
print(json.dumps({{"ms": ms, "found": found, "peak_rss_mib": int({HIGH_WATER}) / 1024,
                   "infos": infos}}))
"""


def export_npy(index_dir: Path, out: Path) -> None:
    """The stored embeddings as .npy files in id order (autofaiss numbers vectors by row)."""
    out.mkdir(parents=True, exist_ok=True)
    expected = 0
    manifest = read_manifest(index_dir)
    for number, (ids, vectors) in enumerate(catalog.iter_embeddings(index_dir, manifest.catalog)):
        if ids[0] != expected or not np.array_equal(ids, np.arange(expected, expected + len(ids))):
            raise SystemExit("ids are not 0..n-1 in catalog order: use an index from scale.py")
        expected += len(ids)
        np.save(out / f"{number:06d}.npy", vectors.astype(np.float16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="an index from scale.py")
    parser.add_argument("--max-memory", required=True, help="e.g. 6G, as given to scale.py")
    parser.add_argument("--python", required=True, help="the python of autofaiss's venv")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path, help="for the .npy export and the index")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="autofaiss-"))
    embeddings, index_path, infos = work / "embeddings", work / "index.faiss", work / "infos.json"
    if not embeddings.is_dir():
        export_npy(args.index, embeddings)
    start = time.perf_counter()
    log = work / "build.log"  # autofaiss's own progress, to follow a build of hours
    with open(log, "w") as progress:
        built = subprocess.run(
            [
                args.python,
                "-c",
                BUILD,
                str(embeddings),
                str(index_path),
                str(infos),
                args.max_memory,
            ],
            stdout=progress,
            stderr=subprocess.STDOUT,
        )
    build_s = time.perf_counter() - start
    output = log.read_text()
    if built.returncode:
        raise SystemExit(f"autofaiss failed: {output[-2000:]}")
    peak = [line for line in output.splitlines() if line.startswith("VmHWM_KB ")]

    dim = read_manifest(args.index).embedding_dim
    queries = Clusters(dim).draw(args.queries, seed=10**9)  # scale.py's fresh queries
    truth = exact_top_k(args.index, queries)
    query_file = work / "queries.npy"
    np.save(query_file, queries)
    ran = subprocess.run(
        [args.python, "-c", QUERY, str(index_path), str(infos), str(query_file)],
        capture_output=True,
        text=True,
    )
    if ran.returncode:
        raise SystemExit(f"the autofaiss query process failed: {ran.stderr[-2000:]}")
    measured = json.loads(ran.stdout.strip().splitlines()[-1])
    pairs = zip(measured["found"], truth.tolist(), strict=True)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in pairs]))
    print(
        json.dumps(
            {
                "tool": "autofaiss",
                "n": read_manifest(args.index).counts["images"],
                "max_memory": args.max_memory,
                "index_key": measured["infos"].get("index_key"),
                "index_param": measured["infos"].get("index_param"),
                "build_s": round(build_s, 1),
                "build_peak_rss_mib": round(int(peak[-1].split()[1]) / 1024) if peak else None,
                "vector_index_bytes": index_path.stat().st_size,
                "query_p50_ms": round(float(np.median(measured["ms"])), 2),
                "query_p99_ms": round(float(np.percentile(measured["ms"], 99)), 2),
                "recall_at_10": round(recall, 4),
                "query_peak_rss_mib": round(measured["peak_rss_mib"]),
            }
        )
    )


if __name__ == "__main__":
    main()
