"""`clipsearch duplicates` over an index of N images with copies planted at known places.

    python benchmarks/duplicates_scale.py --n 1000000 [--max-memory 1G] [--dir DIR]

Writes N clustered synthetic 512-dim embeddings (as `scale.py` does; two different images
of one sub-topic have cosine ~0.87) and made-up fingerprints through the real catalog code,
of which 1% are copies of earlier rows (their fingerprint the original's, a few grey levels
off): a third exact (the same embedding and content hash), a third near
(cosine 0.93-0.999 to their original), a third near misses (cosine ~0.85, which must not
be grouped at the default threshold). Builds the vector index with `clipsearch rebuild`
(IVF-SQ8 at 1M within 1G), then runs `clipsearch duplicates --json` in a subprocess and
scores its groups against the plant. The last line printed is one JSON object.
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
from scale import CHUNK, CLI_REPORTING_PEAK, Clusters, _identity, build
from synthetic_index import catalog_part, commit_first_snapshot

from clipsearch.base import fingerprint
from clipsearch.store import catalog, layout

DIM = 512
PLANTED_SHARE = 0.01
NEAR_NOISE = (0.045, 0.40)  # noise norms: cosine 0.999 down to 0.93
MISS_NOISE = 0.62  # cosine ~0.85


def plant(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that copy an earlier row: (copy ids, original ids, kind 0 exact / 1 near / 2 miss)."""
    rng = np.random.default_rng(7)
    copies = np.sort(rng.choice(np.arange(n // 2, n), int(n * PLANTED_SHARE), replace=False))
    originals = rng.integers(0, n // 2, len(copies))
    return copies, originals, rng.integers(0, 3, len(copies))


def pictures_of(ids: np.ndarray) -> np.ndarray:
    """A made-up fingerprint per id: unrelated patterns for different ids (splitmix64 of id
    and cell; an arithmetic sequence, as first written here, made different ids shifted
    copies of one pattern), the same every time."""
    cells = np.arange(fingerprint.SIZE, dtype=np.uint64)
    x = ids.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15) + cells
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x & np.uint64(255)).astype(np.int64)


def write_index(index_dir: Path, n: int) -> None:
    if (index_dir / "manifest.json").exists():
        print(f"re-using {index_dir}", file=sys.stderr)
        return
    clusters, schema = Clusters(DIM), catalog.catalog_schema(DIM, "float16")
    copies, originals, kinds = plant(n)
    rng = np.random.default_rng(8)

    def drawn(begin: int) -> np.ndarray:  # the same vectors for a chunk every time
        return clusters.draw(min(CHUNK, n - begin), seed=begin // CHUNK + 1)

    # The originals, kept to copy from (n/2 x 512 float32: 1 GB at 1M).
    first_half = np.concatenate([drawn(b) for b in range(0, n // 2, CHUNK)])[: n // 2]
    parts = []
    for begin in range(0, n, CHUNK):
        ids = np.arange(begin, min(n, begin + CHUNK), dtype=np.int64)
        vectors = drawn(begin)
        table = catalog_part(ids, vectors, schema)
        here = (copies >= begin) & (copies < begin + len(ids))
        hashes = table.column("content_hash").to_pylist()
        pictures = pictures_of(ids)
        for copy, original, kind in zip(copies[here], originals[here], kinds[here], strict=True):
            source = first_half[original]
            noise = {0: 0.0, 1: rng.uniform(*NEAR_NOISE), 2: MISS_NOISE}[int(kind)]
            step = rng.standard_normal(DIM).astype(np.float32)
            copied = source + noise * step / np.linalg.norm(step)
            vectors[copy - begin] = copied / np.linalg.norm(copied)
            # Every copy's picture is its original's, a few grey levels off: only the
            # embeddings tell the near misses apart.
            shift = rng.integers(-3, 4, fingerprint.SIZE) if kind else 0
            pictures[copy - begin] = np.clip(pictures_of(np.array([original]))[0] + shift, 0, 255)
            if kind == 0:
                hashes[copy - begin] = f"{original:032x}"
        table = catalog_part(ids, vectors, schema)
        table = table.set_column(4, "content_hash", pa.array(hashes))
        column = table.schema.get_field_index("fingerprint")
        blobs = pa.array(
            [row.astype(np.uint8).tobytes() for row in pictures], pa.binary(fingerprint.SIZE)
        )
        table = table.set_column(column, "fingerprint", blobs)
        parts.append(catalog.write_new_table(index_dir, layout.CATALOG_DIR, "part", table))
        print(f"catalog: {begin + len(ids):,}/{n:,}", file=sys.stderr, flush=True)
    commit_first_snapshot(index_dir, _identity(DIM), parts, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--max-memory", default="1G")
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    index_dir = args.dir or Path(tempfile.mkdtemp(prefix="clipsearch-dups-"))
    write_index(index_dir, args.n)
    build_s, build_peak = build(index_dir, args.max_memory)
    start = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI_REPORTING_PEAK,
            "duplicates",
            "--index",
            str(index_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"duplicates failed: {run.stderr[-2000:]}")
    peak_kb = int(run.stderr.split("VmHWM_KB")[-1].split()[0])
    groups = json.loads(run.stdout)["groups"]
    copies, originals, kinds = plant(args.n)
    family = {}  # id -> the original it is (a copy of); near misses are families of their own
    for copy, original, kind in zip(
        copies.tolist(), originals.tolist(), kinds.tolist(), strict=True
    ):
        family.setdefault(original, original)
        family[copy] = original if kind < 2 else -copy - 1
    grouped = {}
    pairs = set()
    for number, group in enumerate(groups):
        ids = [image["id"] for image in group["images"]]
        grouped.update({i: number for i in ids})
        pairs |= {(a, b) for a in ids for b in ids if a < b}
    wanted = [
        (o, c)
        for c, o, k in zip(copies.tolist(), originals.tolist(), kinds.tolist(), strict=True)
        if k < 2
    ]
    misses = [
        (o, c)
        for c, o, k in zip(copies.tolist(), originals.tolist(), kinds.tolist(), strict=True)
        if k == 2
    ]
    together = lambda a, b: a in grouped and grouped.get(a) == grouped.get(b)  # noqa: E731
    wrong = sum(family.get(a, -a - 10**12) != family.get(b, -b - 2 * 10**12) for a, b in pairs)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    print(
        json.dumps(
            {
                "n": args.n,
                "kind": manifest["vector_index"]["kind"],
                "build_s": round(build_s, 1),
                "build_peak_rss_mib": round(build_peak),
                "duplicates_s": round(seconds, 1),
                "duplicates_peak_rss_mib": peak_kb // 1024,
                "groups": len(groups),
                "planted_pairs": len(wanted),
                "planted_pairs_grouped": sum(together(o, c) for o, c in wanted),
                "near_misses": len(misses),
                "near_misses_grouped": sum(together(o, c) for o, c in misses),
                "pairs_grouped": len(pairs),
                "pairs_of_different_photos_grouped": wrong,
            }
        )
    )


if __name__ == "__main__":
    main()
