"""Text collections: captions or labels embedded once, searched by image embeddings.

    from clipsearch.texts import TextCollection, rank_texts, resolve_texts
    collection = TextCollection.build(Path("captions.txt"), Path("indexes/caps"), model)
    collection = TextCollection.open("caps")                 # indexes/caps, or a directory
    hits = collection.search(model.embed_images(["q.jpg"]), k=5)   # [[TextHit, ...]]
    hits = rank_texts(model, ["a dog", "a cat"], query_vectors, k=1)  # no collection

A collection is a directory, laid out like an image index (indexes/README.md):

    manifest.json           the image index's manifest type (clipsearch.manifest) with
                            "kind": "texts": model identity, counts {"texts": n}, the
                            source file's name and sha256, the files below ("catalog"
                            names the texts file; collections written before name it
                            "texts", and still open)
    texts-<hex>.parquet     id (int64), text (string), embedding (fixed_size_list<float32>[dim])
    vectors-<hex>.faiss     the FAISS index over the embeddings (clipsearch.vectors.build)
    .lock                   held by the one process building the collection

``id`` is the 0-based line number of the text in the source file: blank lines are skipped
and a repeated text is kept once, under its first line, so ids can have gaps. Re-building
writes new files and commits them by renaming a new manifest over the old one, so a reader
sees the old collection or the new one, never a mix; the old files are retired (listed in
the manifest's ``retired``) and deleted by a build 10 minutes later, as in an image index
(``storage.commit_snapshot``).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch import catalog
from clipsearch.errors import ClipsearchError
from clipsearch.manifest import MANIFEST_NAME, Manifest, read_manifest, utc_now
from clipsearch.settings import default_model_spec, resolve_index_dir
from clipsearch.storage import (
    LOCK_NAME,
    commit_snapshot,
    remove_unreferenced,
    writer_lock,
)

if TYPE_CHECKING:
    import faiss

    from clipsearch.model import Model
    from clipsearch.vectors import VectorIndexConfig, VectorIndexInfo

KIND = "texts"
EMBEDDING_DTYPE = "float32"
TEXTS_PREFIX = "texts"
VECTORS_PREFIX = "vectors"
EMBED_CHUNK = 1024  # texts per progress step while building
_OPEN_RETRIES = 3
_BUILD_HINT = "build one with `clipsearch texts index FILE --name NAME`"

ProgressCallback = Callable[[int, int], None]  # (texts embedded so far, total)


def texts_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


@dataclass(frozen=True)
class TextHit:
    id: int  # 0-based line number in the source file
    text: str
    score: float  # cosine similarity to the query

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "id": self.id, "text": self.text, "score": self.score}


# -- source files ------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTexts:
    """The texts of a UTF-8 file, one per line: blank lines skipped, repeats kept once."""

    path: Path
    ids: list[int]  # 0-based line number of each kept text
    texts: list[str]
    lines: int
    blank: int
    duplicates: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "lines": self.lines,
            "blank": self.blank,
            "duplicates": self.duplicates,
        }


def read_texts_file(path: str | os.PathLike) -> SourceTexts:
    """Read a texts file; every problem is a one-line ClipsearchError naming the file."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClipsearchError(f"no such texts file: {path}") from None
    except IsADirectoryError:
        raise ClipsearchError(f"{path} is a directory, not a texts file") from None
    except OSError as exc:
        raise ClipsearchError(f"cannot read texts file {path}: {exc.strerror or exc}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ClipsearchError(
            f"texts file {path} is not UTF-8 (invalid byte on line {line})"
        ) from None
    if "\x00" in content:
        raise ClipsearchError(f"texts file {path} is binary, not one text per line")
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    ids: list[int] = []
    texts: list[str] = []
    seen: set[str] = set()
    blank = duplicates = 0
    for number, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            blank += 1
        elif text in seen:
            duplicates += 1
        else:
            seen.add(text)
            ids.append(number)
            texts.append(text)
    if not texts:
        raise ClipsearchError(f"no texts in {path}: it is empty or has only blank lines")
    sha256 = hashlib.sha256(data).hexdigest()
    return SourceTexts(path, ids, texts, len(lines), blank, duplicates, sha256)


# -- ranking -----------------------------------------------------------------------------


def _queries(query_vectors: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"expected query vectors of dim {dim}, got shape {queries.shape}")
    return queries


def _check_k(k: int) -> None:
    if k < 1:
        raise ClipsearchError(f"k must be at least 1, got {k}")


def _hits(
    scores: np.ndarray, rows: np.ndarray, ids: np.ndarray, texts: Sequence[str]
) -> list[list[TextHit]]:
    return [
        [
            TextHit(int(ids[r]), texts[r], float(s))
            for s, r in zip(row_scores, row_rows, strict=True)
        ]
        for row_scores, row_rows in zip(scores, rows, strict=True)
    ]


class TextList:
    """Texts embedded on the fly and ranked exactly (a FILE given to ``--texts``)."""

    def __init__(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray,
        ids: Sequence[int] | np.ndarray | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.texts = list(texts)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if ids is None:
            ids = np.arange(len(self.texts))
        self.ids = np.asarray(ids, dtype=np.int64)
        self.identity = identity
        if not (len(self.texts) == len(self.embeddings) == len(self.ids)):
            raise ValueError("texts, embeddings and ids must have the same length")

    @classmethod
    def embed(
        cls,
        model: Model,
        texts: Sequence[str],
        ids: Sequence[int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> TextList:
        return cls(texts, _embed(model, list(texts), progress), ids, model.identity)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, model: Model, progress: ProgressCallback | None = None
    ) -> TextList:
        source = read_texts_file(path)
        return cls.embed(model, source.texts, source.ids, progress)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[TextHit]]:
        """Top ``k`` texts per query row by exact cosine, best first (ties: in list order)."""
        from clipsearch.vectors import exact_top_k

        _check_k(k)
        queries = _queries(query_vectors, self.embeddings.shape[1])
        scores, rows = exact_top_k(queries, self.embeddings, k)
        return _hits(scores, rows, self.ids, self.texts)


def rank_texts(
    model: Model,
    texts: Sequence[str],
    query_vectors: np.ndarray,
    k: int,
    ids: Sequence[int] | None = None,
) -> list[list[TextHit]]:
    """Encode ``texts`` now and rank them for each query vector, exactly (no collection).

    Hit ids are positions in ``texts`` unless ``ids`` gives them.
    """
    _check_k(k)
    if not texts:
        raise ClipsearchError("no texts to rank")
    return TextList.embed(model, texts, ids).search(query_vectors, k)


def _embed(model: Model, texts: list[str], progress: ProgressCallback | None) -> np.ndarray:
    chunks = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunks.append(model.embed_texts(texts[start : start + EMBED_CHUNK]))
        if progress:
            progress(min(start + EMBED_CHUNK, len(texts)), len(texts))
    return np.concatenate(chunks) if chunks else np.zeros((0, model.dim), np.float32)


# -- the manifest ------------------------------------------------------------------------


def read_text_manifest(directory: Path) -> Manifest | None:
    """The committed manifest of a text collection, or None when there is none.

    A directory holding something else (an image index) is an error that says so.
    """
    try:
        return read_manifest(directory, KIND)
    except ClipsearchError as exc:
        raise ClipsearchError(f"{exc} ({_BUILD_HINT})") from None


def _names_files(directory: Path, paths: list[Path]) -> bool:
    """Whether the committed manifest names any of ``paths`` (a commit that half-failed)."""
    try:
        manifest = read_text_manifest(directory)
    except ClipsearchError:
        return False
    if manifest is None:
        return False
    return bool(manifest.files() & {p.name for p in paths})


def _ours(name: str) -> bool:
    """Files a build writes: the only ones it may delete in the directory."""
    return (
        (name.startswith(f"{TEXTS_PREFIX}-") and name.endswith(".parquet"))
        or (name.startswith(f".{TEXTS_PREFIX}-") and name.endswith(".parquet.tmp"))
        or (name.startswith(f"{VECTORS_PREFIX}-") and name.endswith((".faiss", ".faiss.tmp")))
        or name == f".{MANIFEST_NAME}.tmp"
    )


def _remove_unreferenced(directory: Path, manifest: Manifest) -> None:
    ours = [path.name for path in directory.iterdir() if _ours(path.name)]
    remove_unreferenced(directory, manifest, ours)


def _check_target(directory: Path) -> Manifest | None:
    """Refuse to build over an image index or into a folder of other files."""
    manifest = read_text_manifest(directory)  # refuses an image index
    if manifest is None and directory.is_dir():
        others = [p.name for p in directory.iterdir() if p.name != LOCK_NAME and not _ours(p.name)]
        if others:
            raise ClipsearchError(
                f"{directory} is not a text collection and not empty (it holds {others[0]!r}): "
                "choose another name",
                parameter="name",
            )
    elif directory.exists() and not directory.is_dir():
        raise ClipsearchError(f"{directory} is a file, not a text collection directory")
    return manifest


# -- collections -------------------------------------------------------------------------


class TextCollection:
    """A stored text collection (one committed build), searchable by query vectors."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        ids: np.ndarray,
        texts: list[str],
        index: faiss.Index,
        info: VectorIndexInfo,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.ids = ids  # sorted ascending
        self.texts = texts
        self._index = index
        self._info = info

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        source: str | os.PathLike | SourceTexts,
        directory: str | os.PathLike,
        model: Model,
        *,
        progress: ProgressCallback | None = None,
        config: VectorIndexConfig | None = None,
    ) -> TextCollection:
        """Embed the lines of ``source`` with ``model`` and store them in ``directory``.

        ``directory`` is a path (``resolve_index_dir`` maps a NAME to one). A collection
        already there is replaced atomically, whatever model built it.
        """
        from clipsearch import vectors

        directory = Path(directory).expanduser().absolute()
        texts = source if isinstance(source, SourceTexts) else read_texts_file(source)
        _check_target(directory)
        with writer_lock(directory, "text collection"):
            old = _check_target(directory)  # another build may have committed meanwhile
            embeddings = _embed(model, texts.texts, progress)
            ids = np.asarray(texts.ids, dtype=np.int64)
            written: list[Path] = []
            committed = False
            try:
                table = pa.table(
                    {
                        "id": pa.array(ids, pa.int64()),
                        "text": pa.array(texts.texts, pa.string()),
                        "embedding": pa.FixedSizeListArray.from_arrays(
                            pa.array(embeddings.reshape(-1), pa.float32()), model.dim
                        ),
                    },
                    schema=texts_schema(model.dim),
                )
                written.append(catalog.write_table(directory, TEXTS_PREFIX, table))
                index, info = vectors.build(ids, embeddings, config)
                written.append(directory / f"{VECTORS_PREFIX}-{uuid.uuid4().hex[:12]}.faiss")
                vectors.save(index, written[-1])
                manifest = Manifest(
                    model=model.identity,
                    embedding_dim=model.dim,
                    embedding_dtype=EMBEDDING_DTYPE,
                    kind=KIND,
                    snapshot=(old.snapshot + 1) if old else 1,
                    counts={"texts": len(ids)},
                    catalog=[written[0].name],
                    vector_index={"file": written[1].name, **asdict(info)},
                    embedded_with=[f"{model.engine}/{model.precision}"],
                    source=texts.as_dict(),
                    created_at=old.created_at if old else utc_now(),
                )
                commit_snapshot(directory, manifest, old)
                committed = True
            except BaseException:
                if not committed and not _names_files(directory, written):
                    for path in written:
                        path.unlink(missing_ok=True)
                raise
            _remove_unreferenced(directory, manifest)
        return cls(directory, manifest, ids, list(texts.texts), index, info)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, name_or_path: str | os.PathLike) -> TextCollection:
        """Open a collection by name (``indexes/NAME``) or directory."""
        directory = resolve_index_dir(os.fspath(name_or_path))
        for _ in range(_OPEN_RETRIES):
            manifest = read_text_manifest(directory)
            if manifest is None:
                raise ClipsearchError(f"no text collection at {directory} ({_BUILD_HINT})")
            try:
                return cls._load(directory, manifest)
            except FileNotFoundError:
                continue  # a new build committed and removed these files: read the new one
        raise ClipsearchError(
            f"text collection {directory} is damaged (its manifest names missing files): "
            "rebuild it with `clipsearch texts index`"
        )

    @classmethod
    def _load(cls, directory: Path, manifest: Manifest) -> TextCollection:
        from clipsearch import vectors
        from clipsearch.vectors import VectorIndexInfo

        vector_file = directory / manifest.vector_index["file"]
        if not vector_file.is_file():
            raise FileNotFoundError(vector_file)
        try:
            table = pq.read_table(directory / manifest.catalog[0], columns=["id", "text"])
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise ClipsearchError(
                f"cannot read {directory / manifest.catalog[0]}: {' '.join(str(exc).split())}"
            ) from None
        index = vectors.load(vector_file)
        info = VectorIndexInfo(**{k: v for k, v in manifest.vector_index.items() if k != "file"})
        table = table.sort_by("id")
        ids = table.column("id").to_numpy()
        return cls(directory, manifest, ids, table.column("text").to_pylist(), index, info)

    # -- facts ---------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return self.manifest.model

    @property
    def model_spec(self) -> str:
        return self.manifest.model_spec

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TextCollection({str(self.directory)!r}, {len(self)} texts)"

    def embeddings(self) -> np.ndarray:
        """The stored embeddings, (n, dim) float32, rows in ``ids`` order."""
        table = pq.read_table(
            self.directory / self.manifest.catalog[0], columns=["id", "embedding"]
        )
        return catalog.embeddings_of(table.sort_by("id"))

    # -- searching -----------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[TextHit]]:
        """Top ``k`` texts per query row, best first; k beyond the collection gives all."""
        from clipsearch import vectors

        _check_k(k)
        queries = _queries(query_vectors, self._info.dim)
        scores, found = vectors.search(self._index, self._info, queries, k)
        rows = np.searchsorted(self.ids, found)
        return _hits(scores, rows, self.ids, self.texts)


# -- --texts FILE | NAME -----------------------------------------------------------------


def locate_texts(value: str | os.PathLike) -> SourceTexts | TextCollection:
    """What ``--texts`` names: an existing file (read now) or a stored collection (opened).

    Nothing is embedded yet, so this fails fast, before any model is loaded.
    """
    text = os.fspath(value)
    if not text.strip():
        raise ClipsearchError(
            "no texts named: give a texts FILE or a collection NAME", parameter="texts"
        )
    path = Path(text).expanduser()
    if path.is_file():
        return read_texts_file(path)
    directory = resolve_index_dir(text)
    if (directory / MANIFEST_NAME).exists():
        return TextCollection.open(directory)
    if directory.is_dir():
        raise ClipsearchError(f"no text collection at {directory} ({_BUILD_HINT})")
    if path.is_dir():
        raise ClipsearchError(
            f"{text!r} is a directory without a text collection, and there is no "
            f"text collection at {directory} ({_BUILD_HINT})",
            parameter="texts",
        )
    raise ClipsearchError(
        f"{text!r}: no such file, and no text collection at {directory} ({_BUILD_HINT})",
        parameter="texts",
    )


def check_model(collection: TextCollection, model: Model) -> None:
    """Refuse a model whose embeddings are not comparable with the collection's."""
    from clipsearch.model import identities_match

    if identities_match(model.identity, collection.identity):
        return
    built_with = collection.model_spec
    requested = str(model.spec)
    if requested == built_with:
        raise ClipsearchError(
            f"the weights of model '{built_with}' changed since text collection "
            f"{collection.directory} was built: rebuild it with `clipsearch texts index`"
        )
    raise ClipsearchError(
        f"text collection {collection.directory} was built with model '{built_with}', not "
        f"'{requested}': leave the model out, or rebuild the collection with that model",
        parameter="model",
    )


def resolve_texts(
    model: Model, value: str | os.PathLike, progress: ProgressCallback | None = None
) -> TextCollection | TextList:
    """``--texts`` FILE (its lines embedded now with ``model``) or collection NAME/dir
    (opened; ``model`` must be the one that built it). Both have ``.search(vectors, k)``."""
    found = locate_texts(value)
    if isinstance(found, TextCollection):
        check_model(found, model)
        return found
    return TextList.embed(model, found.texts, found.ids, progress)


def rank_image_against_texts(
    image_path: str | os.PathLike,
    texts_value: str | os.PathLike,
    model_spec: str | None = None,
    k: int = 10,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    engine: str = "auto",
) -> list[dict[str, Any]]:
    """Rank the texts of ``texts_value`` (FILE or collection) by similarity to one image.

    Without ``model_spec`` a collection is searched with its own model, a FILE with the
    default model. Returns rows ``{"rank", "id", "text", "score"}``, best first.
    """
    from clipsearch.model import Model

    _check_k(k)
    found = locate_texts(texts_value)
    image = Path(image_path).expanduser()
    _check_image_file(image)
    if model_spec is None:
        model_spec = found.model_spec if isinstance(found, TextCollection) else None
    model = Model.load(
        model_spec or default_model_spec(), device=device, cache_dir=cache_dir, engine=engine
    )
    if isinstance(found, TextCollection):
        check_model(found, model)
        searcher: TextCollection | TextList = found
    else:
        searcher = TextList.embed(model, found.texts, found.ids)
    query = model.embed_images([image])  # an undecodable image: one-line ClipsearchError
    return [hit.as_dict(rank) for rank, hit in enumerate(searcher.search(query, k)[0], 1)]


def _check_image_file(path: Path) -> None:
    """The cheap checks, before a model is loaded; decoding errors come when embedding."""
    if not path.exists():
        raise ClipsearchError(f"cannot read image {path}: no such file")
    if not path.is_file():
        raise ClipsearchError(f"cannot read image {path}: not a file")
    if not os.access(path, os.R_OK):
        raise ClipsearchError(f"cannot read image {path}: permission denied")


def format_text_hits(rows: Sequence[dict[str, Any]]) -> str:
    """The plain-text table of ``rank_image_against_texts`` rows: rank, score, text."""
    if not rows:
        return "no texts"
    width = len(str(rows[-1]["rank"]))
    return "\n".join(
        f"{row['rank']:>{width}}  {row['score']:.4f}  {' '.join(str(row['text']).split())}"
        for row in rows
    )


def build_collection(
    source: str | os.PathLike,
    directory: str | os.PathLike,
    model_spec: str | None = None,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    engine: str = "auto",
) -> tuple[TextCollection, float]:
    """Load the model and build: what ``clipsearch texts index`` runs.

    Without ``model_spec``, re-building a collection keeps its model (as re-indexing keeps
    an index's); a new one gets the default model.
    """
    from clipsearch.model import Model

    start = time.perf_counter()
    directory = Path(directory).expanduser().absolute()
    texts = read_texts_file(source)  # a bad file fails before a model is loaded
    old = _check_target(directory)
    spec = model_spec or (old.model_spec if old else default_model_spec())
    model = Model.load(spec, device=device, cache_dir=cache_dir, engine=engine)
    collection = TextCollection.build(texts, directory, model, progress=progress)
    return collection, time.perf_counter() - start


__all__ = [
    "SourceTexts",
    "TextCollection",
    "TextHit",
    "TextList",
    "build_collection",
    "check_model",
    "format_text_hits",
    "locate_texts",
    "rank_image_against_texts",
    "rank_texts",
    "read_text_manifest",
    "read_texts_file",
    "resolve_texts",
]
