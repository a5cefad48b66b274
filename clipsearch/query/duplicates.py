"""Groups of images that are the same photo, from what the index already holds.

Three signals, all in the catalog: the content hash (size plus the first and last MiB) finds
byte-identical files, confirmed by hashing each whole file; the embeddings propose the same
photo re-encoded, resized, slightly cropped, in another format or stored rotated (every
image's nearest neighbours from the vector index, batched, restricted by ``allowed``); and
the fingerprint, an 8x8 grey picture of each image, confirms them. Embeddings alone cannot:
a model embeds two different photos of one subject as closely as two copies of one photo
(every model measured, trained or not: benchmarks/RESULTS.md, "Duplicates").

A group is a keeper (the most pixels, then the oldest) and every image that is the same
photo as the keeper: a chain of look-alikes (burst shots, each a little different from the
last) does not grow into one group. Nothing is deleted or moved here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from clipsearch.base import fingerprint
from clipsearch.errors import ClipsearchError
from clipsearch.query.snapshot import Snapshot
from clipsearch.settings import DEFAULT_DUPLICATE_THRESHOLD
from clipsearch.store import catalog, vectors

DEFAULT_THRESHOLD = DEFAULT_DUPLICATE_THRESHOLD
# Neighbours fetched per image: a photo with more copies than this still gathers them all,
# through its copies' own neighbours.
NEIGHBOURS = 16
# Approximate codes move a pair's score by up to ~0.01 (SQ8 at 512 dims); candidates this far
# under the threshold are scored exactly before they are dropped.
APPROXIMATION_MARGIN = 0.03
BATCH_ROWS = 8192
MEMBER_COLUMNS = [
    *("path", "size", "width", "height", "format", "mtime_ns", "taken_at", "content_hash")
]
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class DuplicateImage:
    id: int
    path: str
    size: int  # bytes
    width: int | None
    height: int | None
    format: str | None
    mtime_ns: int
    taken_at: datetime | None
    content_hash: str | None  # size and first and last MiB, as indexed
    similarity: float  # cosine to the group's keeper (1.0 for the keeper)
    identical: bool  # the same bytes as the keeper's file (the keeper: True)

    @property
    def dimensions(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else "?"


@dataclass
class DuplicateGroup:
    images: list[DuplicateImage]  # the suggested keeper first, then by similarity to it
    similarities: list[list[float]]  # cosine between every two images, in ``images`` order

    @property
    def keeper(self) -> DuplicateImage:
        return self.images[0]

    @property
    def others(self) -> list[DuplicateImage]:
        return self.images[1:]

    @property
    def reclaimable_bytes(self) -> int:
        return sum(image.size for image in self.others)

    def as_dict(self) -> dict[str, Any]:
        return {
            "keeper": self.keeper.path,
            "reclaimable_bytes": self.reclaimable_bytes,
            "images": [
                {**vars(image), "taken_at": _iso(image.taken_at), "keeper": i == 0}
                for i, image in enumerate(self.images)
            ],
            "similarities": self.similarities,
        }


def find_duplicates(
    snapshot: Snapshot,
    threshold: float = DEFAULT_THRESHOLD,
    where: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """Groups of images that are the same photo, the largest groups first.

    Two images are one photo when their files are byte-identical, or when their embeddings
    are at least ``threshold`` alike (cosine, 0 < threshold ≤ 1) and their fingerprints
    differ by at most ``fingerprint.MAX_DIFFERENCE``. ``where``: only the images matching
    this catalog predicate are compared. ``progress(done, total)`` is called as images are
    compared.
    """
    if not 0 < threshold <= 1:
        raise ClipsearchError(
            f"threshold must be in (0, 1], not {threshold}", parameter="threshold"
        )
    allowed = snapshot.matching_ids(where) if where else None
    evidence = _Evidence(snapshot, threshold, allowed)
    pairs = _near_pairs(snapshot, evidence, allowed, progress)
    pairs |= evidence.same_content
    if not pairs:
        return []
    evidence.gather(sorted({i for pair in pairs for i in pair}))
    pairs = {(a, b) for a, b in pairs if evidence.same_photo(a, b)}
    groups = []
    for component in _components(pairs):
        known = [i for i in component if i in evidence.rows]
        for ids in _split_around_keepers(
            known, lambda i: _keeper_order(evidence.rows[i]), evidence.same_photo
        ):
            groups.append(_group(ids, evidence))
    groups.sort(key=lambda g: (-len(g.images), g.keeper.path))
    return groups


class _Evidence:
    """What decides whether two images are one photo: their exact embeddings, fingerprints
    and files. Fingerprints of every compared image are held (64 bytes each); embeddings
    and rows only for the images of candidate pairs. One read of the catalog gives the
    fingerprints and the pairs of files with the same content hash."""

    def __init__(self, snapshot: Snapshot, threshold: float, allowed: np.ndarray | None) -> None:
        self.snapshot, self.threshold = snapshot, threshold
        wanted = None if allowed is None else allowed.tolist()
        table = snapshot.table(["id", "fingerprint", "content_hash"], wanted).sort_by("id")
        self.ids = table.column("id").to_numpy()
        self.same_content = _same_content_pairs(self.ids, table.column("content_hash"))
        column = table.column("fingerprint").combine_chunks()
        self.has_picture = column.is_valid().to_numpy(zero_copy_only=False)
        filled = column.fill_null(bytes(fingerprint.SIZE)) if len(column) else column
        data = filled.buffers()[1] if len(column) else b""
        start, size = filled.offset * fingerprint.SIZE, len(column) * fingerprint.SIZE
        raw = np.frombuffer(data, np.uint8)[start : start + size]
        self.picture_matrix = raw.reshape(-1, fingerprint.SIZE)
        self.pictures: dict[int, bytes | None] = {}  # of candidates, filled in by gather()
        self.embedding: dict[int, np.ndarray] = {}
        self.rows: dict[int, dict[str, Any]] = {}
        self._digests: dict[str, str | None] = {}

    def alike_pictures(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Which pairs (a[i], b[i]) have fingerprints within MAX_DIFFERENCE, or lack one
        (rows indexed before fingerprints existed: judged from their files later)."""
        first, second = np.searchsorted(self.ids, a), np.searchsorted(self.ids, b)
        apart = fingerprint.differences(self.picture_matrix[first], self.picture_matrix[second])
        unknown = ~(self.has_picture[first] & self.has_picture[second])
        return unknown | (apart <= fingerprint.MAX_DIFFERENCE)

    def gather(self, ids: list[int]) -> None:
        found_ids, found = self.snapshot.embeddings(ids)
        self.embedding = dict(zip(found_ids.tolist(), found, strict=True))
        self.rows = self.snapshot.rows(ids, MEMBER_COLUMNS)
        for i in ids:
            position = int(np.searchsorted(self.ids, i))
            if self.has_picture[position]:
                self.pictures[i] = self.picture_matrix[position].tobytes()
            elif i in self.rows:
                self.pictures[i] = _picture_of_file(self.rows[i]["path"])

    def similarity(self, a: int, b: int) -> float:
        return min(1.0, float(np.dot(self.embedding[a], self.embedding[b])))

    def identical(self, a: int, b: int) -> bool:
        first, second = self.rows[a], self.rows[b]
        same_hash = first["content_hash"] is not None
        if not same_hash or first["content_hash"] != second["content_hash"]:
            return False
        if first["size"] != second["size"]:
            return False
        digests = [_file_digest(row["path"], self._digests) for row in (first, second)]
        return digests[0] is not None and digests[0] == digests[1]

    def same_photo(self, a: int, b: int) -> bool:
        if a not in self.rows or b not in self.rows:
            return False
        if self.identical(a, b):
            return True
        first, second = self.pictures.get(a), self.pictures.get(b)
        if first is None or second is None:  # a file that cannot be read now
            return False
        return fingerprint.alike(first, second) and self.similarity(a, b) >= self.threshold


def _near_pairs(
    snapshot: Snapshot,
    evidence: _Evidence,
    allowed: np.ndarray | None,
    progress: Callable[[int, int], None] | None,
) -> set[tuple[int, int]]:
    """(smaller id, larger id) of images among each other's nearest neighbours whose
    embeddings are about ``threshold`` alike or more and whose fingerprints agree."""
    index, info = snapshot.vectors, snapshot.vector_info
    floor = evidence.threshold - (0 if info.kind == "flat" else APPROXIMATION_MARGIN)
    total = len(allowed) if allowed is not None else int(snapshot.manifest.counts["images"])
    candidates: set[tuple[int, int]] = set()
    done = 0
    parts = snapshot.manifest.catalog
    for ids, stored in catalog.iter_embeddings(snapshot.index_dir, parts, BATCH_ROWS):
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, stored = ids[keep], stored[keep]
        if not len(ids):
            continue
        scores, neighbours = vectors.search(index, info, stored, NEIGHBOURS + 1, allowed)
        query_ids = np.broadcast_to(ids[:, None], neighbours.shape)
        close = (scores >= floor) & (neighbours != query_ids)
        first, second = query_ids[close], neighbours[close]
        alike = evidence.alike_pictures(first, second)
        for a, b in zip(first[alike].tolist(), second[alike].tolist(), strict=True):
            candidates.add((a, b) if a < b else (b, a))
        done += len(ids)
        if progress:
            progress(done, total)
    return candidates


def _same_content_pairs(ids: np.ndarray, hashes: Any) -> set[tuple[int, int]]:
    """Pairs of images whose files had the same content hash when indexed."""
    by_hash: dict[str, list[int]] = {}
    for row_id, digest in zip(ids.tolist(), hashes.to_pylist(), strict=True):
        if digest is not None:
            by_hash.setdefault(digest, []).append(row_id)
    groups = [sorted(g) for g in by_hash.values() if len(g) > 1]
    return {(g[0], other) for g in groups for other in g[1:]}


def _components(pairs: set[tuple[int, int]]) -> list[list[int]]:
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    return list(members.values())


def _split_around_keepers(
    ids: list[int], order: Callable[[int], Any], same_photo: Callable[[int, int], bool]
) -> list[list[int]]:
    """Groups within a connected set: the first keeper by ``order`` with every image that is
    the same photo as it, then the same among the rest. Each group: its keeper first."""
    left = sorted(ids, key=order)
    groups = []
    while len(left) > 1:
        keeper, rest = left[0], left[1:]
        members = [other for other in rest if same_photo(keeper, other)]
        if members:
            groups.append([keeper, *members])
        left = [other for other in rest if other not in members]
    return groups


def _group(ids: list[int], evidence: _Evidence) -> DuplicateGroup:
    """The group of ``ids`` (keeper first); the others by identity, then similarity."""
    keeper = ids[0]
    facts = {i: (evidence.identical(keeper, i), evidence.similarity(keeper, i)) for i in ids}
    others = sorted(
        ids[1:], key=lambda i: (not facts[i][0], -facts[i][1], evidence.rows[i]["path"])
    )
    ordered = [keeper, *others]
    images = [
        DuplicateImage(
            id=i,
            **{c: evidence.rows[i][c] for c in MEMBER_COLUMNS},
            similarity=1.0 if i == keeper else round(facts[i][1], 4),
            identical=i == keeper or facts[i][0],
        )
        for i in ordered
    ]
    matrix = np.stack([evidence.embedding[i] for i in ordered])
    similarities = np.clip(matrix @ matrix.T, -1.0, 1.0).round(4).tolist()
    return DuplicateGroup(images, similarities)


def _keeper_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """The most pixels first, then the oldest (taken, else modified), then by path."""
    pixels = (row["width"] or 0) * (row["height"] or 0)
    taken = row["taken_at"]
    when = taken.replace(tzinfo=timezone.utc).timestamp() * 1e9 if taken else row["mtime_ns"]
    return (-pixels, when if when is not None else float("inf"), row["path"])


def _picture_of_file(path: str) -> bytes | None:
    """The fingerprint of an image file indexed before catalogs held them (None: unreadable)."""
    from clipsearch.base.images import DecodeError, load_image

    try:
        image, _ = load_image(path, min_side=fingerprint.SIDE * 4)
    except (DecodeError, OSError):
        return None
    return fingerprint.of_image(image)


def _file_digest(path: str, digests: dict[str, str | None]) -> str | None:
    """blake2b of the whole file (None if it cannot be read now)."""
    if path not in digests:
        try:
            digest = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as f:
                while block := f.read(_HASH_BLOCK):
                    digest.update(block)
            digests[path] = digest.hexdigest()
        except OSError:
            digests[path] = None
    return digests[path]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
