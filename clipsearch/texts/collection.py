"""Stored text collections: built once from a texts FILE, committed like an image index,
searched through their own vector index (the layout: ``clipsearch.texts``)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipsearch.errors import ClipsearchError
from clipsearch.settings import default_model_spec, resolve_index_dir
from clipsearch.store import catalog
from clipsearch.store.manifest import MANIFEST_NAME, Manifest, read_manifest, utc_now
from clipsearch.store.storage import (
    LOCK_NAME,
    PENDING_DIR,
    commit_snapshot,
    new_file_path,
    remove_unreferenced,
    snapshot_path,
    writer_lock,
)
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

    from clipsearch.model import Model
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
    """Files a build writes: the only ones it may delete in the directory."""
    return (
        (name.startswith(f"{TEXTS_PREFIX}-") and name.endswith(".parquet"))
        or (name.startswith(f".{TEXTS_PREFIX}-") and name.endswith(".parquet.tmp"))
        or (name.startswith(f"{VECTORS_PREFIX}-") and name.endswith((".faiss", ".faiss.tmp")))
        or name == f".{MANIFEST_NAME}.tmp"
    )


def _left_by_a_build(path: Path) -> bool:
    """Whether ``path``, in a folder with no collection yet, is a build's: its lock, a file
    it writes, or ``pending/`` holding only those (a first build that died before its
    commit)."""
    if path.name == PENDING_DIR and path.is_dir() and not path.is_symlink():
        return all(_ours(p.name) for p in path.iterdir())
    return path.name == LOCK_NAME or _ours(path.name)


def _remove_unreferenced(directory: Path, manifest: Manifest | None) -> None:
    """Bring the directory in line with the committed snapshot (``storage.remove_unreferenced``:
    its files back from retired/ if a build died mid-commit, leftovers, pending/ and expired
    files deleted)."""
    ours = [path.name for path in directory.iterdir() if _ours(path.name)]
    remove_unreferenced(directory, manifest, ours)


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
        with writer_lock(directory, "text collection"):
            old = _check_target(directory)  # another build may have committed meanwhile
            _remove_unreferenced(directory, old)
            embeddings = embed_all(model, texts.texts, progress)
            ids = np.asarray(texts.ids, dtype=np.int64)
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
                texts_name = catalog.write_new_table(directory, "", TEXTS_PREFIX, table)
                index, info = vectors.build(ids, embeddings, config)
                vectors_name = f"{VECTORS_PREFIX}-{uuid.uuid4().hex[:12]}.faiss"
                vectors.save(index, new_file_path(directory, vectors_name))
                manifest = Manifest(
                    model=model.identity,
                    embedding_dim=model.dim,
                    embedding_dtype=EMBEDDING_DTYPE,
                    kind=KIND,
                    snapshot=(old.snapshot + 1) if old else 1,
                    counts={"texts": len(ids)},
                    catalog=[texts_name],
                    vector_index={"file": vectors_name, **asdict(info)},
                    embedded_with=[f"{model.engine}/{model.precision}"],
                    source=texts.as_dict(),
                    created_at=old.created_at if old else utc_now(),
                )
                commit_snapshot(directory, manifest, old)
            except BaseException:
                # What the failed build wrote is no snapshot's: gone now, not at the next
                # build (by the manifest on disk, should its commit have landed).
                with contextlib.suppress(OSError, ClipsearchError):
                    _remove_unreferenced(directory, read_text_manifest(directory))
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
        from clipsearch.store.vectors import VectorIndexInfo

        vector_file = snapshot_path(directory, manifest.vector_index["file"])
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
        info = VectorIndexInfo(**{k: v for k, v in manifest.vector_index.items() if k != "file"})
        table = table.sort_by("id")
        ids = table.column("id").to_numpy()
        return cls(directory, manifest, ids, table.column("text").to_pylist(), index, info)

    # -- facts ---------------------------------------------------------------------------

    @property
    def identity(self) -> ModelIdentity:
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
    if model.identity.same_weights(collection.identity):
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
