"""A synthetic image index for benchmarks, written through the real catalog, vector-index and
manifest code: clustered unit embeddings under a real model's identity, so real text queries
run against it. Embedding 100k real images would take over an hour on a 2-core CPU.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clipsearch.model.identity import ModelIdentity
from clipsearch.store import catalog, layout, vectors
from clipsearch.store.manifest import Manifest, VectorIndexInfo, read_manifest
from clipsearch.store.snapshots import commit_next

PART_ROWS = 25_000


def clustered(n: int, dim: int, seed: int = 0, topics: int = 200) -> np.ndarray:
    """Unit vectors around ``topics`` centres (real embeddings cluster; noise would not)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    out = centres[rng.integers(topics, size=n)]
    out += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def catalog_part(ids: np.ndarray, embeddings: np.ndarray, schema: pa.Schema) -> pa.Table:
    rng = np.random.default_rng(int(ids[0]))
    n = len(ids)
    now = datetime.now(timezone.utc)
    taken = np.datetime64("2015-01-01") + rng.integers(0, 3650 * 86400, n).astype("m8[s]")
    columns = {
        "id": pa.array(ids, pa.int64()),
        "path": pa.array([f"/nonexistent/clipsearch-bench/{i:07d}.jpg" for i in ids]),
        "size": pa.array(rng.integers(50_000, 5_000_000, n), pa.int64()),
        "mtime_ns": pa.array(rng.integers(1.4e18, 1.7e18, n), pa.int64()),
        "content_hash": pa.array([f"{i:032x}" for i in ids]),
        "width": pa.array(rng.integers(320, 6000, n), pa.int32()),
        "height": pa.array(rng.integers(240, 4000, n), pa.int32()),
        "format": pa.array(["JPEG"] * n),
        "taken_at": pa.array(taken.astype("M8[us]"), pa.timestamp("us")),
        "indexed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "fingerprint": pa.nulls(n, schema.field("fingerprint").type),
    }
    values = pa.array(embeddings.reshape(-1).astype(np.float16), pa.float16())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, embeddings.shape[1])
    return pa.table(columns, schema=schema)


def commit_first_snapshot(
    index_dir: Path,
    identity: ModelIdentity,
    parts: list[str],
    n: int,
    vector_index: tuple[Any, VectorIndexInfo] | None = None,
) -> None:
    """Commit a new synthetic index of ``n`` float16 rows in ``parts`` (written with
    ``catalog.write_new_table``), with the vector index built over them if given."""
    manifest = Manifest(
        model=identity,
        embedding_dim=identity.dim,
        embedding_dtype="float16",
        next_id=n,
        counts={"images": n, "errors": 0},
        catalog=parts,
    )
    commit_next(index_dir, None, manifest, vector_index)


def make_index(index_dir: Path, n: int, model_spec: str = "random:clipsearch-tiny") -> None:
    """Write a committed index of ``n`` synthetic rows (skipped when one is already there)."""
    existing = read_manifest(index_dir) if (index_dir / "manifest.json").exists() else None
    if existing is not None and existing.counts["images"] == n:
        print(f"re-using the {n:,}-image index at {index_dir}", file=sys.stderr)
        return
    from clipsearch.model import Model

    start = time.perf_counter()
    identity = Model.load(model_spec, device="cpu").identity
    dim = identity.dim
    schema = catalog.catalog_schema(dim, "float16")
    ids = np.arange(n, dtype=np.int64)
    embeddings = clustered(n, dim)
    stored = embeddings.astype(np.float16).astype(np.float32)  # what the catalog holds
    parts = []
    for begin in range(0, n, PART_ROWS):
        rows = slice(begin, begin + PART_ROWS)
        table = catalog_part(ids[rows], embeddings[rows], schema)
        parts.append(catalog.write_new_table(index_dir, layout.CATALOG_DIR, "part", table))
    index, info = vectors.build(ids, stored)
    commit_first_snapshot(index_dir, identity, parts, n, (index, info))
    took = time.perf_counter() - start
    print(f"built a {n:,}-image {info.kind} index in {took:.1f} s", file=sys.stderr)
