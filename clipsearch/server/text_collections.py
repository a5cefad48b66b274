"""Stored text collections a client may rank against an image (image → text).

A client names a collection by a bare NAME, never a path: the server looks for it among
the collections given at start-up (by folder name) and beside the index (``indexes/NAME``
when the index is ``indexes/default``). Only collections embedded by the index's model
are usable. An opened collection is kept, and reopened when its manifest changes.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError
from clipsearch.server.errors import ApiError
from clipsearch.store.layout import MANIFEST_NAME
from clipsearch.texts import TextCollection, read_text_manifest

if TYPE_CHECKING:
    from clipsearch.model.identity import ModelIdentity

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _stamp(directory: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(directory / MANIFEST_NAME)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino


class TextCollections:
    def __init__(self, index_dir: Path, identity: ModelIdentity, extra: tuple[Path, ...] = ()):
        self.root = index_dir.parent
        self.index_dir = index_dir
        self.identity = identity
        self.extra = {Path(d).name: Path(d) for d in extra}
        self._open: dict[Path, tuple[tuple[int, int], TextCollection]] = {}
        self._lock = threading.Lock()

    def _directory(self, name: str) -> Path:
        if not NAME.match(name):
            raise ApiError(400, f"invalid text collection name {name!r}: a bare NAME")
        return self.extra.get(name) or self.root / name

    def available(self) -> list[dict[str, Any]]:
        """Collections a client can name: the given ones and those beside the index."""
        candidates = dict(self.extra)
        try:
            for entry in os.scandir(self.root):
                if NAME.match(entry.name) and entry.is_dir() and entry.path != str(self.index_dir):
                    candidates.setdefault(entry.name, Path(entry.path))
        except OSError:
            pass
        found = []
        for name, directory in sorted(candidates.items()):
            try:
                manifest = read_text_manifest(directory)
            except ClipsearchError:
                continue  # an image index or a damaged collection: not offered
            if manifest is not None:
                usable = manifest.model.same_weights(self.identity)
                found.append({"name": name, "count": manifest.counts["texts"], "usable": usable})
        return found

    def get(self, name: str) -> TextCollection:
        """The collection called ``name``; 404 when there is none, 400 when unusable."""
        directory = self._directory(name)
        stamp = _stamp(directory)
        if stamp is None:
            raise ApiError(404, f"no text collection named {name!r}")
        with self._lock:
            cached = self._open.get(directory)
            if cached and cached[0] == stamp:
                return cached[1]
        try:
            collection = TextCollection.open(directory)
        except ClipsearchError as exc:
            raise ApiError(400, f"text collection {name!r}: {exc}") from None
        if not collection.identity.same_weights(self.identity):
            raise ApiError(
                400,
                f"text collection {name!r} was embedded by model '{collection.model_spec}', "
                f"not by this index's model '{self.identity.spec}'",
            )
        with self._lock:
            self._open[directory] = (stamp, collection)
        return collection
