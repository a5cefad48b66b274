"""The retrieval API: open an index, search it by text, image or both, classify its images.

    from clipsearch import Index
    index = Index.open()                              # indexes/default
    hits = index.search("a photo of a dog", k=10)     # text → image
    hits = index.search(image="query.jpg")            # image → image
    hits = index.search(["2:beach", "-people"])       # weighted terms
    hits = index.search("dog", where="width > 1000")  # filtered by catalog columns
    hits = index.search(like=[hits[0].id])            # more like an indexed image

The model is loaded only when a query needs encoding, and it is always the model the index
was built with. This is the one read path: the CLI, the Python API and the server (which
keeps rows in memory and refreshes snapshots as commits land) all search through ``Index``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from clipsearch.errors import ClipsearchError, NotFound
from clipsearch.model.preprocess import is_pil_image
from clipsearch.model.spec import parse_spec
from clipsearch.query import terms
from clipsearch.query.snapshot import Snapshot
from clipsearch.settings import resolve_index_dir
from clipsearch.store.manifest import open_manifest

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.model import Model
    from clipsearch.query.duplicates import DuplicateGroup
    from clipsearch.store.manifest import Manifest
    from clipsearch.zeroshot.classify import Prediction

ImageQuery: TypeAlias = "Image.Image | str | os.PathLike"
TextQuery = str | Sequence[str] | np.ndarray


@dataclass
class Hit:
    id: int
    path: str
    score: float  # cosine similarity to the query
    columns: dict[str, Any] = field(default_factory=dict)  # catalog columns asked for

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "id": self.id, "path": self.path, "score": self.score, **self.columns}


class Hits(list[Hit]):
    """The hits of one search, best first, and the snapshot that answered it."""

    def __init__(self, hits: Sequence[Hit], snapshot: int) -> None:
        super().__init__(hits)
        self.snapshot = snapshot


class Index:
    """A searchable image index (one committed snapshot; ``refresh()`` moves to the newest)."""

    def __init__(
        self,
        index_dir: Path,
        model: str | None = None,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        engine: str = "auto",
    ) -> None:
        self.index_dir = index_dir
        self.engine = engine
        self.snapshot = Snapshot(index_dir)
        self.device = device
        self.cache_dir = cache_dir
        self.model_spec = self.snapshot.manifest.model_spec
        if model is not None and str(parse_spec(model)) != self.model_spec:
            self.model_spec = str(parse_spec(model))
            _ = self.model  # a different spec must prove it is the same model, now

    @classmethod
    def open(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        model: str | None = None,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        engine: str = "auto",
    ) -> Index:
        """Open an index by name (``indexes/NAME``) or path; None opens the default index."""
        path = None if name_or_path is None else os.fspath(name_or_path)
        return cls(resolve_index_dir(path), model, device, cache_dir, engine)

    def __len__(self) -> int:
        return int(self.snapshot.manifest.counts["images"])

    @property
    def manifest(self) -> Manifest:
        return self.snapshot.manifest

    @cached_property
    def model(self) -> Model:
        from clipsearch.model import BuiltWith, load_for

        start_over = "index into another directory with that model"
        built_with = BuiltWith(self.snapshot.manifest.model, f"index {self.index_dir}", start_over)
        return load_for(
            built_with,
            self.model_spec,
            device=self.device,
            cache_dir=self.cache_dir,
            engine=self.engine,
        )

    def refresh(self, prepare: Callable[[Snapshot], None] | None = None) -> bool:
        """Move to the newest committed snapshot (or newly written zero-shot tags); True when
        there was one.

        ``prepare(snapshot)`` runs on the new snapshot before it replaces the current one, so
        searches running meanwhile (a server's other threads) keep using the old one until
        the new one is warm. A vector index the commit did not change is kept, not reloaded.
        """
        old, new = self.snapshot, Snapshot(self.index_dir, open_manifest(self.index_dir))
        if new.version == old.version:
            return False
        if not new.manifest.model.same_weights(old.manifest.model):
            raise ClipsearchError(
                f"index {self.index_dir} now holds another model's embeddings "
                f"('{new.manifest.model_spec}'): open it again"
            )
        manifest = new.manifest
        if "vectors" in old.__dict__ and manifest.vector_index == old.manifest.vector_index:
            new.vectors = old.vectors  # only the catalog or the tags changed
        if prepare is not None:
            prepare(new)
        self.snapshot = new
        return True

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        query: TextQuery | None = None,
        *,
        image: ImageQuery | Sequence[ImageQuery] | None = None,
        like: Sequence[int] = (),
        k: int = 10,
        where: str | None = None,
        columns: Sequence[str] = (),
        min_score: float | None = None,
    ) -> Hits:
        """The k images closest to the query, best first; only rows matching ``where``,
        and with ``min_score`` only hits at least that similar (cosine) to the query: fewer
        than k, or none, when few images are relevant. ``like``: ids of indexed images whose
        stored embeddings join the query (a ``NotFound`` error for an unknown id)."""
        from clipsearch.store import vectors

        if k < 1:
            raise ClipsearchError(f"k must be at least 1, not {k}", parameter="k")
        snapshot = self.snapshot  # one snapshot for the whole search, whatever refreshes
        snapshot.check_columns(columns)
        allowed = snapshot.matching_ids(where) if where else None  # a bad filter fails fast
        vector = self._query_vector(snapshot, query, image, like)
        scores, ids = vectors.search(
            snapshot.vectors, snapshot.vector_info, vector[None, :], k, allowed, min_score
        )
        rows = snapshot.rows(ids[0].tolist(), ["path", *columns])
        hits = [
            # float16 storage can put a self-match a hair above 1: keep cosines in range
            Hit(i, rows[i]["path"], min(1.0, max(-1.0, s)), {c: rows[i][c] for c in columns})
            for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True)
            if i in rows
        ]
        return Hits(hits, snapshot.number)

    def query_vector(
        self,
        query: TextQuery | None = None,
        image: ImageQuery | Sequence[ImageQuery] | None = None,
        like: Sequence[int] = (),
    ) -> np.ndarray:
        """One unit vector for text terms, images and indexed images (``like``: ids)
        together, weighted and renormalized."""
        return self._query_vector(self.snapshot, query, image, like)

    def _query_vector(
        self,
        snapshot: Snapshot,
        query: TextQuery | None,
        image: ImageQuery | Sequence[ImageQuery] | None,
        like: Sequence[int],
    ) -> np.ndarray:
        if isinstance(query, np.ndarray):
            return terms.combine(query.reshape(1, -1), [1.0])
        raw_terms = [query] if isinstance(query, str) else list(query or [])
        images = _query_images(image)
        if not raw_terms and not images and not len(like):
            raise ClipsearchError("empty query: give text, an image or an indexed image's id")
        parsed = [terms.parse_term(t) for t in raw_terms]
        parts, weights = [], []
        if parsed:
            parts.append(self.model.embed_texts([t.text for t in parsed]))
            weights += [t.weight for t in parsed]
        if images:
            parts.append(self._embed_query_images(snapshot, images))
            weights += [1.0] * len(images)
        if len(like):
            parts.append(_stored_embeddings(snapshot, [int(i) for i in like]))
            weights += [1.0] * len(like)
        return terms.combine(np.concatenate(parts), weights)

    def _embed_query_images(self, snapshot: Snapshot, images: list[ImageQuery]) -> np.ndarray:
        """Embed query images; an indexed, unchanged file re-uses its stored embedding."""
        stored: dict[int, int] = {}
        for position, item in enumerate(images):
            if not is_pil_image(item):
                row_id = _indexed_id(snapshot, item)
                if row_id is not None:
                    stored[position] = row_id
        result = np.zeros((len(images), int(snapshot.manifest.embedding_dim)), np.float32)
        if stored:
            result[list(stored)] = _stored_embeddings(snapshot, list(stored.values()))
        todo = [i for i in range(len(images)) if i not in stored]
        if todo:
            result[todo] = self.model.embed_images([images[i] for i in todo])
        return result

    # -- duplicates ------------------------------------------------------------------------

    def duplicates(
        self,
        threshold: float | None = None,
        where: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[DuplicateGroup]:
        """Groups of images that are the same photo (byte-identical, re-encoded, resized,
        cropped a little, rotated), each with a suggested keeper; see
        ``clipsearch.query.duplicates``.
        ``threshold``: cosine similarity of embeddings from which two images' fingerprints are
        compared (default ``duplicates.DEFAULT_THRESHOLD``); ``where``: only images matching
        this predicate; ``progress(done, total)``: called as images are compared."""
        from clipsearch.query import duplicates

        if threshold is None:
            threshold = duplicates.DEFAULT_THRESHOLD
        return duplicates.find_duplicates(self.snapshot, threshold, where, progress)

    # -- classification --------------------------------------------------------------------

    def classify(
        self, labels: Sequence[str], templates: str | Sequence[str] = "default", top: int = 1
    ) -> list[Prediction]:
        """Zero-shot label for every indexed image, from its stored embedding."""
        from clipsearch.zeroshot import classify

        snapshot = self.snapshot
        classifier = classify.load_classifier(
            snapshot.manifest.model,
            labels,
            classify.resolve_templates(templates),
            lambda: self.model,
        )
        table = snapshot.table(["id", "path", "embedding"])  # one pass over the catalog
        paths, ids = table.column("path").to_pylist(), table.column("id").to_numpy()
        return classifier.predict(paths, snapshot.embeddings_of(table), top, ids)


def _indexed_id(snapshot: Snapshot, path: str | os.PathLike) -> int | None:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ClipsearchError(f"cannot read image {path}: {exc.strerror or exc}") from None
    from clipsearch.ingest.scan import not_utf8

    absolute = os.path.abspath(path)
    if not_utf8(absolute):  # never indexed (see scan.not_utf8): embed it from the file
        return None
    return snapshot.id_of_file(absolute, stat.st_size, stat.st_mtime_ns)


def _stored_embeddings(snapshot: Snapshot, ids: list[int]) -> np.ndarray:
    """The stored embeddings of indexed images, in the order asked (repeats allowed)."""
    int64 = np.iinfo(np.int64)
    beyond = [i for i in ids if not int64.min <= i <= int64.max]  # no catalog id is
    if beyond:
        raise NotFound(f"no image with id {beyond[0]} in the index", parameter="like")
    found_ids, found = snapshot.embeddings(ids)
    by_id = dict(zip(found_ids.tolist(), found, strict=True))
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise NotFound(f"no image with id {missing[0]} in the index", parameter="like")
    return np.stack([by_id[i] for i in ids])


def _query_images(image: ImageQuery | Sequence[ImageQuery] | None) -> list[ImageQuery]:
    if image is None:
        return []
    if is_pil_image(image) or isinstance(image, (str, os.PathLike)):
        return [image]
    return list(image)
