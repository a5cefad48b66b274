"""Check every file an index's manifest names, and mend what can be mended without
re-embedding: ``clipsearch repair``.

- A catalog part that cannot be read is dropped from the new snapshot: its images are no
  longer indexed, so the next ``clipsearch index`` of their folders embeds them again.
- The vector index, when it cannot be read, does not match the catalog, or is asked for
  (``rebuild_vectors``, e.g. with a new memory budget), is built again from the catalog's
  stored embeddings.
- An unreadable error list is dropped (the next ``clipsearch index`` lists the errors again).

The mended snapshot is committed like any other (``storage.commit_snapshot``), under the
index's writer lock; an intact index is left as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch import catalog, vectors
from clipsearch.errors import ClipsearchError
from clipsearch.indexer import index_lock, remove_unreferenced_files, save_vectors
from clipsearch.manifest import Manifest
from clipsearch.snapshot import open_manifest
from clipsearch.storage import commit_snapshot
from clipsearch.vectors import VectorIndexConfig


@dataclass
class RepairReport:
    index: str
    images: int  # in the snapshot after the repair
    parts_checked: int
    damaged: list[str] = field(default_factory=list)  # "FILE: what is wrong", one per file
    committed: bool = False

    def line(self) -> str:
        if not self.committed:
            parts = f"{self.parts_checked} catalog part(s)"
            return f"index {self.index} is intact: {self.images:,} images, {parts}"
        dropped = sum(not d.startswith("vectors/") for d in self.damaged)
        lost = (
            f", {dropped} damaged file(s) dropped (`clipsearch index` embeds their images again)"
            if dropped
            else ""
        )
        return f"repaired index {self.index}: {self.images:,} images{lost}, vector index rebuilt"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair_index(
    index_dir: Path, rebuild_vectors: bool = False, config: VectorIndexConfig | None = None
) -> RepairReport:
    """Check ``index_dir`` and commit a mended snapshot if anything needs it."""
    open_manifest(index_dir)  # no index there: say so before the lock creates the folder
    with index_lock(index_dir):
        manifest = open_manifest(index_dir)
        schema = catalog.catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
        report = RepairReport(str(index_dir), 0, len(manifest.catalog))
        parts, tables = [], [schema.empty_table().select(["id", "embedding"])]
        for part in manifest.catalog:
            table, problem = _read_whole(index_dir / part, schema)
            if problem:
                report.damaged.append(f"{part}: {problem}")
            else:
                parts.append(part)
                tables.append(table.select(["id", "embedding"]).cast(tables[0].schema))
        errors = manifest.errors
        problem = _read_whole(index_dir / errors, None)[1] if errors else None
        if problem:
            report.damaged.append(f"{errors}: {problem}")
            errors = None
        table = pa.concat_tables(tables)
        report.images = table.num_rows
        vector_problem = _check_vectors(index_dir, manifest)
        if vector_problem:
            report.damaged.append(vector_problem)
        if not (report.damaged or rebuild_vectors):
            return report
        embeddings = catalog.embeddings_of(table).reshape(-1, manifest.embedding_dim)
        index, info = vectors.build(table.column("id").to_numpy(), embeddings, config)
        snapshot = manifest.snapshot + 1
        mended = replace(
            manifest,
            snapshot=snapshot,
            catalog=parts,
            errors=errors,
            vector_index={"file": save_vectors(index_dir, index, snapshot), **asdict(info)},
            counts={"images": table.num_rows, "errors": manifest.counts["errors"] if errors else 0},
        )
        commit_snapshot(index_dir, mended, manifest)
        remove_unreferenced_files(index_dir, mended)
        report.committed = True
        return report


def _read_whole(path: Path, schema: Any) -> tuple[pa.Table | None, str | None]:
    """A Parquet file read whole (every page), or what is wrong with it."""
    try:
        table = pq.ParquetFile(path).read()
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:  # pyarrow raises many kinds for damaged bytes
        return None, " ".join(str(exc).split())[:200]
    if schema is not None and not set(schema.names) <= set(table.schema.names):
        return None, "not a catalog part of this index (columns differ)"
    return table, None


def _check_vectors(index_dir: Path, manifest: Manifest) -> str | None:
    name = manifest.vector_index.get("file")
    if not name:
        return "the manifest names no vector index"
    try:
        index = vectors.load(index_dir / name)
    except ClipsearchError as exc:
        return f"{name}: {exc}"
    rows = manifest.counts["images"]
    if index.ntotal != rows:
        return f"{name}: holds {index.ntotal:,} vectors for {rows:,} images"
    return None
