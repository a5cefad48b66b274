"""The index and model a server keeps loaded, shared by all request threads.

Requests run in a thread pool. Encoding (torch) and vector search (FAISS) are safe to run
concurrently; catalog rows come from an in-memory ``RowStore``. Each request asks for
``current()``: a ``stat`` of ``manifest.json`` (and of ``tags.parquet``); when one changed
(an indexing run committed, zero-shot tags were written), one thread opens and
warms the new snapshot while the others keep answering from the old one, then swaps it in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
from PIL import Image

from clipsearch import terms as query_terms
from clipsearch import vectors
from clipsearch.errors import ClipsearchError
from clipsearch.manifest import MANIFEST_NAME
from clipsearch.search import Index
from clipsearch.server.config import ServerConfig
from clipsearch.server.errors import ApiError
from clipsearch.server.files import FILE_COLUMNS
from clipsearch.server.rows import RowStore
from clipsearch.server.where import check_where
from clipsearch.snapshot import TAGS_NAME, Snapshot, open_manifest

if TYPE_CHECKING:
    from clipsearch.duplicates import DuplicateGroup

logger = logging.getLogger("clipsearch.server")
T = TypeVar("T")
Stamp = tuple[tuple[int, int, int] | None, ...]
_RETRIES = 3
_CLASSIFIERS_KEPT = 16
_DUPLICATE_ANSWERS_KEPT = 4  # a whole-library search takes minutes at a million images
_EXACT_KINDS = ("flat", "ivf-flat")  # kinds whose stored vectors are the embeddings as is


@dataclass(frozen=True)
class Loaded:
    """One snapshot, ready: its vectors loaded and its catalog rows in memory."""

    snapshot: Snapshot
    rows: RowStore

    @property
    def number(self) -> int:
        return int(self.snapshot.manifest.snapshot)


@dataclass
class Found:
    """One search hit with the catalog facts the API needs."""

    id: int
    score: float
    row: dict[str, Any]  # FILE_COLUMNS + the columns asked for


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


class Engine:
    """Searches one index with its model loaded once; thread-safe."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.index = Index.open(
            config.index_dir,
            model=config.model,
            device=config.device,
            cache_dir=config.cache_dir,
            engine=config.engine,
        )
        self.index_dir = self.index.index_dir
        self._watched = (str(self.index_dir / MANIFEST_NAME), str(self.index_dir / TAGS_NAME))
        self._db_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._stamp = self._stamps()
        self._loaded = self._load(self.index.snapshot)
        self._classifiers = _Recent(_CLASSIFIERS_KEPT)
        self._duplicates = _Recent(_DUPLICATE_ANSWERS_KEPT)
        self.refreshes = 0

    @property
    def model(self) -> Any:
        return self.index.model

    def warm_up(self) -> float:
        """Load the model and answer one query, so the first client waits for neither."""
        start = time.perf_counter()
        self.search(["a photo"], k=1)
        return time.perf_counter() - start

    # -- snapshots -------------------------------------------------------------------------

    def _stamps(self) -> Stamp:
        return tuple(_stat(path) for path in self._watched)

    def current(self) -> Loaded:
        """The newest committed snapshot (two stats per call; reloaded when they changed)."""
        stamp = self._stamps()
        if stamp != self._stamp and stamp[0] is not None:
            self._refresh(stamp)
        return self._loaded

    def _refresh(self, stamp: Stamp, force: bool = False) -> None:
        # One thread loads the new snapshot; the others go on with the old one meanwhile.
        if not self._swap_lock.acquire(blocking=force):
            return
        try:
            if not force and stamp == self._stamp:
                return
            old = self._loaded.snapshot
            manifest = open_manifest(self.index_dir)
            from clipsearch.model import identities_match

            if not identities_match(manifest.model, old.manifest.model):
                logger.error("%s now holds another model's index: restart", self.index_dir)
                return
            new = Snapshot(self.index_dir, manifest)
            if new.manifest.vector_index == old.manifest.vector_index:
                new.vectors = old.vectors  # only the tags changed: keep the loaded index
            self._loaded = self._load(new)
            self.index.snapshot = new  # what Index.refresh() does, after warming it
            self._stamp = stamp
            self.refreshes += 1
            logger.info("now serving snapshot %d", manifest.snapshot)
        except (ClipsearchError, duckdb.IOException, FileNotFoundError) as exc:
            # A commit mid-read, or a broken manifest: keep the old one, try again later.
            logger.warning("cannot load the new snapshot yet: %s", exc)
        finally:
            self._swap_lock.release()

    def _load(self, snapshot: Snapshot) -> Loaded:
        _ = snapshot.vectors
        return Loaded(snapshot, RowStore(snapshot, self.config.threads))

    def _with_retry(self, work: Callable[[Loaded], T]) -> T:
        """Run ``work`` on the current snapshot; if a commit removed its files meanwhile,
        move to the new snapshot and run it again."""
        for attempt in range(_RETRIES):
            loaded = self.current()
            try:
                return work(loaded)
            except (duckdb.IOException, FileNotFoundError):
                if attempt == _RETRIES - 1:
                    raise
                self._refresh(self._stamps(), force=True)
        raise AssertionError("unreachable")

    # -- catalog ---------------------------------------------------------------------------

    def columns(self) -> dict[str, str]:
        """Catalog columns a client may ask for or filter on, with their DuckDB types."""
        return dict(self.current().rows.types)

    def image_row(self, image_id: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """One image's catalog row (default: every column a client may see); 404 if absent."""
        rows = self.current().rows
        wanted = list(columns) if columns is not None else list(rows.types)
        row = rows.rows([image_id], wanted).get(image_id)
        if row is None:
            raise ApiError(404, f"no image with id {image_id} in the index")
        return row

    def stored_embeddings(self, loaded: Loaded, ids: Sequence[int]) -> np.ndarray:
        """The catalog's embeddings of indexed images (``like=ID``); 404 for unknown ids."""
        missing = [i for i in ids if not loaded.rows.rows([i], [])]
        if missing:
            raise ApiError(404, f"no image with id {missing[0]} in the index")
        snapshot = loaded.snapshot
        if snapshot.vector_info.kind in _EXACT_KINDS:
            try:  # these indexes hold the catalog's vectors exactly: no Parquet read
                return np.stack([snapshot.vectors.reconstruct(int(i)) for i in ids])
            except RuntimeError:
                pass
        unique = list(dict.fromkeys(int(i) for i in ids))
        query = "SELECT id, embedding FROM catalog WHERE id IN (SELECT unnest(?::BIGINT[]))"
        with self._db_lock:  # the snapshot's own connection: fixed SQL only
            found = dict(snapshot.db.execute(query, [unique]).fetchall())
        return np.asarray([found[int(i)] for i in ids], dtype=np.float32)

    # -- search ----------------------------------------------------------------------------

    def query_vector(
        self,
        loaded: Loaded,
        terms: Sequence[str] = (),
        images: Sequence[Image.Image] = (),
        like: Sequence[int] = (),
    ) -> np.ndarray:
        """One unit vector: weighted text terms + uploaded images + stored embeddings."""
        parsed = [query_terms.parse_term(t) for t in terms]
        parts, weights = [], []
        if parsed:
            parts.append(self.model.embed_texts([t.text for t in parsed]))
            weights += [t.weight for t in parsed]
        if images:
            parts.append(self.model.embed_images(list(images)))
            weights += [1.0] * len(images)
        if like:
            parts.append(self.stored_embeddings(loaded, like))
            weights += [1.0] * len(like)
        if not parts:
            raise ClipsearchError("empty query: give text (q), an image, or like=ID")
        return query_terms.combine(np.concatenate(parts), weights)

    def search(
        self,
        terms: Sequence[str] = (),
        images: Sequence[Image.Image] = (),
        like: Sequence[int] = (),
        k: int = 10,
        where: str | None = None,
        columns: Sequence[str] = (),
        min_score: float | None = None,
    ) -> tuple[Loaded, list[Found]]:
        """The k closest images, best first, among those matching ``where`` (and at least
        ``min_score`` similar to the query)."""
        if k < 1:
            raise ClipsearchError(f"k must be at least 1, not {k}")
        if where is not None:
            check_where(where)  # before any encoding: a bad filter fails fast

        def run(loaded: Loaded) -> tuple[Loaded, list[Found]]:
            loaded.rows.check_columns(columns)
            vector = self.query_vector(loaded, terms, images, like)
            allowed = loaded.rows.matching_ids(where) if where else None
            snapshot = loaded.snapshot
            scores, ids = vectors.search(
                snapshot.vectors, snapshot.vector_info, vector[None, :], k, allowed, min_score
            )
            rows = loaded.rows.rows(ids[0].tolist(), [*FILE_COLUMNS, *columns])
            found = [
                Found(i, float(s), rows[i])
                for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True)
                if i in rows
            ]
            return loaded, found

        return self._with_retry(run)

    def duplicates(
        self, threshold: float, where: str | None
    ) -> tuple[Loaded, list[DuplicateGroup]]:
        """Groups of duplicate images in the current snapshot (kept: a page reloads them)."""
        from clipsearch.duplicates import find_duplicates

        if where is not None:
            check_where(where)

        def run(loaded: Loaded) -> tuple[Loaded, list[DuplicateGroup]]:
            key = (loaded.number, threshold, where)
            groups = self._duplicates.get(key)
            if groups is None:
                allowed = loaded.rows.matching_ids(where) if where else None
                groups = self._duplicates.put(
                    key, find_duplicates(loaded.snapshot, threshold, allowed)
                )
            return loaded, groups

        return self._with_retry(run)

    def image_vector(self, image: Image.Image | None, like: int | None) -> np.ndarray:
        """The embedding of one query image: an upload, or an indexed image by id."""
        if (image is None) == (like is None):
            raise ClipsearchError("give one image: an upload (image) or an indexed id (like)")
        if image is not None:
            return self.model.embed_images([image])[0]
        return self._with_retry(lambda loaded: self.stored_embeddings(loaded, [int(like)])[0])

    # -- classification --------------------------------------------------------------------

    def classifier(self, labels: Sequence[str], templates: str) -> Any:
        """A zero-shot classifier, kept in memory in front of the on-disk cache."""
        from clipsearch.classify import load_classifier, resolve_templates
        from clipsearch.zeroshot import template_names

        if templates not in template_names():  # names only: a path would read server files
            raise ClipsearchError(
                f"unknown template set {templates!r}: use {', '.join(template_names())}"
            )
        key = (tuple(labels), templates)
        kept = self._classifiers.get(key)
        if kept is not None:
            return kept
        found = load_classifier(
            self.index.manifest.model, labels, resolve_templates(templates), lambda: self.model
        )
        return self._classifiers.put(key, found)


class _Recent:
    """Values kept by key, thread-safe, the least recently used dropped beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value kept for ``key`` (now the most recent), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> Any:
        """Keep ``value`` for ``key``; returns it."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
