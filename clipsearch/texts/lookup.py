"""What a texts argument names, a FILE or a stored collection, and ranking the texts it
names against one image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError
from clipsearch.settings import default_model_spec, resolve_index_dir
from clipsearch.store.layout import MANIFEST_NAME
from clipsearch.texts.collection import BUILD_HINT, TextCollection, check_model
from clipsearch.texts.ranking import ProgressCallback, TextList, check_k
from clipsearch.texts.source import SourceTexts, read_texts_file

if TYPE_CHECKING:
    from clipsearch.model import Model


def locate_texts(value: str | os.PathLike) -> SourceTexts | TextCollection:
    """What a texts argument names: an existing file (read now) or a stored collection.

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
        raise ClipsearchError(f"no text collection at {directory} ({BUILD_HINT})")
    if path.is_dir():
        raise ClipsearchError(
            f"{text!r} is a directory without a text collection, and there is no "
            f"text collection at {directory} ({BUILD_HINT})",
            parameter="texts",
        )
    raise ClipsearchError(
        f"{text!r}: no such file, and no text collection at {directory} ({BUILD_HINT})",
        parameter="texts",
    )


def resolve_texts(
    model: Model, value: str | os.PathLike, progress: ProgressCallback | None = None
) -> TextCollection | TextList:
    """A texts FILE (its lines embedded now with ``model``) or collection NAME/dir
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

    check_k(k)
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
