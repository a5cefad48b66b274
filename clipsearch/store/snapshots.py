"""The one way an index directory gets a new snapshot: ``commit_next``.

Every writer (``clipsearch index``, ``repair`` and ``rebuild``, text collections, zero-shot
labels) holds the directory's lock (``index_lock``), brings the folder in line with the
committed manifest (``tidy``), writes its new files into ``pending/`` (``new_file_path``,
``catalog.write_new_table``), then calls ``commit_next`` with the manifest it wants: the
snapshot number, the vector index's file and the manifest's rename are done here, the same
way for all of them (``storage.commit_snapshot`` has the protocol).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Set
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch.base.durable import write_failure
from clipsearch.errors import ClipsearchError
from clipsearch.store import catalog, layout, vectors
from clipsearch.store.manifest import (
    Manifest,
    VectorIndexFile,
    VectorIndexInfo,
    open_manifest,
    read_manifest,
)
from clipsearch.store.storage import (
    commit_snapshot,
    new_file_path,
    remove_unreferenced,
    writer_lock,
)

if TYPE_CHECKING:
    import faiss
    import pyarrow as pa


def index_lock(index_dir: Path, what: str = "index") -> AbstractContextManager[None]:
    """One writer per index: a second one fails at once instead of racing."""
    return writer_lock(index_dir, what)


def tidy(directory: Path, manifest: Manifest | None, also: Set[str] = frozenset()) -> None:
    """Bring ``directory`` in line with the committed ``manifest`` before a writer reads or
    writes anything, and after its commit (``storage.remove_unreferenced``): files it names
    back from retired/ (a writer died mid-commit); what pending/ holds, and the files of the
    snapshot folders it does not name, deleted; retired files deleted once their grace has
    passed. ``also``: more files (relative paths) a writer of this directory makes."""
    remove_unreferenced(directory, manifest, [*_snapshot_folder_files(directory), *also])


def _snapshot_folder_files(directory: Path) -> Iterable[str]:
    for folder in layout.SNAPSHOT_DIRS:
        if (directory / folder).is_dir():
            for path in (directory / folder).iterdir():
                yield f"{folder}/{path.name}"


def commit_next(
    directory: Path,
    previous: Manifest | None,
    manifest: Manifest,
    vector_index: tuple[faiss.Index, VectorIndexInfo] | None = None,
    also: Set[str] = frozenset(),
) -> Manifest:
    """Commit ``manifest`` as the snapshot after ``previous`` (None: the first) and return it
    as committed: its number is set here, and ``vector_index`` (a built index and what it
    holds), when given, is written as this snapshot's vector file. The files the manifest
    names must be in place or in ``pending/``. Whether it succeeds or fails, what no snapshot
    names is cleared away afterwards (``tidy``, with ``also``)."""
    number = (previous.snapshot if previous else 0) + 1
    committed = replace(manifest, snapshot=number)
    try:
        if vector_index is not None:
            index, info = vector_index
            name = layout.vector_file(number)
            vectors.save(index, new_file_path(directory, name))
            committed.vector_index = VectorIndexFile(name, info)
        commit_snapshot(directory, committed, previous)
    except BaseException:
        # What the failed commit wrote is no snapshot's: out of the folders now, not at the
        # next write (by the manifest on disk, should the commit have landed).
        with contextlib.suppress(OSError, ClipsearchError):
            tidy(directory, read_manifest(directory, manifest.kind), also)
        raise
    tidy(directory, committed, also)
    return committed


def vectors_of_parts(index_dir: Path, parts: list[str], dim: int) -> vectors.VectorSource:
    """The embeddings of catalog ``parts``, as a vector build reads them: in chunks."""
    return vectors.VectorSource(
        catalog.count_rows(index_dir, parts), dim, lambda: catalog.iter_embeddings(index_dir, parts)
    )


def commit_tags(index_dir: Path, table: pa.Table) -> Manifest:
    """Commit zero-shot labels (a table with ``id`` and label columns) with a new snapshot
    of the image index at ``index_dir``; they replace the labels committed before."""
    open_manifest(index_dir)  # no index there: say so before the lock creates the folder
    with index_lock(index_dir):
        previous = open_manifest(index_dir)
        tidy(index_dir, previous)
        name = layout.tags_file(previous.snapshot + 1)
        try:
            catalog.write_parquet(new_file_path(index_dir, name), table)
            committed = commit_next(index_dir, previous, replace(previous, tags=name))
        except OSError as exc:  # a full disk, most likely
            raise ClipsearchError(
                f"cannot write the labels into {index_dir}: {write_failure(exc)}; "
                "the labels written before are unchanged"
            ) from None
        # Labels as an older clipsearch wrote them, beside the catalog: replaced by these.
        (index_dir / layout.LEGACY_TAGS_NAME).unlink(missing_ok=True)
    return committed
