"""The ``Index`` a server keeps open, and what only a server needs around it.

Requests run in a thread pool and search through ``Index`` like any caller. What the server
adds: every snapshot it serves keeps its catalog rows in memory (``rows.RowStore``; faster,
and client filters run on a DuckDB that can read no file), and before each request a
``stat`` of ``manifest.json`` (and of the ``tags.parquet`` an older clipsearch wrote): when one
changed (a run committed), one thread warms the new snapshot
(``Index.refresh(prepare=...)``) while the others keep answering from the old one. Answers
that take long to compute (classifiers, duplicate groups) are kept by snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from PIL import Image

from clipsearch.errors import ClipsearchError, NotFound
from clipsearch.query.search import Index
from clipsearch.query.snapshot import Snapshot, file_stamp
from clipsearch.server.config import ServerConfig
from clipsearch.server.rows import RowStore
from clipsearch.store.layout import LEGACY_TAGS_NAME, MANIFEST_NAME

if TYPE_CHECKING:
    from clipsearch.model import Model
    from clipsearch.query.duplicates import DuplicateGroup
    from clipsearch.zeroshot.classify import Classifier

logger = logging.getLogger("clipsearch.server")
Stamp = tuple[tuple[int, int, int] | None, ...]
_CLASSIFIERS_KEPT = 16
_DUPLICATE_ANSWERS_KEPT = 4  # a whole-library search takes minutes at a million images
K = TypeVar("K")
V = TypeVar("V")


class ServedIndex:
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
        self._watched = (
            str(self.index_dir / MANIFEST_NAME),
            str(self.index_dir / LEGACY_TAGS_NAME),
        )
        self._swap_lock = threading.Lock()
        self._stamp = self._stamps()
        self._prepare(self.index.snapshot)
        self._classifiers: _Recent[tuple[tuple[str, ...], str], Classifier]
        self._classifiers = _Recent(_CLASSIFIERS_KEPT)
        self._duplicates: _Recent[tuple[Any, ...], list[DuplicateGroup]]
        self._duplicates = _Recent(_DUPLICATE_ANSWERS_KEPT)
        self.refreshes = 0

    @property
    def model(self) -> Model:
        return self.index.model

    def warm_up(self) -> float:
        """Load the model and answer one query, so the first client waits for neither."""
        start = time.perf_counter()
        self.fresh().search("a photo", k=1)
        return time.perf_counter() - start

    # -- snapshots -------------------------------------------------------------------------

    def _stamps(self) -> Stamp:
        return tuple(file_stamp(path) for path in self._watched)

    def current(self) -> Snapshot:
        """The newest committed snapshot (two stats per call; refreshed when they changed)."""
        stamp = self._stamps()
        if stamp != self._stamp and stamp[0] is not None:
            self._refresh(stamp)
        return self.index.snapshot

    def _refresh(self, stamp: Stamp) -> None:
        # One thread warms the new snapshot; the others go on with the old one meanwhile.
        if not self._swap_lock.acquire(blocking=False):
            return
        try:
            if stamp == self._stamp:
                return
            if self.index.refresh(prepare=self._prepare):
                self.refreshes += 1
                logger.info("now serving snapshot %d", self.index.snapshot.number)
            self._stamp = stamp
        except (ClipsearchError, FileNotFoundError) as exc:
            # A commit mid-read, a broken manifest, another model: keep the old one.
            logger.warning("cannot serve the new snapshot yet: %s", exc)
        finally:
            self._swap_lock.release()

    def _prepare(self, snapshot: Snapshot) -> None:
        _ = snapshot.vectors
        snapshot.keep_rows(RowStore(snapshot, self.config.threads))

    # -- catalog ---------------------------------------------------------------------------

    def columns(self) -> dict[str, str]:
        """Catalog columns a client may ask for or filter on, with their DuckDB types."""
        return dict(self.current().column_types())

    def image_row(self, image_id: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """One image's catalog row (default: every column a client may see); 404 if absent."""
        snapshot = self.current()
        wanted = list(columns) if columns is not None else snapshot.columns()
        row = snapshot.rows([image_id], wanted).get(image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id} in the index")
        return row

    # -- search ----------------------------------------------------------------------------

    def fresh(self) -> Index:
        """The index, moved to the newest snapshot first if one was committed: requests
        search through it like any caller (``Index.search``)."""
        self.current()
        return self.index

    def duplicates(self, threshold: float, where: str | None) -> tuple[int, list[DuplicateGroup]]:
        """Groups of duplicate images in the current snapshot and its number (groups kept:
        a page reloads them)."""
        from clipsearch.query.duplicates import find_duplicates

        snapshot = self.current()
        key = (snapshot.version, threshold, where)  # tags written change what where matches
        groups = self._duplicates.get(key)
        if groups is None:
            groups = self._duplicates.put(key, find_duplicates(snapshot, threshold, where))
        return snapshot.number, groups

    def image_vector(self, image: Image.Image | None, like: int | None) -> np.ndarray:
        """The embedding of one query image: an upload, or an indexed image by id."""
        if (image is None) == (like is None):
            raise ClipsearchError("give one image: an upload (image) or an indexed id (like)")
        self.current()
        if image is not None:
            return self.index.query_vector(image=image)
        assert like is not None  # one of the two, checked above
        return self.index.query_vector(like=[like])

    # -- classification --------------------------------------------------------------------

    def classifier(self, labels: Sequence[str], templates: str) -> Classifier:
        """A zero-shot classifier, kept in memory in front of the on-disk cache."""
        from clipsearch.zeroshot.classify import load_classifier, resolve_templates
        from clipsearch.zeroshot.templates import template_names

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


class _Recent(Generic[K, V]):
    """Values kept by key, thread-safe, the least recently used dropped beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value kept for ``key`` (now the most recent), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` for ``key``; returns it."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
