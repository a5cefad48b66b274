"""Read one committed snapshot of an image index: its manifest, catalog and vector index.

A snapshot never changes once committed, so everything here can be cached. If a commit
removes a part while we read it, we reopen the new snapshot and try again.

Catalog rows and ``where`` filters come from the Parquet parts through DuckDB, or from a
``RowSource`` a long-lived reader attaches (``keep_rows``): the server keeps each snapshot's
rows in memory, where ten rows by id cost microseconds instead of milliseconds.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from clipsearch.errors import ClipsearchError
from clipsearch.store.layout import LEGACY_TAGS_NAME
from clipsearch.store.manifest import (
    Manifest,
    VectorIndexFile,
    VectorIndexInfo,
    damaged,
    open_manifest,
)
from clipsearch.store.storage import snapshot_path

if TYPE_CHECKING:
    import duckdb
    import faiss
    import pyarrow as pa

    from clipsearch.store.catalog import RowLookup

T = TypeVar("T")
_KEPT_FILTERS = 8  # filter results a snapshot keeps (ids: 8 MB per million matching rows)
# Reads of a file that moved or went: one more look for this snapshot's files (a commit moved
# them into retired/), then two tries on the newest snapshot.
_RETRIES = 4
_ZONED = "TIMESTAMP WITH TIME ZONE"
# Per-image arrays in the catalog: read by embedding and duplicate code, not rows to show.
ARRAY_COLUMNS = ("embedding", "fingerprint")
EXACT_KINDS = ("flat", "ivf-flat")  # vector indexes that hold the catalog's embeddings as is


class RowSource(Protocol):
    """Catalog rows held elsewhere than the Parquet parts (in memory, say)."""

    types: dict[str, str]  # column name → DuckDB type, of the columns it holds

    def rows(self, ids: Sequence[int], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
        """{id: {column: value}} for those of ``ids`` present."""
        ...

    def matching_ids(self, where: str) -> np.ndarray:
        """Ids of the rows that satisfy a SQL predicate, run only once ``filters`` accepts
        it (a ClipsearchError when refused or invalid)."""
        ...


class Snapshot:
    """The committed state of an index: rows and filters through DuckDB over the Parquet
    parts (or the attached ``row_source``), embeddings from the parts by row group, vectors
    from the FAISS file."""

    def __init__(self, index_dir: Path, manifest: Manifest | None = None) -> None:
        self.index_dir = index_dir
        self.manifest = manifest or open_manifest(index_dir)
        self.row_source: RowSource | None = None
        # Zero-shot labels written by an older clipsearch sit beside the catalog, outside any
        # snapshot: part of the state all the same.
        self.version = (self.manifest.snapshot, file_stamp(index_dir / LEGACY_TAGS_NAME))

    @property
    def number(self) -> int:
        """The snapshot's number: one more with every commit."""
        return int(self.manifest.snapshot)

    def keep_rows(self, source: RowSource) -> None:
        """Answer rows, columns and filters from ``source`` (built from this snapshot)."""
        self.row_source = source
        self.__dict__.pop("_matching", None)

    # -- vector index ----------------------------------------------------------------------

    @cached_property
    def vectors(self) -> faiss.Index:
        from clipsearch.store import vectors

        def read() -> faiss.Index:
            name = self.vector_file.file
            path = snapshot_path(self.index_dir, name)
            # IVF indexes are mapped, not read: a query touches a few of their lists. Flat ones
            # (100k vectors at most by default) are read: their mapped vectors sit unaligned
            # in the file, which makes numpy's product over them many times slower.
            mapped = self.vector_info.kind != "flat"
            try:
                return vectors.load(path, mmap=mapped)
            except ClipsearchError:  # (one a commit moved meanwhile: FileNotFoundError)
                raise damaged(self.index_dir, f"the vector index {name} cannot be read") from None

        return self._read(read)

    @property
    def vector_file(self) -> VectorIndexFile:
        if self.manifest.vector_index is None:
            raise damaged(self.index_dir, "its manifest names no vector index")
        return self.manifest.vector_index

    @property
    def vector_info(self) -> VectorIndexInfo:
        return self.vector_file.info

    # -- the words in the photos -----------------------------------------------------------

    @cached_property
    def has_text(self) -> bool:
        """Whether the text of any photo was read (``index --ocr``): from the parts' footers,
        which the row lookup has open anyway."""
        return self._read(lambda: self._lookup.count_values("text")) > 0

    @cached_property
    def folded_text(self) -> tuple[np.ndarray, pa.Array]:
        """(ids, their text folded for word search: ``query.words``) of the photos whose
        text was read; kept with the snapshot."""
        import pyarrow.compute as pc

        from clipsearch.query.words import fold_column

        table = self.table(["id", "text"])
        table = table.filter(pc.is_valid(table.column("text")))
        return table.column("id").to_numpy(), fold_column(table.column("text").combine_chunks())

    # -- catalog through DuckDB ------------------------------------------------------------

    @cached_property
    def db(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with a `catalog` view (catalog parts + zero-shot tags)."""
        import duckdb  # ~45 ms: reads that need no SQL (classify, embeddings) skip it

        connection = duckdb.connect()
        # Where each part is now: a part a commit retired since is in retired/ (its path is
        # fixed in the view: if it moves later, _read looks again).
        parts = [str(snapshot_path(self.index_dir, p)) for p in self.manifest.catalog]
        if parts:
            files = ", ".join(_quote(p) for p in parts)
            # By name: parts written before a column was added (the fingerprint) lack it.
            source = f"read_parquet([{files}], union_by_name = true) AS parts"
        else:
            source = "(SELECT NULL::BIGINT AS id, NULL::VARCHAR AS path WHERE false)"
        tags = self._tags_path()
        if tags is not None:
            source = f"{source} LEFT JOIN read_parquet({_quote(str(tags))}) AS tags USING (id)"
        try:
            connection.execute(f"CREATE VIEW catalog AS SELECT * FROM {source}")
        except duckdb.Error as exc:
            raise self._file_error(exc) or exc from None
        return connection

    def _tags_path(self) -> Path | None:
        """The zero-shot labels: the file the manifest names, or (written before labels
        were committed with a snapshot) ``tags.parquet`` beside it."""
        if self.manifest.tags:
            return snapshot_path(self.index_dir, self.manifest.tags)
        legacy = self.index_dir / LEGACY_TAGS_NAME
        return legacy if legacy.is_file() else None

    def _sql(self, query: str, parameters: list[Any] | None = None, numpy: bool = False) -> Any:
        """Run a query on the catalog view; a missing file raises FileNotFoundError (for
        ``_read`` to retry on the newest snapshot), a damaged one a ClipsearchError."""
        import duckdb

        try:
            result = self.db.execute(query, parameters)
            return result.fetchnumpy() if numpy else result.fetchall()
        except duckdb.Error as exc:
            raise self._file_error(exc) or exc from None

    def arrow(self, query: str) -> pa.Table:
        """A query over the catalog view as a pyarrow table (a server's rows in memory);
        retried on the newest snapshot if a commit moved a part meanwhile."""
        import duckdb

        def read() -> Any:
            try:
                return self.db.sql(query).to_arrow_table()
            except duckdb.Error as exc:
                raise self._file_error(exc) or exc from None

        return self._read(read)

    def _file_error(self, exc: Exception) -> Exception | None:
        """What a DuckDB error about one of this index's files means, or None if it is not."""
        import duckdb

        message = " ".join(str(exc).split()).split(" LINE ")[0]  # not DuckDB's SQL excerpt
        # Only reading a file fails so; a filter comparing with a string that holds the
        # index's path (a conversion error) is the filter's fault, not damage.
        file_kinds = (duckdb.IOException, duckdb.InvalidInputException)
        if str(self.index_dir) not in message or not isinstance(exc, file_kinds):
            return None
        if isinstance(exc, duckdb.IOException):
            return FileNotFoundError(message)
        return damaged(self.index_dir, message)

    def columns(self) -> list[str]:
        return list(self.column_types())

    def column_types(self) -> dict[str, str]:
        """The catalog's columns with their DuckDB types."""
        if self.row_source is not None:
            return self.row_source.types
        return self._read(lambda: self._types)

    @cached_property
    def _types(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self._sql("DESCRIBE catalog")}

    def _selectable(self, name: str) -> str:
        """A column for SELECT; zoned timestamps as UTC (DuckDB needs pytz to return them)."""
        if self._types.get(name) == _ZONED:
            return f"timezone('UTC', {_ident(name)}) AS {_ident(name)}"
        return _ident(name)

    def rows(self, ids: Sequence[int], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
        """Catalog rows by id: {id: {column: value}}; zoned timestamps (``indexed_at``) as
        datetimes in UTC, others (``taken_at``: the camera's clock) naive."""
        if self.row_source is not None:
            self.check_columns(columns)
            return self.row_source.rows(ids, columns) if len(ids) else {}
        if not len(ids):
            return {}
        wanted = ["id", *[c for c in columns if c != "id"]]
        if self._in_parts(wanted):
            table = self._read(lambda: self._lookup.rows(ids, wanted))
            return {row["id"]: row for row in table.to_pylist()}
        self.check_columns(wanted)

        def read() -> list[Any]:
            select = ", ".join(self._selectable(c) for c in wanted)
            query = f"SELECT {select} FROM catalog WHERE id IN (SELECT unnest(?::BIGINT[]))"
            return self._sql(query, [list(map(int, ids))])

        zoned = [i for i, c in enumerate(wanted) if self._types.get(c) == _ZONED]
        found = {}
        for row in self._read(read):
            values = list(row)
            for i in zoned:  # selected as UTC wall time: say so, as the Arrow path does
                values[i] = values[i] and values[i].replace(tzinfo=timezone.utc)
            found[row[0]] = dict(zip(wanted, values, strict=True))
        return found

    @cached_property
    def _lookup(self) -> RowLookup:
        from clipsearch.store.catalog import RowLookup

        return RowLookup(self.index_dir, self.manifest.catalog)

    def _in_parts(self, names: Sequence[str]) -> bool:
        """Whether the catalog parts hold every column in ``names`` (not zero-shot tags)."""
        schema = self._read(lambda: self._lookup.schema)
        return schema is not None and all(name in schema.names for name in names)

    def matching_ids(self, where: str) -> np.ndarray:
        """Ids of the rows that satisfy a DuckDB SQL predicate over the catalog's columns.

        A snapshot never changes, so the answer is kept for the next query with the same
        filter (a page of results, "more like this" within a folder): at 10M rows the scan
        takes a tenth of a second, the search after it a few milliseconds.

        DuckDB runs only a filter ``filters`` accepts (one predicate, nothing that reads or
        writes files): a ClipsearchError names what it refuses."""
        import duckdb

        from clipsearch.query.filters import filter_query

        if where in self._matching:
            return self._matching[where]
        if self.row_source is not None:
            ids = self.row_source.matching_ids(where)  # checked there (server.rows)
        else:

            def read() -> Any:
                # Parsed by the snapshot's own DuckDB: starting another costs 15 ms.
                return self._sql(filter_query(where, self.db), numpy=True)

            try:
                result = self._read(read)
            except duckdb.Error as exc:  # damage to a file is not the filter's fault: see _sql
                raise invalid_filter(where, exc, self._read(lambda: self._types)) from None
            ids = np.asarray(result["id"], dtype=np.int64)
        if len(self._matching) >= _KEPT_FILTERS:
            self._matching.pop(next(iter(self._matching)))  # the oldest
        self._matching[where] = ids
        return ids

    @cached_property
    def _matching(self) -> dict[str, np.ndarray]:
        return {}

    def id_of_file(self, path: str, size: int, mtime_ns: int) -> int | None:
        """The id of an indexed, unchanged file, or None."""
        query = "SELECT id FROM catalog WHERE path = ? AND size = ? AND mtime_ns = ? LIMIT 1"
        found = self._read(lambda: self._sql(query, [path, size, mtime_ns]))
        return found[0][0] if found else None

    def embeddings(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 embeddings) of the given rows (those that exist), or of every row."""
        if ids is None:
            table = self.table(["id", "embedding"])
        elif not len(ids):
            return np.empty(0, np.int64), np.empty((0, self.manifest.embedding_dim), np.float32)
        else:
            held = self._held_embeddings(ids)
            if held is not None:
                return held
            # only the row groups holding them, only their rows kept
            table = self._read(lambda: self._lookup.rows(ids, ["embedding"]))
        return table.column("id").to_numpy(), self.embeddings_of(table)

    def _held_embeddings(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """The embeddings from a loaded vector index that holds them exactly (no Parquet
        read: "more like this" in the server), or None."""
        if "vectors" not in self.__dict__ or self.vector_info.kind not in EXACT_KINDS:
            return None
        unique = np.unique(np.asarray(ids, np.int64))
        try:
            found = np.stack([self.vectors.reconstruct(int(i)) for i in unique])
        except RuntimeError:  # an id it lacks, or an IVF without its id map: read Parquet
            return None
        return unique, found.astype(np.float32, copy=False)

    def embeddings_of(self, table: Any) -> np.ndarray:
        from clipsearch.store.catalog import embeddings_of

        return embeddings_of(table).reshape(-1, self.manifest.embedding_dim)

    def table(self, columns: Sequence[str], ids: Sequence[int] | None = None) -> pa.Table:
        """Catalog columns as one pyarrow table (bulk reads: faster than DuckDB round trips)."""
        from clipsearch.store.catalog import catalog_schema, read_tables

        def read() -> Any:
            manifest = self.manifest
            schema = catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
            table = read_tables(self.index_dir, manifest.catalog, list(columns), schema)
            if ids is not None:
                import pyarrow as pa
                import pyarrow.compute as pc

                table = table.filter(pc.is_in(table.column("id"), pa.array(ids, pa.int64())))
            return table

        return self._read(read)

    def check_columns(self, names: Sequence[str]) -> None:
        """A ClipsearchError naming the columns the catalog lacks, if any."""
        if not names or (self.row_source is None and self._in_parts(names)):
            return  # known without starting DuckDB (~45 ms of a cold query)
        known = set(self.columns())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ClipsearchError(
                f"unknown catalog column(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )

    def _read(self, read: Callable[[], T]) -> T:
        """Run a read; if a file it needs is not where it was looked for, look again: first
        for this snapshot's files (a commit meanwhile moved them into retired/, and DuckDB's
        view names the paths they had), then, once they are gone (deleted after their grace
        period), in the newest snapshot."""
        for attempt in range(_RETRIES):
            try:
                return read()
            except FileNotFoundError as exc:  # DuckDB's errors for missing files: see _sql
                if attempt == _RETRIES - 1:
                    detail = " ".join(str(exc).split())
                    gone = f"a file its manifest names is gone: {detail}"
                    raise damaged(self.index_dir, gone) from None
                if attempt > 0:
                    self.manifest = open_manifest(self.index_dir)
                for cached in ("db", "_types", "_lookup", "_matching"):
                    self.__dict__.pop(cached, None)
        raise AssertionError("unreachable")


def file_stamp(path: str | Path) -> tuple[int, int, int] | None:
    """What changes when a file is written or replaced: mtime, inode, size (None: absent)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


def invalid_filter(where: str, exc: Exception, columns: Iterable[str] = ()) -> ClipsearchError:
    """The one-line error for a predicate DuckDB refused; an unknown column lists the known."""
    # DuckDB ends with the statement and a caret under the fault: noise on one line.
    message = " ".join(str(exc).split("\nLINE ")[0].split())
    unknown = re.search(r'Referenced column "(.+?)" not found', message)
    if unknown and columns:
        # DuckDB's "Candidate bindings" name a column however unlike the one asked for.
        shown = [c for c in columns if c not in ARRAY_COLUMNS]
        near = difflib.get_close_matches(unknown[1], shown, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        message = f"no column {unknown[1]}{hint}; the columns are {', '.join(shown)}"
    return ClipsearchError(f"invalid filter {where!r}: {message}", parameter="where")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
