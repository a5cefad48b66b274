"""Build or update an index: scan → diff → decode → embed → catalog parts → vectors → commit.

``update_index`` is what ``clipsearch index`` runs. It holds the index's lock for the whole
run; readers never need it, because they only follow the committed manifest.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipsearch.base import process_group
from clipsearch.base.durable import write_failure
from clipsearch.base.images import DEFAULT_MAX_PIXELS
from clipsearch.base.process_group import Group
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.diff import Changes, content_hash, diff, normalized_roots, under_roots
from clipsearch.ingest.scan import FileEntry, ScanOptions, ScanProblem, scan
from clipsearch.model.spec import parse_spec
from clipsearch.ocr.reader import check_installed
from clipsearch.ocr.reader import joined as ocr_text
from clipsearch.settings import default_model_spec
from clipsearch.store import catalog, layout, vectors
from clipsearch.store.manifest import Manifest, VectorIndexInfo, read_manifest
from clipsearch.store.snapshots import commit_next, index_lock, tidy, vectors_of_parts
from clipsearch.store.staging import Staging
from clipsearch.store.storage import snapshot_path
from clipsearch.store.vectors import VectorIndexConfig

if TYPE_CHECKING:
    import faiss

    from clipsearch.ingest.loader import DecodedFile, FailedFile
    from clipsearch.model import Model


def default_workers() -> int:
    """Decode processes: at least 4, one per core up to 8.

    They run at the lowest priority and fill the moments the model leaves its cores idle;
    on 2 cores 4 of them kept the model fed better than 2 (benchmarks/RESULTS.md)."""
    return max(4, min(8, os.cpu_count() or 1))


@dataclass
class IndexOptions:
    scan: ScanOptions = field(default_factory=ScanOptions)
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    max_pixels: int = DEFAULT_MAX_PIXELS
    part_rows: int = 512  # embedded rows per staged part: the most a kill -9 can lose
    catalog_part_rows: int = catalog.PART_ROWS  # the most rows a commit holds at once
    embedding_dtype: str = "float16"
    device: str = "auto"
    cache_dir: str | None = None
    engine: str = "auto"
    precision: str = "auto"
    vectors: VectorIndexConfig = field(default_factory=VectorIndexConfig)
    # Read the text in photos (OCR)? None: as the index was told last (a new index: no).
    read_text: bool | None = None


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...


@dataclass
class IndexSummary:
    index: str
    model: str
    new: int = 0  # new files indexed (files that failed count under errors)
    changed: int = 0
    moved: int = 0
    removed: int = 0
    errors: int = 0
    unchanged: int = 0
    embedded: int = 0
    resumed: int = 0  # rows embedded by an interrupted earlier run and re-used
    text_read: int = 0  # photos whose text was read (OCR), new ones and indexed ones
    images: int = 0  # images in the index after this run
    seconds: float = 0.0  # the whole run
    embed_seconds: float = 0.0  # decoding and embedding only
    committed: bool = False

    def line(self) -> str:
        notes = []
        if self.embedded and self.embed_seconds:
            notes.append(f"{self.embedded / self.embed_seconds:,.0f} img/s")
        if self.text_read:
            notes.append(f"text read in {self.text_read:,}")
        if self.resumed:
            notes.append(f"{self.resumed:,} embedded by an interrupted run, re-used")
        return (
            f"indexed {self.new:,} new, {self.changed:,} changed, {self.moved:,} moved, "
            f"{self.removed:,} removed, {self.errors:,} errors in {self.seconds:.1f} s"
            + (f" ({'; '.join(notes)})" if notes else "")
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def update_index(
    paths: Sequence[str | os.PathLike],
    index_dir: Path,
    model_spec: str | None = None,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexSummary | None:
    """Bring the index at ``index_dir`` in line with the image files under ``paths``.

    Under torchrun every rank embeds a share of the files and rank 0 commits; ranks other
    than 0 return None.
    """
    start = time.perf_counter()
    options = options or IndexOptions()
    problems: list[ScanProblem] = []
    entries = list(scan(paths, options.scan, on_problem=problems.append))
    group = process_group.join()
    # Under torchrun, rank 0 alone writes the manifest, so it alone holds the lock.
    with index_lock(index_dir) if group.is_main else nullcontext():
        group.barrier()  # the others read the manifest only once rank 0 holds the lock
        run = _Run(index_dir, read_manifest(index_dir), model_spec, options, progress)
        summary = run.execute(entries, problems, normalized_roots(paths), group)
        group.barrier()  # a rank that exits early must not outlive the commit it waits for
    if summary is not None:
        summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class _Plan:
    """What one run will do, worked out on rank 0 before any embedding."""

    changes: Changes
    todo: list[tuple[FileEntry, int]]  # files to embed, each with the id it gets
    reused: int  # rows an interrupted run staged, taken as they are
    next_id: int  # the first id not given out
    wanted: set[tuple[str, int, int]]  # (path, size, mtime) of every file this run adds
    reread: set[int]  # ids of indexed photos whose text is read now (their embedding stays)
    old_errors: list[dict[str, Any]]  # the error list of the snapshot before


class _Run:
    """One indexing run; its methods follow the pipeline in order."""

    def __init__(
        self,
        index_dir: Path,
        manifest: Manifest | None,
        model_spec: str | None,
        options: IndexOptions,
        progress: Progress | None,
    ) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self.options = options
        self.progress = progress
        self.model: Model | None = None
        self.spec = _choose_spec(manifest, model_spec)
        told = options.read_text
        self.read_text = told if told is not None else bool(manifest and manifest.ocr)
        if self.read_text:
            check_installed()  # here, not in each decode worker
        if manifest is None or self.spec != manifest.model_spec:
            self._load_model()  # a new index, or a model spec that must be checked against it

    # -- pipeline --------------------------------------------------------------------------

    def execute(
        self, entries: list[FileEntry], problems: list[ScanProblem], roots: list[str], group: Group
    ) -> IndexSummary | None:
        """Plan on rank 0, embed on every rank, commit on rank 0 (None on other ranks)."""
        plan = self._plan(entries, roots) if group.is_main else None
        changes, todo, reused, reread = group.broadcast(
            (plan.changes, plan.todo, plan.reused, plan.reread) if plan else None
        )
        staging = self._staging()
        embed_start = time.perf_counter()
        mine = todo[group.rank :: group.world]
        failures = self._embed(mine, staging, reread) if mine else []
        failures = [f for rank_failures in group.gather(failures) for f in rank_failures]
        group.barrier()  # every rank's staged parts are on disk
        if plan is None:  # not rank 0
            return None
        # An indexed photo that cannot be decoded now keeps its row (it is no new error).
        kept = {entry.path for entry, row_id in todo if row_id in reread}
        unread = sum(f.entry.path in kept for f in failures)
        failures = [f for f in failures if f.entry.path not in kept]
        failed = {f.entry.path for f in failures}
        summary = IndexSummary(
            index=str(self.index_dir),
            model=self.spec,
            new=sum(entry.path not in failed for entry in changes.new),
            changed=sum(entry.path not in failed for entry, _ in changes.changed),
            moved=len(changes.moved),
            removed=len(changes.removed),
            unchanged=changes.unchanged,
            embedded=len(todo) - len(failures) - sum(i in reread for _, i in todo),
            resumed=reused,
            text_read=len(todo) - len(failures) - unread if self.read_text else 0,
            embed_seconds=time.perf_counter() - embed_start if todo else 0.0,
        )
        errors = self._error_rows(changes, failures, problems)
        summary.errors = sum(under_roots(e["path"], roots) for e in errors)
        read_again = len(plan.reread) > unread  # now, or staged by an earlier run
        unchanged = not (changes.catalog_changes or read_again) and _same_errors(
            errors, plan.old_errors
        )
        if self.manifest and unchanged and self.manifest.ocr == self.read_text:
            summary.images = self.manifest.counts["images"]
            return summary
        try:
            manifest = self._commit(plan, staging, errors)
        except (OSError, ClipsearchError) as exc:  # a full disk, most likely
            # What the failed commit wrote is no snapshot's: out of the index's folders now,
            # not at the next run (by the manifest on disk, should the commit have landed).
            with contextlib.suppress(OSError, ClipsearchError):
                tidy(self.index_dir, read_manifest(self.index_dir))
            detail = write_failure(exc) if isinstance(exc, OSError) else str(exc)
            before = self.manifest.snapshot if self.manifest else 0
            raise ClipsearchError(
                f"cannot commit index {self.index_dir}: {detail}; the index is unchanged "
                f"(snapshot {before}) and the images embedded so far stay staged for the next run"
            ) from None
        staging.clear()
        summary.images, summary.committed = manifest.counts["images"], True
        return summary

    def _plan(self, entries: list[FileEntry], roots: list[str]) -> _Plan:
        """What changed, and which files still need embedding (with the id each gets)."""
        tidy(self.index_dir, self.manifest)
        catalog_files, old_errors = self._current_state()
        changes = diff(entries, catalog_files, old_errors, roots, _hash_or_none)
        reread = self._unread(entries, catalog_files) if self.read_text and self.manifest else []
        return self._split_staged(changes, reread, old_errors, self._staging())

    def _unread(
        self, entries: list[FileEntry], catalog_files: pa.Table
    ) -> list[tuple[FileEntry, int]]:
        """Indexed photos, unchanged on disk, whose text was never read: (file, its id)."""
        unread = catalog_files.filter(pc.is_null(catalog_files.column("text")))
        columns = (unread.column(name).to_pylist() for name in ("path", "size", "mtime_ns", "id"))
        ids = {
            (path, size, mtime): row_id for path, size, mtime, row_id in zip(*columns, strict=True)
        }
        return [(entry, ids[_file_key(entry)]) for entry in entries if _file_key(entry) in ids]

    def _staging(self) -> Staging:
        identity = self.manifest.model if self.manifest else self._model().identity
        return Staging(self.index_dir, self.manifest.snapshot if self.manifest else 0, identity)

    def _current_state(self) -> tuple[pa.Table, list[dict[str, Any]]]:
        """The catalog's file columns (Arrow: see ``diff``) and the error list's rows."""
        schema = self._schema()
        if self.manifest is None:
            return schema.empty_table().select(catalog.FILE_COLUMNS), []
        columns = catalog.FILE_COLUMNS + (["text"] if self.read_text else [])
        files = catalog.read_tables(self.index_dir, self.manifest.catalog, columns, schema)
        return files, self._read_errors().to_pylist()

    def _split_staged(
        self,
        changes: Changes,
        reread: list[tuple[FileEntry, int]],
        old_errors: list[dict[str, Any]],
        staging: Staging,
    ) -> _Plan:
        """The plan: files still to embed or read (with the id each gets), and how many an
        earlier run staged."""
        wanted = [*changes.changed, *reread]
        next_id = self.manifest.next_id if self.manifest else 0
        leftovers = staging.leftovers(["id", "path", "size", "mtime_ns"])
        done: dict[tuple[str, int, int], int] = {}
        if leftovers is not None:
            for row in leftovers.to_pylist():
                done[row["path"], row["size"], row["mtime_ns"]] = row["id"]
                next_id = max(next_id, row["id"] + 1)
        for entry in changes.new:
            staged_id = done.get(_file_key(entry))
            if staged_id is None:
                staged_id, next_id = next_id, next_id + 1
            wanted.append((entry, staged_id))
        todo = [(entry, row_id) for entry, row_id in wanted if _file_key(entry) not in done]
        return _Plan(
            changes=changes,
            todo=todo,
            reused=len(wanted) - len(todo),
            next_id=next_id,
            wanted={_file_key(entry) for entry, _ in wanted},
            reread={row_id for _, row_id in reread},
            old_errors=old_errors,
        )

    def _embed(
        self, todo: list[tuple[FileEntry, int]], staging: Staging, reread: set[int]
    ) -> list[FailedFile]:
        """Decode ``todo`` in workers, embed the new and changed photos, read the text of
        every one when asked (``reread``: indexed photos that only get their text), and stage
        the rows; the files that could not be decoded."""
        from clipsearch.ingest.loader import decoded_batches

        model, options = self._model(), self.options
        ids = {entry.path: row_id for entry, row_id in todo}
        failures: list[FailedFile] = []
        tables: list[pa.Table] = []
        rows = 0
        if self.progress:
            self.progress.start(len(todo))
        batches = decoded_batches(
            [entry for entry, _ in todo],
            model.preprocess,
            min_side=model.image_size,
            batch_size=options.batch_size,
            workers=options.workers,
            max_pixels=options.max_pixels,
            read_text=self.read_text,
        )
        for batch in batches:
            fresh = [i for i, f in enumerate(batch.files) if ids[f.entry.path] not in reread]
            if fresh:
                new_rows = [
                    _catalog_row(batch.files[i], ids[batch.files[i].entry.path]) for i in fresh
                ]
                embeddings = model.embed_pixels(batch.pixels[fresh])
                tables.append(catalog.rows_to_table(new_rows, embeddings, self._schema()))
            if len(fresh) < len(batch.files):
                tables.append(self._with_text(batch.files, ids, reread))
            failures += batch.failures
            rows += len(batch.files)
            if rows >= options.part_rows:
                staging.write(pa.concat_tables(tables))
                tables, rows = [], 0
            if self.progress:
                self.progress.advance(len(batch.files) + len(batch.failures))
        if tables:
            staging.write(pa.concat_tables(tables))
        return failures

    def _with_text(
        self, files: list[DecodedFile], ids: dict[str, int], reread: set[int]
    ) -> pa.Table:
        """The catalog rows of indexed photos read again for their text: the rows as they
        are (embedding included), with the text read now."""
        assert self.manifest is not None  # only an existing index has photos to read again
        read = {ids[f.entry.path]: f for f in files if ids[f.entry.path] in reread}
        lookup = catalog.RowLookup(self.index_dir, self.manifest.catalog)
        schema = self._schema()
        table = catalog.conform(lookup.rows(list(read), schema.names), schema)
        lines = [read[row_id].text_lines or [] for row_id in table.column("id").to_pylist()]
        table = table.set_column(
            table.schema.get_field_index("text"),
            schema.field("text"),
            pa.array([ocr_text(found) for found in lines], pa.string()),
        )
        return table.set_column(
            table.schema.get_field_index("text_lines"),
            schema.field("text_lines"),
            pa.array(
                [[line.as_dict() for line in found] for found in lines],
                schema.field("text_lines").type,
            ),
        )

    def _commit(self, plan: _Plan, staging: Staging, errors: list[dict[str, Any]]) -> Manifest:
        changes, schema = plan.changes, self._schema()
        restaged = self._restaged(plan.reread, staging)
        parts: list[str] = []
        moved_rows = None
        if self.manifest is not None:
            moved = {row_id: _file_key(entry) for entry, row_id in changes.moved}
            dropped = [*changes.removed, *(row_id for _, row_id in changes.changed), *restaged]
            parts, moved_rows = catalog.without_rows(
                self.index_dir, self.manifest.catalog, dropped, moved, schema
            )
        if moved_rows is not None:  # write_parts writes no part for no rows
            parts += catalog.write_parts(self.index_dir, [moved_rows])
        # Staged rows go into the catalog part by part, never all at once (ten million rows of
        # 512-dim float16 embeddings are 10 GB).
        staged = (
            catalog.conform(catalog.rows_of_files(table, plan.wanted), schema)
            for table in staging.tables()
        )
        added = catalog.write_parts(self.index_dir, staged, self.options.catalog_part_rows)
        parts += added
        manifest = self._next_manifest(parts, plan.next_id)
        index, info = self._update_vectors(changes, added, parts, restaged)
        manifest.counts = {"images": info.count, "errors": len(errors)}
        manifest.errors = None
        if errors:
            table = pa.Table.from_pylist(errors, schema=catalog.ERRORS_SCHEMA)
            manifest.errors = catalog.write_new_table(
                self.index_dir, layout.ERRORS_DIR, "errors", table
            )
        return commit_next(self.index_dir, self.manifest, manifest, (index, info))

    # -- pieces ----------------------------------------------------------------------------

    def _model(self) -> Model:
        if self.model is None:
            self._load_model()
        assert self.model is not None
        return self.model

    def _load_model(self) -> None:
        from clipsearch.model import BuiltWith, Model, load_for

        options = self.options
        if self.manifest is None:
            load: Callable[..., Model] = Model.load
        else:
            built_with = BuiltWith.image_index(self.manifest.model, self.index_dir)
            load = functools.partial(load_for, built_with)
        self.model = load(
            self.spec,
            device=options.device,
            precision=options.precision,
            cache_dir=options.cache_dir,
            engine=options.engine,
        )

    def _schema(self) -> pa.Schema:
        if self.manifest:
            return catalog.catalog_schema(
                self.manifest.embedding_dim, self.manifest.embedding_dtype
            )
        return catalog.catalog_schema(self._model().dim, self.options.embedding_dtype)

    def _read_errors(self) -> pa.Table:
        if self.manifest is None or not self.manifest.errors:
            return catalog.ERRORS_SCHEMA.empty_table()
        return pq.read_table(self.index_dir / self.manifest.errors)

    def _error_rows(
        self, changes: Changes, failures: list[FailedFile], problems: list[ScanProblem]
    ) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        rows = [dict(row) for row in changes.known_errors]
        rows += [
            {
                "path": f.entry.path,
                "size": f.entry.size,
                "mtime_ns": f.entry.mtime_ns,
                "reason": f.reason,
                "seen_at": now,
            }
            for f in failures
        ]
        rows += [
            {"path": p.path, "size": None, "mtime_ns": None, "reason": p.reason, "seen_at": now}
            for p in problems
        ]
        return sorted(rows, key=lambda r: r["path"])

    def _next_manifest(self, parts: list[str], next_id: int) -> Manifest:
        """The manifest after this run, but for what the commit fills in (vectors, counts,
        errors); what it does not change (zero-shot labels, say) carried over."""
        old = self.manifest
        embedded_with = set(old.embedded_with if old else [])
        if self.model is not None:
            embedded_with.add(f"{self.model.engine}/{self.model.precision}")
        if old is not None:
            return replace(
                old,
                next_id=next_id,
                catalog=parts,
                embedded_with=sorted(embedded_with),
                ocr=self.read_text,
            )
        assert self.model is not None  # a new index loads its model first
        return Manifest(
            model=self.model.identity,
            embedding_dim=self.model.identity.dim,
            embedding_dtype=self.options.embedding_dtype,
            next_id=next_id,
            catalog=parts,
            embedded_with=sorted(embedded_with),
            ocr=self.read_text,
        )

    def _restaged(self, reread: set[int], staging: Staging) -> list[int]:
        """The ids of ``reread`` photos whose rows (with their text) are staged: their rows
        in the catalog are replaced by those."""
        if not reread:
            return []
        staged = staging.leftovers(["id"])
        ids = staged.column("id").to_pylist() if staged is not None else []
        return [row_id for row_id in ids if row_id in reread]

    def _update_vectors(
        self, changes: Changes, added: list[str], parts: list[str], restaged: list[int]
    ) -> tuple[faiss.Index, VectorIndexInfo]:
        dim = self._schema().field("embedding").type.list_size
        everything = vectors_of_parts(self.index_dir, parts, dim)
        old = self.manifest.vector_index if self.manifest else None
        if old is None:
            return vectors.build_from(everything, self.options.vectors)
        return vectors.update(
            vectors.load(snapshot_path(self.index_dir, old.file)),
            old.info,
            # Photos read again for their text come back with the same vectors, in ``added``.
            remove_ids=np.array(
                [*changes.removed, *(i for _, i in changes.changed), *restaged], np.int64
            ),
            added=vectors_of_parts(self.index_dir, added, dim),
            everything=everything,
            config=self.options.vectors,
        )


def _choose_spec(manifest: Manifest | None, requested: str | None) -> str:
    if manifest is None:
        return str(parse_spec(requested or default_model_spec()))
    if requested is None:
        return manifest.model_spec
    return str(parse_spec(requested))


def _file_key(entry: FileEntry) -> tuple[str, int, int]:
    return entry.path, entry.size, entry.mtime_ns


def _hash_or_none(entry: FileEntry) -> str | None:
    try:
        return content_hash(entry.path, entry.size)
    except OSError:
        return None


def _catalog_row(decoded: DecodedFile, row_id: int) -> dict[str, Any]:
    entry, info = decoded.entry, decoded.info
    return {
        "id": row_id,
        "path": entry.path,
        "size": entry.size,
        "mtime_ns": entry.mtime_ns,
        "content_hash": decoded.content_hash,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "taken_at": info.taken_at,
        "indexed_at": datetime.now(timezone.utc),
        "fingerprint": decoded.fingerprint,
        "text": None if decoded.text_lines is None else ocr_text(decoded.text_lines),
        "text_lines": None
        if decoded.text_lines is None
        else [line.as_dict() for line in decoded.text_lines],
    }


def _same_errors(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> bool:
    def key(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(r["path"], r["size"], r["mtime_ns"], r["reason"]) for r in rows}

    return key(new) == key(old)


__all__ = ["IndexOptions", "IndexSummary", "Progress", "update_index"]
