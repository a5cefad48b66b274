"""Texts ranked against image embeddings exactly: lists embedded on the fly (``TextList``,
``rank_texts``), and the hits both they and stored collections return."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.errors import ClipsearchError
from clipsearch.texts.source import read_texts_file

if TYPE_CHECKING:
    from clipsearch.model import Model
    from clipsearch.model.identity import ModelIdentity

EMBED_CHUNK = 1024  # texts per progress step while building
ProgressCallback = Callable[[int, int], None]  # (texts embedded so far, total)


@dataclass(frozen=True)
class TextHit:
    id: int  # 0-based line number in the source file
    text: str
    score: float  # cosine similarity to the query

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "id": self.id, "text": self.text, "score": self.score}


def query_matrix(query_vectors: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"expected query vectors of dim {dim}, got shape {queries.shape}")
    return queries


def check_k(k: int) -> None:
    if k < 1:
        raise ClipsearchError(f"k must be at least 1, got {k}")


def hits_of(
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
    """Texts embedded on the fly and ranked exactly (a texts FILE)."""

    def __init__(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray,
        ids: Sequence[int] | np.ndarray | None = None,
        identity: ModelIdentity | None = None,
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
        return cls(texts, embed_all(model, list(texts), progress), ids, model.identity)

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
        from clipsearch.store.vectors import exact_top_k

        check_k(k)
        queries = query_matrix(query_vectors, self.embeddings.shape[1])
        scores, rows = exact_top_k(queries, self.embeddings, k)
        return hits_of(scores, rows, self.ids, self.texts)


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
    check_k(k)
    if not texts:
        raise ClipsearchError("no texts to rank")
    return TextList.embed(model, texts, ids).search(query_vectors, k)


def embed_all(model: Model, texts: list[str], progress: ProgressCallback | None) -> np.ndarray:
    chunks = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunks.append(model.embed_texts(texts[start : start + EMBED_CHUNK]))
        if progress:
            progress(min(start + EMBED_CHUNK, len(texts)), len(texts))
    return np.concatenate(chunks) if chunks else np.zeros((0, model.dim), np.float32)
