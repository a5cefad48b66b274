"""Stored text collections: built once from a texts FILE, committed like an image index,
searched through their own vector index (the layout: ``clipsearch.texts``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch.errors import ClipsearchError
from clipsearch.settings import default_model_spec, resolve_index_dir
from clipsearch.store import catalog, layout
from clipsearch.store.manifest import Manifest, read_manifest, utc_now
from clipsearch.store.snapshots import commit_next, index_lock, tidy
from clipsearch.store.storage import snapshot_path
from clipsearch.texts.ranking import (
    ProgressCallback,
    TextHit,
    check_k,
    embed_all,
    hits_of,
    query_matrix,
)
from clipsearch.texts.source import SourceTexts, read_texts_file

if TYPE_CHECKING:
    import faiss

    from clipsearch.model import BuiltWith, Model
    from clipsearch.model.identity import ModelIdentity
    from clipsearch.store.vectors import VectorIndexConfig, VectorIndexInfo

KIND = "texts"
BUILD_HINT = "build it first: `clipsearch texts index`, or TextCollection.build"
EMBEDDING_DTYPE = "float32"
TEXTS_PREFIX = "texts"
VECTORS_PREFIX = "vectors"
_OPEN_RETRIES = 3


def texts_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


def read_text_manifest(directory: Path) -> Manifest | None:
    """The committed manifest of a text collection, or None when there is none.

    A directory holding something else (an image index) is an error that says so.
    """
    try:
        return read_manifest(directory, KIND)
    except ClipsearchError as exc:
        raise ClipsearchError(f"{exc} ({BUILD_HINT})") from None


def _ours(name: str) -> bool:
    """Files at the top of the directory that a build wrote before collections took the
    folders of an image index (``store.layout``): the only ones there it may delete."""
    return (
        (name.startswith(f"{TEXTS_PREFIX}-") and name.endswith(".parquet"))
        or (name.startswith(f".{TEXTS_PREFIX}-") and name.endswith(".parquet.tmp"))
        or (name.startswith(f"{VECTORS_PREFIX}-") and name.endswith((".faiss", ".faiss.tmp")))
        or name == f".{layout.MANIFEST_NAME}.tmp"
    )


def _left_by_a_build(path: Path) -> bool:
    """Whether ``path``, in a folder with no collection yet, is a build's: its lock, a file
    it writes, or ``pending/`` holding only those (a first build that died before its
    commit)."""
    if path.name == layout.PENDING_DIR and path.is_dir() and not path.is_symlink():
        return all(_written_by_a_build(p.relative_to(path)) for p in path.rglob("*"))
    return path.name == layout.LOCK_NAME or _ours(path.name)


def _written_by_a_build(relative: Path) -> bool:
    """A file or folder a build writes into ``pending/`` (``relative`` to it)."""
    folder, _, name = relative.as_posix().rpartition("/")
    if folder == "":
        return name in (layout.CATALOG_DIR, layout.VECTORS_DIR) or _ours(name)
    if folder == layout.CATALOG_DIR:
        return name.startswith(f"{TEXTS_PREFIX}-")
    return folder == layout.VECTORS_DIR and name.startswith("index-")


def _old_style_files(directory: Path) -> frozenset[str]:
    return frozenset(path.name for path in directory.iterdir() if _ours(path.name))


def _check_target(directory: Path) -> Manifest | None:
    """Refuse to build over an image index or into a folder of other files."""
    manifest = read_text_manifest(directory)  # refuses an image index
    if manifest is None and directory.is_dir():
        others = [p.name for p in directory.iterdir() if not _left_by_a_build(p)]
        if others:
            raise ClipsearchError(
                f"{directory} is not a text collection and not empty (it holds {others[0]!r}): "
                "choose another name",
                parameter="name",
            )
    elif directory.exists() and not directory.is_dir():
        raise ClipsearchError(f"{directory} is a file, not a text collection directory")
    return manifest


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
        from clipsearch.store import vectors

        directory = Path(directory).expanduser().absolute()
        texts = source if isinstance(source, SourceTexts) else read_texts_file(source)
        _check_target(directory)
        with index_lock(directory, "text collection"):
            old = _check_target(directory)  # another build may have committed meanwhile
            tidy(directory, old, _old_style_files(directory))
            embeddings = embed_all(model, texts.texts, progress)
            ids = np.asarray(texts.ids, dtype=np.int64)
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
            # Into pending/ until the commit: a build that fails before leaves it to the next.
            texts_name = catalog.write_new_table(directory, layout.CATALOG_DIR, TEXTS_PREFIX, table)
            index, info = vectors.build(ids, embeddings, config)
            new = Manifest(
                model=model.identity,
                embedding_dim=model.dim,
                embedding_dtype=EMBEDDING_DTYPE,
                kind=KIND,
                counts={"texts": len(ids)},
                catalog=[texts_name],
                embedded_with=[f"{model.engine}/{model.precision}"],
                source=texts.as_dict(),
                created_at=old.created_at if old else utc_now(),
            )
            manifest = commit_next(directory, old, new, (index, info), _old_style_files(directory))
        return cls(directory, manifest, ids, list(texts.texts), index, info)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, name_or_path: str | os.PathLike) -> TextCollection:
        """Open a collection by name (``indexes/NAME``) or directory."""
        directory = resolve_index_dir(os.fspath(name_or_path))
        for _ in range(_OPEN_RETRIES):
            manifest = read_text_manifest(directory)
            if manifest is None:
                raise ClipsearchError(f"no text collection at {directory} ({BUILD_HINT})")
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
        from clipsearch.store import vectors

        if manifest.vector_index is None:
            raise FileNotFoundError("no vector index")  # (said below as damage)
        vector_file = snapshot_path(directory, manifest.vector_index.file)
        texts_file = snapshot_path(directory, manifest.catalog[0])
        try:
            table = pq.read_table(texts_file, columns=["id", "text"])
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise ClipsearchError(
                f"cannot read {texts_file}: {' '.join(str(exc).split())}"
            ) from None
        index = vectors.load(vector_file)  # moved by a build meanwhile: FileNotFoundError
        table = table.sort_by("id")
        ids = table.column("id").to_numpy()
        texts = table.column("text").to_pylist()
        return cls(directory, manifest, ids, texts, index, manifest.vector_index.info)

    # -- facts ---------------------------------------------------------------------------

    @property
    def identity(self) -> ModelIdentity:
        return self.manifest.model

    @property
    def model_spec(self) -> str:
        return self.manifest.model_spec

    @property
    def built_with(self) -> BuiltWith:
        from clipsearch.model import BuiltWith

        start_over = "rebuild it with `clipsearch texts index`"
        return BuiltWith(self.identity, f"text collection {self.directory}", start_over)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TextCollection({str(self.directory)!r}, {len(self)} texts)"

    def embeddings(self) -> np.ndarray:
        """The stored embeddings, (n, dim) float32, rows in ``ids`` order."""
        table = pq.read_table(
            snapshot_path(self.directory, self.manifest.catalog[0]), columns=["id", "embedding"]
        )
        return catalog.embeddings_of(table.sort_by("id"))

    # -- searching -----------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[TextHit]]:
        """Top ``k`` texts per query row, best first; k beyond the collection gives all."""
        from clipsearch.store import vectors

        check_k(k)
        queries = query_matrix(query_vectors, self._info.dim)
        scores, found = vectors.search(self._index, self._info, queries, k)
        rows = np.searchsorted(self.ids, found)
        return hits_of(scores, rows, self.ids, self.texts)


def check_model(collection: TextCollection, model: Model) -> None:
    """Refuse a model whose embeddings are not comparable with the collection's."""
    from clipsearch.model import check_same_model

    check_same_model(collection.built_with, str(model.spec), model.identity)


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
