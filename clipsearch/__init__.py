"""clipsearch: semantic search over images and text with CLIP-style joint embeddings.

Heavy modules (torch, open_clip, faiss) load on first use, so that importing the
package and the CLI's help stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from clipsearch.model import Model
    from clipsearch.query.search import Hit, Index

__all__ = ["Hit", "Index", "Model", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Model":
        from clipsearch.model import Model

        return Model
    if name in ("Index", "Hit"):
        from clipsearch.query import search

        return getattr(search, name)
    raise AttributeError(f"module 'clipsearch' has no attribute {name!r}")
