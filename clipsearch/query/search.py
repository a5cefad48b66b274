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
from functools import cached_property, partial
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
    from clipsearch.query import words
    from clipsearch.query.duplicates import DuplicateGroup
    from clipsearch.store.manifest import Manifest
    from clipsearch.zeroshot.classify import Prediction

ImageQuery: TypeAlias = "Image.Image | str | os.PathLike"
# Text queries on an index with words in its photos: each ranking's best this deep are fused
# (reciprocal rank fusion, with its customary constant).
FUSION_DEPTH = 50
RRF_K = 60
TextQuery = str | Sequence[str] | np.ndarray


@dataclass
class Hit:
    id: int
    path: str
    score: float  # cosine similarity to the query
    columns: dict[str, Any] = field(default_factory=dict)  # catalog columns asked for
    text: str | None = None  # the words in the photo (index --ocr); None: never read
    marks: list[tuple[int, int]] = field(default_factory=list)  # query words found in text

    def as_dict(self, rank: int) -> dict[str, Any]:
        found = {"rank": rank, "id": self.id, "path": self.path, "score": self.score}
        if self.text is not None:
            found |= {"text": self.text, "text_marks": [list(span) for span in self.marks]}
        return found | self.columns


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

        built_with = BuiltWith.image_index(self.snapshot.manifest.model, self.index_dir)
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
        words_only: bool = False,
    ) -> Hits:
        """The k images closest to the query, best first; only rows matching ``where``,
        and with ``min_score`` only hits at least that similar (cosine) to the query: fewer
        than k, or none, when few images are relevant. ``like``: ids of indexed images whose
        stored embeddings join the query (a ``NotFound`` error for an unknown id).

        Where the index holds the words in its photos (``index --ocr``), a text query also
        finds photos by them (``query.words``), fused with the ranking by meaning
        (reciprocal rank fusion); a query in double quotes, or ``words_only``, ranks by the
        words alone. A query no photo's words match ranks by meaning alone."""
        from clipsearch.store import vectors

        if k < 1:
            raise ClipsearchError(f"k must be at least 1, not {k}", parameter="k")
        snapshot = self.snapshot  # one snapshot for the whole search, whatever refreshes
        snapshot.check_columns(columns)
        allowed = snapshot.matching_ids(where) if where else None  # a bad filter fails fast
        wanted = self._word_query(snapshot, query, image, like)
        if words_only and wanted is None:
            raise ClipsearchError(
                f"index {self.index_dir} holds no words to search: index it with --ocr, and "
                "search by words with a text query alone",
                parameter="words_only",
            )
        by_words = self._rank_by_words(snapshot, wanted, allowed, max(k, FUSION_DEPTH))
        if wanted is not None and (wanted.phrase or words_only):
            alone = [(hit.id, hit.score) for hit in by_words[:k]]
            return self._hits(snapshot, alone, columns, wanted)  # scores: the words'
        vector = self._query_vector(snapshot, query, image, like)
        depth = max(k, FUSION_DEPTH) if by_words else k
        scores, ids = vectors.search(
            snapshot.vectors, snapshot.vector_info, vector[None, :], depth, allowed, min_score
        )
        ranked = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        if by_words:
            assert wanted is not None  # words were searched for
            cosines = partial(self._cosines, snapshot, vector)
            ranked = _fused(ranked, by_words, wanted.numbered, k, cosines)
        return self._hits(snapshot, ranked[:k], columns, wanted)

    def _hits(
        self,
        snapshot: Snapshot,
        ranked: list[tuple[int, float]],
        columns: Sequence[str],
        wanted: words.WordQuery | None,
    ) -> Hits:
        shown = [
            "path",
            *columns,
            *(["text"] if snapshot.has_text and "text" not in columns else []),
        ]
        rows = snapshot.rows([i for i, _ in ranked], shown)
        hits = []
        for i, score in ranked:
            if i not in rows:
                continue
            text = rows[i].get("text")
            marks = _marks(text, wanted) if text and wanted is not None else []
            # float16 storage can put a self-match a hair above 1: keep cosines in range
            cosine = min(1.0, max(-1.0, score))
            asked = {c: rows[i][c] for c in columns}
            hits.append(Hit(i, rows[i]["path"], cosine, asked, text, marks))
        return Hits(hits, snapshot.number)

    @staticmethod
    def _word_query(
        snapshot: Snapshot, query: TextQuery | None, image: Any, like: Sequence[int]
    ) -> words.WordQuery | None:
        """The words to look for in the photos: those of a plain text query (no weighted
        terms, no image) on an index that holds text."""
        if isinstance(query, np.ndarray) or not query or _query_images(image) or len(like):
            return None
        raw = [query] if isinstance(query, str) else list(query)
        if not snapshot.has_text or any(terms.parse_term(t).weight != 1.0 for t in raw):
            return None  # weighted terms ("2:beach", "-people") are about meaning
        from clipsearch.query import words

        return words.parse(" ".join(raw))

    @staticmethod
    def _rank_by_words(
        snapshot: Snapshot, wanted: words.WordQuery | None, allowed: np.ndarray | None, limit: int
    ) -> list[words.WordHit]:
        if wanted is None:
            return []
        from clipsearch.query import words

        ids, folded = snapshot.folded_text
        return words.rank(ids, folded, wanted, limit, allowed)

    @staticmethod
    def _cosines(snapshot: Snapshot, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
        found_ids, found = snapshot.embeddings(ids)
        return dict(zip(found_ids.tolist(), (found @ vector).tolist(), strict=True))

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


def _marks(text: str, wanted: words.WordQuery) -> list[tuple[int, int]]:
    from clipsearch.query import words

    return words.marks(text, wanted)


def _fused(
    by_meaning: list[tuple[int, float]],
    by_words: list[words.WordHit],
    numbered: bool,
    k: int,
    cosines: Callable[[list[int]], dict[int, float]],
) -> list[tuple[int, float]]:
    """The ``k`` best of both rankings, each with its cosine (those only the words found
    are scored here). Photos holding every word of the query come first, then, for a query
    with a number in it (a code: written words, surely), those holding every word but one
    letter off; the order among them, and of all the rest, is reciprocal rank fusion of the
    two rankings. (Fusion alone let a photo near the query in meaning, holding none of its
    words, pass the one with "EXIT 12" on it, and one with "M6-0036" on it be passed for
    "M6-3036": benchmarks/RESULTS.md, "Text in photos".)"""
    fused: dict[int, float] = {}
    for ranking in ([i for i, _ in by_meaning], [hit.id for hit in by_words]):
        for rank, row_id in enumerate(ranking):
            fused[row_id] = fused.get(row_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    tier = {hit.id: 0 if hit.complete else 1 if numbered and hit.nearly else 2 for hit in by_words}
    best = sorted(fused, key=lambda row_id: (tier.get(row_id, 2), -fused[row_id]))[:k]
    scored = dict(by_meaning)
    missing = [row_id for row_id in best if row_id not in scored]
    scored |= cosines(missing) if missing else {}
    return [(row_id, scored[row_id]) for row_id in best if row_id in scored]


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
