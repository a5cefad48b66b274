"""The catalog of one snapshot in memory, minus embeddings: hits' rows in microseconds and
``where`` filters run by a DuckDB that cannot touch any file. The server attaches one to
every snapshot it serves (``Snapshot.keep_rows``), so ``Index`` reads go here.

Reading ten rows by id from the Parquet parts costs DuckDB 5 to 15 ms per query (it scans
the id column of every part); a warm server answers from this Arrow table instead (about
140 bytes per image: 14 MB for 100k). A client's ``where`` runs on a private connection
whose only table is this one, with file access disabled and its settings locked, after
``query.filters`` has accepted it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from clipsearch.query.filters import filter_query
from clipsearch.query.snapshot import ARRAY_COLUMNS, Snapshot, invalid_filter


class RowStore:
    """A ``snapshot.RowSource``: the rows of one snapshot as an Arrow table."""

    def __init__(self, snapshot: Snapshot, threads: int = 1) -> None:
        # Only columns the catalog has: parts written before the fingerprint lack it.
        # Never copied here, never sent to clients.
        hidden = ", ".join(f'"{c}"' for c in ARRAY_COLUMNS if c in snapshot.columns())
        query = f"SELECT * EXCLUDE ({hidden}) FROM catalog ORDER BY id"
        self.table: pa.Table = snapshot.arrow(query).combine_chunks()
        self.ids = self.table.column("id").to_numpy()
        self._lock = threading.Lock()
        self._db = duckdb.connect(config={"enable_external_access": False, "threads": threads})
        self._db.register("catalog_rows", self.table)
        self._db.execute("CREATE VIEW catalog AS SELECT * FROM catalog_rows")
        self._db.execute("SET lock_configuration = true")
        described = self._db.execute("DESCRIBE catalog").fetchall()
        self.types: dict[str, str] = {name: kind for name, kind, *_ in described}

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[int], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
        """{id: {column: value}} for the ids present (an id a commit removed is left out);
        the columns are known ones (``Snapshot.rows`` checks)."""
        wanted = list(dict.fromkeys(["id", *columns]))
        if not len(ids) or not len(self.ids):
            return {}
        asked = np.asarray(ids, dtype=np.int64)
        positions = np.searchsorted(self.ids, asked).clip(0, len(self.ids) - 1)
        present = self.ids[positions] == asked
        found = self.table.take(pa.array(positions[present])).select(wanted).to_pylist()
        return {row["id"]: row for row in found}

    def matching_ids(self, where: str) -> np.ndarray:
        """Ids of the rows that satisfy a ``where`` predicate, once ``filters`` accepts it."""
        query = filter_query(where)
        try:
            with self._lock:
                found = self._db.execute(query).fetchnumpy()
        except duckdb.Error as exc:
            raise invalid_filter(where, exc, self.types) from None
        return np.asarray(found["id"], dtype=np.int64)
