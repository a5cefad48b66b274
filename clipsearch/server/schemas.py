"""Response models: they document the API on the OpenAPI page (``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Error(BaseModel):
    error: str = Field(description="What went wrong, in one line.")
    status: int = Field(description="The HTTP status code, repeated.")


class Hit(BaseModel):
    rank: int = Field(description="1 for the best hit.")
    id: int = Field(description="Catalog id: stable, use it in URLs and in like=ID.")
    score: float = Field(description="Cosine similarity to the query.")
    path: str = Field(description="Absolute path of the file on the server.")
    thumbnail_url: str
    image_url: str = Field(description="The original file.")
    columns: dict[str, Any] = Field(default_factory=dict, description="Columns asked for.")
    text: str | None = Field(
        default=None, description="The words in the photo (an index made with --ocr)."
    )
    text_marks: list[tuple[int, int]] = Field(
        default_factory=list, description="Where the query's words are in text: [start, end)."
    )


class DuplicateImage(BaseModel):
    id: int
    path: str
    size: int = Field(description="Bytes.")
    width: int | None
    height: int | None
    format: str | None
    similarity: float = Field(description="Cosine similarity to the group's keeper.")
    identical: bool = Field(description="The same bytes as the keeper's file.")
    keeper: bool = Field(description="The suggested one to keep: most pixels, then oldest.")
    thumbnail_url: str
    image_url: str


class DuplicateGroup(BaseModel):
    images: list[DuplicateImage] = Field(description="The keeper first.")
    reclaimable_bytes: int = Field(description="Bytes of every image but the keeper.")


class DuplicatesResponse(BaseModel):
    snapshot: int
    took_ms: float
    threshold: float
    where: str | None = None
    groups_total: int
    groups: list[DuplicateGroup] = Field(description="The largest groups first, up to limit.")


class QueryEcho(BaseModel):
    q: list[str] = Field(default_factory=list)
    like: list[int] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="Names of uploaded images.")
    k: int
    where: str | None = None
    min_score: float | None = None


class SearchResponse(BaseModel):
    snapshot: int = Field(description="The index snapshot that answered.")
    took_ms: float
    query: QueryEcho
    hits: list[Hit]


class ImageInfo(BaseModel):
    id: int
    path: str
    thumbnail_url: str
    image_url: str
    columns: dict[str, Any] = Field(description="Every catalog column but the embedding.")


class TextHit(BaseModel):
    rank: int
    id: int = Field(description="0-based line number in the collection's source file.")
    text: str
    score: float


class TextSearchResponse(BaseModel):
    collection: str
    took_ms: float
    hits: list[TextHit]


class TextCollectionInfo(BaseModel):
    name: str
    count: int
    usable: bool = Field(description="Embedded by this index's model.")


class LabelProbability(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    label: str
    probability: float
    top: list[LabelProbability]
    took_ms: float


class VectorIndex(BaseModel):
    kind: str = Field(description="flat, ivf-flat, ivf-sq8 or ivf-pq.")
    count: int
    dim: int
    params: dict[str, Any]
    recall_at_10: float | None = Field(description="Against exact search, when built.")
    built_on: str


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_k: int
    thumbnail_sizes: list[int]


class IndexInfo(BaseModel):
    index: str
    snapshot: int
    updated_at: str
    model: dict[str, Any] = Field(description="Identity of the model that embedded the index.")
    counts: dict[str, int]
    vector_index: VectorIndex
    columns: dict[str, str] = Field(description="Catalog columns usable in where=, and types.")
    limits: Limits


class Health(BaseModel):
    status: str
    index: str
    snapshot: int
    pid: int
    model: str


class Endpoint(BaseModel):
    method: str
    path: str
    summary: str


class ApiIndex(BaseModel):
    """What ``GET /api`` lists: every endpoint, and where the full schema is."""

    endpoints: list[Endpoint]
    docs: str
    openapi: str
