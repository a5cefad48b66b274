"""The catalog: one Parquet row per indexed image, with its metadata and embedding.

Parts are immutable files under ``catalog/``; the manifest names the live ones, and the
folder holds exactly those: new parts wait for their commit in ``pending/catalog/``, and
parts a commit replaced wait out their grace period in ``retired/catalog/`` (see
``Manifest.retired``), where the readers here find them for a snapshot that still names them
(``storage.snapshot_path``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipsearch.base import access
from clipsearch.base.durable import publishing
from clipsearch.base.fingerprint import SIZE as FINGERPRINT_BYTES
from clipsearch.store.layout import CATALOG_DIR
from clipsearch.store.storage import new_file_path, snapshot_path

# Columns that say where a file is and whether it changed: all a no-op re-index reads.
FILE_COLUMNS = ["id", "path", "size", "mtime_ns", "content_hash"]
# Columns that parts written by earlier versions lack: read as nulls.
TEXT_LINE = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("box", pa.list_(pa.float32(), 8)),  # corners clockwise from the top left
    ]
)
ADDED_LATER = {
    "fingerprint": pa.binary(FINGERPRINT_BYTES),
    "text": pa.string(),
    "text_lines": pa.list_(TEXT_LINE),
}
_ARROW_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
# Rows per Parquet row group: a lookup by id reads one group of the columns it wants (8,192
# paths: well under a millisecond), found by the id range in the footer.
ROW_GROUP_ROWS = 8192
# Rows per catalog part, as a run commits them and `clipsearch rebuild` compacts them: ~100 MB
# of 512-dim float16 embeddings, few enough files for DuckDB to open quickly, small enough to
# rewrite when one of their images changes, and the most rows a commit holds at once.
PART_ROWS = 100_000


def catalog_schema(dim: int, dtype: str) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64()),
            pa.field("mtime_ns", pa.int64()),
            pa.field("content_hash", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("format", pa.string()),
            pa.field("taken_at", pa.timestamp("us")),
            pa.field("indexed_at", pa.timestamp("us", tz="UTC")),
            # 8x8 grey levels (ingest.fingerprint); null in parts written before it existed
            pa.field("fingerprint", ADDED_LATER["fingerprint"]),
            # The words in the photo (OCR: `index --ocr`), its lines joined by newlines, and
            # each line with its confidence and box; null where the photo was not read, ""
            # and [] where it was and holds no text.
            pa.field("text", ADDED_LATER["text"]),
            pa.field("text_lines", ADDED_LATER["text_lines"]),
            pa.field("embedding", pa.list_(_ARROW_DTYPES[dtype], dim)),
        ]
    )


ERRORS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("seen_at", pa.timestamp("us", tz="UTC")),
    ]
)


def rows_to_table(
    rows: Sequence[dict[str, Any]], embeddings: np.ndarray, schema: pa.Schema
) -> pa.Table:
    """Build a catalog table from metadata dicts and an (n, dim) embedding matrix."""
    dim = schema.field("embedding").type.list_size
    value_type = schema.field("embedding").type.value_type
    flat = pa.array(embeddings.reshape(-1).astype(value_type.to_pandas_dtype()), type=value_type)
    columns = {
        name: [row.get(name) for row in rows] for name in schema.names if name != "embedding"
    }
    table = pa.table(columns, schema=schema.remove(schema.get_field_index("embedding")))
    return table.append_column(
        schema.field("embedding"), pa.FixedSizeListArray.from_arrays(flat, dim)
    )


def embeddings_of(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """The embedding column as a float32 (n, dim) matrix of unit rows."""
    column = table.column("embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if not len(column):
        return values.reshape(0, 0)
    values = values.reshape(len(column), -1)
    # Stored as float16, a unit row comes back up to ~1e-3 off unit length; every reader
    # takes dot products as cosines (an image "more like" itself would score 0.9997).
    # (einsum: about half the time of np.linalg.norm)
    values /= np.maximum(np.sqrt(np.einsum("ij,ij->i", values, values)), 1e-12)[:, None]
    return values


def count_rows(index_dir: Path, relative_paths: Sequence[str]) -> int:
    """Rows in the named parts, from their footers (no data read)."""
    total = 0
    for part in relative_paths:
        try:
            total += pq.ParquetFile(snapshot_path(index_dir, part)).metadata.num_rows
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise _damaged_part(index_dir, part, exc) from None
    return total


def iter_embeddings(
    index_dir: Path, relative_paths: Sequence[str], batch_rows: int = 16_384
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 embeddings) of the named parts, ``batch_rows`` at a time: what a vector
    index build streams, so that it never holds every embedding."""
    for part in relative_paths:
        path = snapshot_path(index_dir, part)
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_rows, columns=["id", "embedding"])
            for batch in batches:
                yield batch.column(0).to_numpy(), embeddings_of(batch)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise _damaged_part(index_dir, part, exc) from None
        # Arrow's allocator keeps freed pages for reuse; a pass over every part would keep
        # the largest part's worth resident beside the vector index being built.
        pa.default_memory_pool().release_unused()


def write_table(directory: Path, prefix: str, table: pa.Table) -> Path:
    """Write ``table`` to a new, uniquely named Parquet file in ``directory``, atomically;
    return its path. (A file of a snapshot is written with ``write_new_table``.)"""
    access.make_dir(directory)
    return write_parquet(directory / _unique_name(prefix), table)


def write_new_table(index_dir: Path, folder: str, prefix: str, table: pa.Table) -> str:
    """Write ``table`` as a new file of the snapshot being made, ``FOLDER/PREFIX-<hex>.parquet``
    (``folder`` "": at the top), atomically; return that name, the manifest's. The file
    waits in ``pending/`` until the commit moves it there (``storage.new_file_path``)."""
    name = PurePosixPath(folder, _unique_name(prefix)).as_posix()
    write_parquet(new_file_path(index_dir, name), table)
    return name


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}.parquet"


def write_parquet(path: Path, table: pa.Table) -> Path:
    """Write ``table`` to ``path`` atomically, as every Parquet file of an index is written."""
    with publishing(path.with_name(f".{path.name}.tmp"), path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    return path


def write_parts(
    index_dir: Path, tables: Iterable[pa.Table], part_rows: int = PART_ROWS
) -> list[str]:
    """Write the rows of ``tables``, in order, as new catalog parts of up to ``part_rows``
    rows; their paths relative to ``index_dir``. Holds one part's rows at a time, so that a
    commit of ten million staged rows never holds them all."""
    written: list[str] = []
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush(table: pa.Table) -> None:
        written.append(write_new_table(index_dir, CATALOG_DIR, "part", table))

    for table in tables:
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= part_rows:
            merged = pa.concat_tables(pending)
            flush(merged.slice(0, part_rows))
            rest = merged.slice(part_rows)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        flush(pa.concat_tables(pending))
    pa.default_memory_pool().release_unused()
    return written


def read_tables(
    index_dir: Path, relative_paths: Sequence[str], columns: Sequence[str] | None, schema: pa.Schema
) -> pa.Table:
    """Concatenate the named parts (an empty table with ``schema`` when there are none)."""
    if not relative_paths:
        empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        return empty.empty_table()
    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose import
    # (~30 ms) is a tenth of a warm `clipsearch classify`.
    wanted = None if schema is None else _subset(schema, columns)
    tables = [_read_part(index_dir, p, columns, wanted) for p in relative_paths]
    return pa.concat_tables(tables)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: a column that parts written before it existed lack (the
    fingerprint) is added as nulls, and the columns are put in order and cast."""
    return _with_added_later(table, schema.names).cast(schema)


def _with_added_later(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """The ``names`` columns of ``table``, in order; those added to the catalog later that it
    lacks (rows of an older part) as nulls."""
    for name in names:
        if name not in table.column_names:
            if name not in ADDED_LATER:
                raise ValueError(f"catalog rows lack the column {name!r}")
            table = table.append_column(name, pa.nulls(len(table), ADDED_LATER[name]))
    return table.select(list(names))


def _readable(file: pq.ParquetFile, names: Sequence[str]) -> list[str]:
    """``names`` without the added-later columns this (older) part does not have."""
    return [n for n in names if n in file.schema_arrow.names or n not in ADDED_LATER]


def _subset(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    return schema if columns is None else pa.schema([schema.field(c) for c in columns])


def _read_part(
    index_dir: Path, part: str, columns: Sequence[str] | None, schema: pa.Schema | None
) -> pa.Table:
    try:
        file = pq.ParquetFile(snapshot_path(index_dir, part))
        table = file.read(columns=None if columns is None else _readable(file, columns))
        return table if schema is None else conform(table, schema)
    except FileNotFoundError:
        raise  # moved or deleted by a commit meanwhile: the reader retries (Snapshot._read)
    except (pa.ArrowException, OSError) as exc:
        raise _damaged_part(index_dir, part, exc) from None


def _damaged_part(index_dir: Path, part: str, exc: Exception) -> Exception:
    from clipsearch.store.manifest import damaged

    detail = " ".join(str(exc).split())
    return damaged(index_dir, f"catalog part {Path(part).name}: {detail}")


class RowLookup:
    """Catalog rows by id without scanning the catalog: the id range of every row group,
    read once from the parts' footers, says which groups hold the ids; only those are read.
    (DuckDB reads the id column of every part for ``id IN (...)``: ~10 ms per million rows.)
    """

    def __init__(self, index_dir: Path, relative_paths: Sequence[str]) -> None:
        self.index_dir = index_dir
        self._files: dict[str, pq.ParquetFile] = {}
        groups: list[tuple[int, int, str, int]] = []
        for part in relative_paths:
            try:
                # Opened once: a part a later commit moves into retired/ stays readable.
                file = pq.ParquetFile(snapshot_path(index_dir, part))
            except FileNotFoundError:
                raise
            except (pa.ArrowException, OSError) as exc:
                raise _damaged_part(index_dir, part, exc) from None
            self._files[part] = file
            column = file.schema_arrow.get_field_index("id")
            for group in range(file.metadata.num_row_groups):
                stats = file.metadata.row_group(group).column(column).statistics
                known = stats is not None and stats.has_min_max
                low, high = (stats.min, stats.max) if known else (-(2**63), 2**63 - 1)
                groups.append((low, high, part, group))
        self._low = np.array([g[0] for g in groups], np.int64)
        self._high = np.array([g[1] for g in groups], np.int64)
        self._where = [(g[2], g[3]) for g in groups]

    def count_values(self, column: str) -> int:
        """Non-null values of ``column`` in the parts, from the footers' statistics (no data
        read; parts that lack the column hold none)."""
        total = 0
        for file in self._files.values():
            metadata = file.metadata
            names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
            if column not in names:
                continue
            for group in range(metadata.num_row_groups):
                stats = metadata.row_group(group).column(names.index(column)).statistics
                nulls = stats.null_count if stats is not None else 0
                total += metadata.row_group(group).num_rows - nulls
        return total

    @property
    def schema(self) -> pa.Schema | None:
        first = next(iter(self._files.values()), None)
        return first.schema_arrow if first is not None else None

    def rows(self, ids: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows of ``ids`` (those that exist), with ``id`` and ``columns``."""
        wanted = np.unique(np.asarray(ids, np.int64))
        hit = (self._low[:, None] <= wanted[None, :]) & (wanted[None, :] <= self._high[:, None])
        names = ["id", *[c for c in columns if c != "id"]]
        tables = []
        for position in np.flatnonzero(hit.any(axis=1)):
            part, group = self._where[position]
            file = self._files[part]
            try:
                table = file.read_row_group(group, columns=_readable(file, names))
            except (pa.ArrowException, OSError) as exc:
                raise _damaged_part(self.index_dir, part, exc) from None
            table = _with_added_later(table, names)
            tables.append(table.filter(pc.is_in(table.column("id"), pa.array(wanted))))
        if not tables:
            schema = self.schema
            assert schema is not None  # no parts, no ids to look up: ``wanted`` was empty
            return pa.table({name: pa.array([], schema.field(name).type) for name in names})
        return pa.concat_tables(tables)


# -- part surgery: what a run that removes, changes or moves files does to the parts -----

FileKey = tuple[str, int, int]  # path, size, mtime_ns: a file as it was indexed


def without_rows(
    index_dir: Path,
    parts: list[str],
    dropped: Iterable[int],
    moved: dict[int, FileKey],
    schema: pa.Schema,
) -> tuple[list[str], pa.Table | None]:
    """The catalog ``parts`` without the rows of ``dropped`` ids and of ``moved`` ones:
    untouched parts kept as they are, the others written anew (into ``pending/``) without
    those rows; and the moved rows, with their new path, size and mtime (their embeddings
    stay), as one table (None when nothing moved)."""
    touched = pa.array([*dropped, *moved], pa.int64())
    moved_ids = pa.array(list(moved), pa.int64())
    kept, moved_rows = [], []
    for part in parts:
        ids = pq.read_table(index_dir / part, columns=["id"]).column("id")
        if len(touched) == 0 or not pc.any(pc.is_in(ids, touched)).as_py():
            kept.append(part)
            continue
        table = conform(pq.read_table(index_dir / part), schema)
        moved_rows.append(table.filter(pc.is_in(table.column("id"), moved_ids)))
        rest = table.filter(pc.invert(pc.is_in(table.column("id"), touched)))
        if rest.num_rows:
            kept.append(write_new_table(index_dir, CATALOG_DIR, "part", rest))
    if not moved_rows:
        return kept, None
    return kept, _relocated(pa.concat_tables(moved_rows), moved)


def _relocated(table: pa.Table, moved: dict[int, FileKey]) -> pa.Table:
    """Moved rows with their new path, size and mtime; the embedding stays."""
    keys = [moved[i] for i in table.column("id").to_pylist()]
    for position_in_key, name in enumerate(("path", "size", "mtime_ns")):
        field = table.schema.field(name)
        values = pa.array([key[position_in_key] for key in keys], field.type)
        table = table.set_column(table.schema.get_field_index(name), field, values)
    return table


def rows_of_files(table: pa.Table, wanted: set[FileKey]) -> pa.Table:
    """The rows of ``table`` whose (path, size, mtime_ns) is in ``wanted``."""
    columns = (table.column(name).to_pylist() for name in ("path", "size", "mtime_ns"))
    keys = zip(*columns, strict=True)
    return table.filter(pa.array([key in wanted for key in keys], pa.bool_()))
