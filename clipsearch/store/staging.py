"""Embedded rows waiting for the next commit, kept on disk so an interrupted run resumes.

While indexing, every few hundred images are written as a Parquet part under ``staging/``.
If the run dies (Ctrl-C, kill -9, power cut), the next run finds those parts and re-uses
each row whose file is still the same (path, size, mtime), instead of embedding it again.
Staging is tied to the snapshot and model it was made for; anything else is discarded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch.base import access
from clipsearch.base.durable import publishing, write_failure
from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.store.catalog import write_table
from clipsearch.store.layout import STAGING_DIR, STAGING_STATE_NAME


class Staging:
    def __init__(self, index_dir: Path, base_snapshot: int, model: ModelIdentity) -> None:
        self.directory = index_dir / STAGING_DIR
        self.state = {"base_snapshot": base_snapshot, "model": model.as_dict()}
        self.wrote_state = False

    def leftovers(self, columns: list[str]) -> pa.Table | None:
        """``columns`` of the rows staged by an earlier, interrupted run for this snapshot and
        model, if any."""
        try:
            earlier = json.loads((self.directory / STAGING_STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier != self.state:
            stale = self.count() if earlier is not None else 0
            if stale:
                # Never mix embeddings of two models, or rows planned against another snapshot.
                same_model = earlier.get("model") == self.state["model"]
                why = "an index state that has changed since" if same_model else "another model"
                print(
                    f"note: discarding {stale:,} rows an interrupted run embedded with {why}",
                    file=sys.stderr,
                )
            self.clear()
            return None
        parts = self._parts()
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in parts) if parts else None

    def write(self, table: pa.Table) -> None:
        """Stage rows; under torchrun every rank writes its own parts into the same folder."""
        try:
            if not self.wrote_state:
                self._write_state()
            write_table(self.directory, "part", table)
        except OSError as exc:  # a full disk, most likely
            raise ClipsearchError(
                f"cannot save embedded rows in {self.directory}: {write_failure(exc)}; the "
                "index is unchanged, and the rows saved so far are kept for the next run"
            ) from None

    def _write_state(self) -> None:
        access.make_dir(self.directory)
        tmp = self.directory / f".{STAGING_STATE_NAME}.{os.getpid()}.tmp"  # one per torchrun rank
        with publishing(tmp, self.directory / STAGING_STATE_NAME):
            tmp.write_text(json.dumps(self.state), encoding="utf-8")
        self.wrote_state = True

    def tables(self) -> Iterator[pa.Table]:
        """The staged rows, one staged part at a time, whichever process staged it."""
        for part in self._parts():
            yield pq.read_table(part)

    def count(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._parts())

    def _parts(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet"))

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.wrote_state = False
