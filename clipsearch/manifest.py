"""The index manifest: the one file that says which snapshot of an index is current.

Every other file of an index (catalog parts, the FAISS file, the error list) is immutable
and named by the manifest. A snapshot is committed by writing a new manifest to a temporary
file and renaming it over the old one, so a reader sees either the old snapshot or the new
one, never a mix. See indexes/README.md for the format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError
from clipsearch.storage import read_json_object, write_json_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# How long a file dropped by a commit stays on disk for readers of the snapshot before: far
# longer than one query or one command takes. A reader that holds a snapshot longer (a
# server) rereads the manifest when a file is gone, and carries on with the new snapshot.
RETIRED_GRACE_SECONDS = 600


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    model: dict[str, Any]  # Model.identity of the model that embedded every row
    embedding_dim: int
    embedding_dtype: str  # dtype of the catalog's embedding column: "float16" or "float32"
    snapshot: int = 0  # increases by one with every commit
    next_id: int = 0  # the next catalog id to hand out; ids are never reused
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "errors": 0})
    catalog: list[str] = field(default_factory=list)  # Parquet parts, relative to the index
    errors: str | None = None  # Parquet list of unreadable files, relative to the index
    vector_index: dict[str, Any] = field(default_factory=dict)  # {"file": ..., kind, params...}
    # "ENGINE/PRECISION" of every run that embedded rows, e.g. ["onnx/fp32"]: one model's
    # embeddings from different engines or precisions are comparable, this says which ran.
    embedded_with: list[str] = field(default_factory=list)
    # Files earlier snapshots named and this one does not, with when they were dropped: kept
    # for readers still on those snapshots until RETIRED_GRACE_SECONDS have passed.
    retired: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    format_version: int = FORMAT_VERSION

    @property
    def model_spec(self) -> str:
        return str(self.model["spec"])

    def files(self) -> set[str]:
        """The files this snapshot reads (relative paths): catalog parts, errors, vectors."""
        named = set(self.catalog)
        if self.errors:
            named.add(self.errors)
        if self.vector_index.get("file"):
            named.add(self.vector_index["file"])
        return named

    def kept_files(self) -> set[str]:
        """What clean-up must leave: this snapshot's files and those still in their grace."""
        return self.files() | set(self.retired)


def read_manifest(index_dir: Path) -> Manifest | None:
    """The committed manifest of ``index_dir``, or None when no snapshot was ever committed."""
    data = read_json_object(index_dir / MANIFEST_NAME, "index manifest")
    if data is None:
        return None
    kind = data.get("kind", "images")
    if kind != "images":
        raise ClipsearchError(f"{index_dir} holds {kind}, not an image index")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ClipsearchError(
            f"index {index_dir} has format version {version}; this clipsearch reads version "
            f"{FORMAT_VERSION}: re-index into a new --index"
        )
    known = Manifest.__dataclass_fields__
    return Manifest(**{k: v for k, v in data.items() if k in known})


def indexed_model_spec(index_dir: Path) -> str | None:
    """The model spec an index was built with; None when there is no readable index there."""
    try:
        manifest = read_manifest(index_dir)
    except ClipsearchError:
        return None
    return manifest.model_spec if manifest else None


def commit_manifest(index_dir: Path, manifest: Manifest, previous: Manifest | None) -> None:
    """Atomically make ``manifest`` the current snapshot (durable once this returns).

    The files ``previous`` named and ``manifest`` does not are retired, not deleted: a
    reader that opened ``previous`` a moment ago still finds them (see ``retired``).
    """
    now = datetime.now(timezone.utc)
    manifest.updated_at = now.isoformat(timespec="seconds")
    manifest.retired = _still_retired(previous, manifest, now)
    write_json_atomic(index_dir / MANIFEST_NAME, asdict(manifest))


def _still_retired(previous: Manifest | None, new: Manifest, now: datetime) -> dict[str, str]:
    if previous is None:
        return {}
    live = new.files()
    kept = {
        name: at
        for name, at in previous.retired.items()
        if name not in live
        and (now - datetime.fromisoformat(at)).total_seconds() < RETIRED_GRACE_SECONDS
    }
    stamp = now.isoformat(timespec="seconds")
    return {**kept, **{name: stamp for name in previous.files() - live}}
