"""Check every file an index's manifest names, and mend what can be mended without
re-embedding: ``clipsearch repair``.

- A catalog part that cannot be read is dropped from the new snapshot: its images are no
  longer indexed, so the next ``clipsearch index`` of their folders embeds them again.
- The vector index, when it cannot be read, does not match the catalog, or is asked for
  (``rebuild_vectors``, e.g. with a new memory budget), is built again from the catalog's
  stored embeddings.
- An unreadable error list is dropped (the next ``clipsearch index`` lists the errors again).

The mended snapshot is committed like any other (``snapshots.commit_next``), under the
index's writer lock, after any file a writer that died mid-commit left in ``retired/`` is
put back (``snapshots.tidy``); an intact index is left as it is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch.errors import ClipsearchError
from clipsearch.store import catalog, vectors
from clipsearch.store.manifest import Manifest, open_manifest
from clipsearch.store.snapshots import commit_next, index_lock, tidy, vectors_of_parts
from clipsearch.store.storage import snapshot_path
from clipsearch.store.vectors import VectorIndexConfig


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
        tidy(index_dir, manifest)
        schema = catalog.catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
        report = RepairReport(str(index_dir), 0, len(manifest.catalog))
        parts = []
        for part in manifest.catalog:
            rows, problem = _check_parquet(snapshot_path(index_dir, part), schema)
            if problem:
                report.damaged.append(f"{part}: {problem}")
            else:
                parts.append(part)
                report.images += rows
        errors = manifest.errors
        problem = _check_parquet(snapshot_path(index_dir, errors), None)[1] if errors else None
        if problem:
            report.damaged.append(f"{errors}: {problem}")
            errors = None
        vector_problem = _check_vectors(index_dir, manifest)
        if vector_problem:
            report.damaged.append(vector_problem)
        if not (report.damaged or rebuild_vectors):
            return report
        errors_count = manifest.counts["errors"] if errors else 0
        _commit_rebuilt(index_dir, manifest, parts, errors, errors_count, config)
        report.committed = True
        return report


@dataclass
class RebuildReport:
    index: str
    images: int
    parts_before: int
    parts_after: int
    vector_index: dict[str, Any]  # kind, params, recall_at_10, ... of the new vector index
    seconds: float = 0.0

    def line(self) -> str:
        info = self.vector_index
        recall = info.get("recall_at_10")
        tuned = f", recall@10 {recall:.3f}" if recall is not None else ""
        return (
            f"rebuilt index {self.index}: {self.images:,} images, catalog parts "
            f"{self.parts_before} → {self.parts_after}, vector index {info['kind']}{tuned} "
            f"in {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rebuild_index(
    index_dir: Path,
    config: VectorIndexConfig | None = None,
    compact: bool = True,
    part_rows: int = catalog.PART_ROWS,
) -> RebuildReport:
    """Build the vector index again from the stored embeddings (say, with a new memory
    budget) and, with ``compact``, merge small catalog parts into parts of up to
    ``part_rows`` rows; committed as a new snapshot. Nothing is re-embedded, no id changes."""
    start = time.perf_counter()
    open_manifest(index_dir)
    with index_lock(index_dir):
        manifest = open_manifest(index_dir)
        tidy(index_dir, manifest)
        schema = catalog.catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
        parts = (
            _compacted(index_dir, manifest.catalog, part_rows, schema)
            if compact
            else manifest.catalog
        )
        rebuilt = _commit_rebuilt(
            index_dir, manifest, parts, manifest.errors, manifest.counts["errors"], config
        )
    assert rebuilt.vector_index is not None  # just built
    info = asdict(rebuilt.vector_index.info)
    return RebuildReport(
        str(index_dir),
        rebuilt.counts["images"],
        len(manifest.catalog),
        len(rebuilt.catalog),
        info,
        time.perf_counter() - start,
    )


def _commit_rebuilt(
    index_dir: Path,
    manifest: Manifest,
    parts: list[str],
    errors: str | None,
    errors_count: int,
    config: VectorIndexConfig | None,
) -> Manifest:
    """Commit ``parts`` with a vector index built from their embeddings, streamed; the
    manifest committed."""
    source = vectors_of_parts(index_dir, parts, manifest.embedding_dim)
    index, info = vectors.build_from(source, config)
    counts = {"images": info.count, "errors": errors_count}
    mended = replace(manifest, catalog=parts, errors=errors, counts=counts)
    return commit_next(index_dir, manifest, mended, (index, info))


def _compacted(index_dir: Path, parts: list[str], part_rows: int, schema: pa.Schema) -> list[str]:
    """The catalog with runs of small parts (under half of ``part_rows`` rows) merged into
    new parts of up to ``part_rows`` rows (in ``schema``: older parts may lack a column);
    every other part as it was, order kept."""
    sizes = [catalog.count_rows(index_dir, [part]) for part in parts]
    result: list[str] = []
    batch: list[str] = []  # consecutive small parts to merge, up to part_rows rows in all

    def flush() -> None:
        if len(batch) == 1:
            result.append(batch[0])  # nothing to merge it with
        elif batch:
            tables = (
                catalog.conform(pq.ParquetFile(snapshot_path(index_dir, p)).read(), schema)
                for p in batch
            )
            result.extend(catalog.write_parts(index_dir, tables, part_rows))
        batch.clear()

    rows = 0
    for part, size in zip(parts, sizes, strict=True):
        if size >= part_rows // 2 or rows + size > part_rows:
            flush()
            rows = 0
        if size >= part_rows // 2:
            result.append(part)
        else:
            batch.append(part)
            rows += size
    flush()
    return result


def _check_parquet(path: Path, schema: pa.Schema | None) -> tuple[int, str | None]:
    """The rows of a Parquet file read whole (every page, a batch at a time, so a large part
    is never held), or what is wrong with it; ``schema``: columns it must have."""
    try:
        reader = pq.ParquetFile(path)
        required = set(schema.names) - set(catalog.ADDED_LATER) if schema is not None else set()
        if not required <= set(reader.schema_arrow.names):
            return 0, "not a catalog part of this index (columns differ)"
        return sum(batch.num_rows for batch in reader.iter_batches(65_536)), None
    except FileNotFoundError:
        return 0, "missing"
    except Exception as exc:  # pyarrow raises many kinds for damaged bytes
        return 0, " ".join(str(exc).split())[:200]


def _check_vectors(index_dir: Path, manifest: Manifest) -> str | None:
    if manifest.vector_index is None:
        return "the manifest names no vector index"
    name = manifest.vector_index.file
    try:
        index = vectors.load(snapshot_path(index_dir, name))
    except (ClipsearchError, FileNotFoundError) as exc:
        return f"{name}: {exc}"
    rows = manifest.counts["images"]
    if index.ntotal != rows:
        return f"{name}: holds {index.ntotal:,} vectors for {rows:,} images"
    return None
