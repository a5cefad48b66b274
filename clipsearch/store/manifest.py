"""The manifest: the one file that says which snapshot of an index is current.

One type for both kinds of index directory: image indexes (``kind`` "images") and text
collections (``kind`` "texts", whose catalog is one Parquet file of texts). Every other file
of an index (catalog parts, the FAISS file, the error list) is immutable and named by the
manifest. A snapshot is committed by writing a new manifest to a temporary
file and renaming it over the old one (``storage.commit_snapshot``), so a reader sees either
the old snapshot or the new one, never a mix. See indexes/README.md for the format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.store import access
from clipsearch.store.storage import MANIFEST_NAME, read_json_object

FORMAT_VERSION = 1
KINDS = {"images": "an image index", "texts": "a text collection"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    vector_index: dict[str, Any] = field(default_factory=dict)  # {"file": ..., kind, params...}
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
        """The files this snapshot reads (relative paths): catalog parts, errors, vectors."""
        named = set(self.catalog)
        if self.errors:
            named.add(self.errors)
        if self.vector_index.get("file"):
            named.add(self.vector_index["file"])
        return named

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model.as_dict()}


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
    try:
        return Manifest(**{k: v for k, v in data.items() if k in known} | {"model": identity})
    except TypeError as exc:
        raise ClipsearchError(f"cannot read manifest {path}: {exc}") from None


def indexed_model_spec(index_dir: Path) -> str | None:
    """The model spec an index was built with; None when there is no readable index there."""
    try:
        manifest = read_manifest(index_dir)
    except ClipsearchError:
        return None
    return manifest.model_spec if manifest else None
