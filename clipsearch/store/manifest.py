"""The manifest: the one file that says which snapshot of an index is current.

One type for both kinds of index directory: image indexes (``kind`` "images") and text
collections (``kind`` "texts", whose catalog is one Parquet file of texts). Every other file
of an index (catalog parts, the FAISS file, the error list) is immutable and named by the
manifest. A snapshot is committed by writing a new manifest to a temporary
file and renaming it over the old one (``storage.commit_snapshot``), so a reader sees either
the old snapshot or the new one, never a mix. See indexes/README.md for the format.

``open_manifest`` is how every reader and writer opens an index; ``damaged`` is the one
message for an index whose files cannot be read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clipsearch.base import access
from clipsearch.base.durable import read_json_object
from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.store.layout import MANIFEST_NAME, WRITER_LEFTOVERS

FORMAT_VERSION = 1
KINDS = {"images": "an image index", "texts": "a text collection"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class VectorIndexInfo:
    """What was built (``store.vectors``): stored in the manifest beside the file's name."""

    kind: str  # "flat", "ivf-flat", "ivf-sq8" or "ivf-pq"
    count: int
    dim: int
    params: dict[str, Any]  # nlist, nprobe, ... (empty for flat)
    recall_at_10: float | None  # against exact search, measured when it was built
    built_on: str  # "cpu" or "gpu"


@dataclass(frozen=True)
class VectorIndexFile:
    """The manifest's ``vector_index``: the FAISS file (relative to the index) and what it
    holds. On disk one JSON object: ``{"file": ..., "kind": ..., "count": ..., ...}``."""

    file: str
    info: VectorIndexInfo

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, **asdict(self.info)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, where: str) -> VectorIndexFile | None:
        if not data:
            return None
        try:
            fields = {k: v for k, v in data.items() if k != "file"}
            return cls(str(data["file"]), VectorIndexInfo(**fields))
        except (KeyError, TypeError) as exc:
            raise ClipsearchError(f"cannot read {where}: vector_index: {exc}") from None


@dataclass
class Manifest:
    model: ModelIdentity  # of the model that embedded every row
    embedding_dim: int
    embedding_dtype: str  # dtype of the catalog's embedding column: "float16" or "float32"
    kind: str = "images"  # or "texts"
    snapshot: int = 0  # increases by one with every commit
    next_id: int = 0  # the next catalog id to hand out; ids are never reused
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "errors": 0})
    catalog: list[str] = field(default_factory=list)  # Parquet parts, relative to the index
    errors: str | None = None  # Parquet list of unreadable files, relative to the index
    vector_index: VectorIndexFile | None = None  # None: no vector index (yet)
    tags: str | None = None  # zero-shot labels (classify --write-tags), joined on id
    ocr: bool = False  # index runs read the text in photos (`index --ocr`), until told not to
    # "ENGINE/PRECISION" of every run that embedded rows, e.g. ["onnx/fp32"]: one model's
    # embeddings from different engines or precisions are comparable, this says which ran.
    embedded_with: list[str] = field(default_factory=list)
    # texts: the source file's name, sha256 and line counts (images: None)
    source: dict[str, Any] | None = None
    # Files earlier snapshots named and this one does not, with when they were dropped: kept
    # for readers still on those snapshots (storage.RETIRED_GRACE_SECONDS).
    retired: dict[str, str] = field(default_factory=dict)
    # "folder": files written into the index take its folder's read permissions, owner-only
    # by default (store.access); absent in older manifests, whose next write tightens them.
    file_modes: str = access.MODES_VALUE
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    format_version: int = FORMAT_VERSION

    @property
    def model_spec(self) -> str:
        return self.model.spec

    def files(self) -> set[str]:
        """The files this snapshot reads (relative paths): catalog parts, errors, vectors,
        tags."""
        named = set(self.catalog)
        if self.vector_index:
            named.add(self.vector_index.file)
        return named | {name for name in (self.errors, self.tags) if name}

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "model": self.model.as_dict()}
        data["vector_index"] = self.vector_index.to_json() if self.vector_index else {}
        if self.tags is None:
            del data["tags"]  # what readers before tags were in the manifest expect
        return data


def read_manifest(index_dir: Path, kind: str = "images") -> Manifest | None:
    """The committed manifest of ``index_dir``, or None when no snapshot was ever committed;
    a manifest of another kind, or of another format version, is a one-line error."""
    path = index_dir / MANIFEST_NAME
    data = read_json_object(path, "manifest")
    if data is None:
        return None
    found = data.get("kind", "images")
    if found != kind:
        what = KINDS.get(found, f"a {found!r} directory")
        raise ClipsearchError(f"{index_dir} is {what}, not {KINDS[kind]}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        again = "index into a new directory" if kind == "images" else "build it again"
        raise ClipsearchError(
            f"{KINDS[kind]} {index_dir} has format version {version}; this clipsearch reads "
            f"version {FORMAT_VERSION}: {again}"
        )
    if "texts" in data:  # text collections written before they shared this type
        data = {**data, "catalog": [data["texts"]], "counts": {"texts": data.get("count", 0)}}
    known = Manifest.__dataclass_fields__
    identity = ModelIdentity.from_dict(data.get("model") or {}, f"manifest {path}")
    vector_index = VectorIndexFile.from_json(data.get("vector_index"), f"manifest {path}")
    typed = {"model": identity, "vector_index": vector_index}
    try:
        return Manifest(**{k: v for k, v in data.items() if k in known} | typed)
    except TypeError as exc:
        raise ClipsearchError(f"cannot read manifest {path}: {exc}") from None


def indexed_model_spec(index_dir: Path) -> str | None:
    """The model spec an index was built with; None when there is no readable index there."""
    try:
        manifest = read_manifest(index_dir)
    except ClipsearchError:
        return None
    return manifest.model_spec if manifest else None


def open_manifest(index_dir: Path) -> Manifest:
    """The committed manifest of the image index at ``index_dir``; a one-line error that
    says why there is none."""
    manifest = read_manifest(index_dir)
    if manifest is not None:
        return manifest
    if (index_dir / MANIFEST_NAME).exists() or not index_dir.exists():
        raise ClipsearchError(f"no index at {index_dir} (build one with `clipsearch index PATH`)")
    if _only_writer_leftovers(index_dir):
        raise ClipsearchError(
            f"no index at {index_dir} yet: a `clipsearch index` run there stopped before its "
            "first commit (run it again: it re-uses what it had embedded)"
        )
    raise ClipsearchError(f"{index_dir} is not a clipsearch index (no {MANIFEST_NAME})")


def _only_writer_leftovers(index_dir: Path) -> bool:
    try:
        names = {entry.name for entry in os.scandir(index_dir)}
    except OSError:
        return False
    return names <= WRITER_LEFTOVERS


def damaged(index_dir: Path, detail: str) -> ClipsearchError:
    """The error for an index whose manifest names a file that cannot be read."""
    return ClipsearchError(
        f"index {index_dir} is damaged ({detail}); `clipsearch repair` on it keeps what is "
        "intact and rebuilds the vector index without re-embedding"
    )
