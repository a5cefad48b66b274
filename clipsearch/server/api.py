"""The JSON API: search, image → text, zero-shot classification, index facts.

Every search-like endpoint has a GET form (text and indexed images by id) and a POST form
(multipart, with uploaded images). Endpoints are plain functions: FastAPI runs them in its
thread pool, so encoding and searching never block the event loop.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from PIL import Image
from pydantic import Field

from clipsearch.errors import ClipsearchError
from clipsearch.query.duplicates import DuplicateGroup
from clipsearch.query.search import Hit
from clipsearch.server import schemas
from clipsearch.server.config import MAX_K, THUMBNAIL_SIZES, ServerConfig
from clipsearch.server.errors import ApiError
from clipsearch.server.files import FILE_COLUMNS, version_of
from clipsearch.server.served_index import ServedIndex
from clipsearch.server.text_collections import TextCollections
from clipsearch.server.thumbnails import ThumbnailCache
from clipsearch.server.uploads import decode_upload
from clipsearch.settings import DEFAULT_DUPLICATE_THRESHOLD

MAX_IMAGES = 8  # uploaded images in one query
MAX_WHERE = 2000
MAX_DUPLICATE_GROUPS = 1000  # per answer: each image is a thumbnail the page loads
MAX_LABELS = 1000

_errors: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Error} for code in (400, 404, 413, 422)
}
router = APIRouter(prefix="/api", responses=_errors)


@dataclass
class Services:
    """What the routes share; stored on ``app.state.services``."""

    config: ServerConfig
    served: ServedIndex
    thumbnails: ThumbnailCache
    texts: TextCollections


def services(request: Request) -> Services:
    return request.app.state.services


def form_only(request: Request) -> None:
    """Uploads take every parameter from the form: one given in the query string would
    otherwise be ignored without a word (``POST /api/search?k=2`` answering 10 hits)."""
    if request.query_params:
        names = ", ".join(sorted(set(request.query_params.keys())))
        raise ApiError(
            400,
            f"POST {request.url.path} takes its parameters as form fields, not in the query "
            f"string ({names})",
        )


FORM_ONLY = [Depends(form_only)]


# -- shared parameters ---------------------------------------------------------------------

Terms = Annotated[
    list[str] | None,
    Query(description="Text terms, each [+|-][WEIGHT:]TEXT, e.g. 'beach', '2:sea', '-people'."),
]
# Catalog ids are int64: a larger number is no id, refused before it reaches numpy.
MAX_ID = 2**63 - 1
AnId = Annotated[int, Field(ge=0, le=MAX_ID)]
ImageId = Annotated[int, Path(ge=0, le=MAX_ID, description="Catalog id of an indexed image.")]
Like = Annotated[
    list[AnId] | None,
    Query(description="Ids of indexed images to search like (image → image)."),
]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of results.")]
Where = Annotated[
    str | None,
    Query(
        max_length=MAX_WHERE,
        description='SQL predicate over catalog columns, e.g. "width > 1000 AND format = '
        "'JPEG'\" (no subqueries or table functions).",
    ),
]
Columns = Annotated[
    str | None, Query(description="Extra catalog columns per hit, comma-separated: width,height.")
]
MinScore = Annotated[
    float | None,
    Query(ge=-1, le=1, description="Drop hits less similar (cosine) than this; k stays the most."),
]
Words = Annotated[
    bool,
    Query(description="Rank by the words written in the photos alone (an index made with --ocr)."),
]


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def _urls(image_id: int, row: dict[str, Any]) -> tuple[str, str]:
    version = version_of(row)
    base = f"/api/images/{image_id}"
    return f"{base}/thumbnail?v={version}", f"{base}/file?v={version}"


def _hit(rank: int, hit: Hit, columns: list[str]) -> schemas.Hit:
    thumbnail_url, image_url = _urls(hit.id, hit.columns)
    return schemas.Hit(
        rank=rank,
        id=hit.id,
        score=hit.score,
        path=hit.path,
        thumbnail_url=thumbnail_url,
        image_url=image_url,
        columns={c: hit.columns[c] for c in columns},
        text=hit.text,
        text_marks=hit.marks,
    )


def _images(svc: Services, uploads: list[UploadFile]) -> list[Image.Image]:
    if len(uploads) > MAX_IMAGES:
        raise ApiError(400, f"at most {MAX_IMAGES} images per query")
    config = svc.config
    side = svc.served.model.image_size
    return [
        decode_upload(u.file, u.filename, config.max_upload_bytes, config.max_pixels, side)
        for u in uploads
    ]


def _search(
    svc: Services,
    terms: list[str],
    uploads: list[UploadFile],
    like: list[int],
    k: int,
    where: str | None,
    columns: str | None,
    min_score: float | None = None,
    words_only: bool = False,
) -> schemas.SearchResponse:
    start = time.perf_counter()
    wanted = _columns(columns)
    images = _images(svc, uploads)
    hits = svc.served.fresh().search(
        terms,
        image=images,
        like=like,
        k=k,
        where=where or None,
        columns=list(dict.fromkeys([*FILE_COLUMNS, *wanted])),  # the files' facts: URLs
        min_score=min_score,
        words_only=words_only,
    )
    return schemas.SearchResponse(
        snapshot=hits.snapshot,
        took_ms=round((time.perf_counter() - start) * 1000, 3),
        query=schemas.QueryEcho(
            q=terms,
            like=like,
            images=[u.filename or "" for u in uploads],
            k=k,
            where=where,
            min_score=min_score,
        ),
        hits=[_hit(rank, hit, wanted) for rank, hit in enumerate(hits, 1)],
    )


# -- search --------------------------------------------------------------------------------


@router.get("/search", response_model=schemas.SearchResponse, summary="Search by text or id")
def search(
    request: Request,
    q: Terms = None,
    like: Like = None,
    k: K = 10,
    where: Where = None,
    columns: Columns = None,
    min_score: MinScore = None,
    words: Words = False,
) -> schemas.SearchResponse:
    """Text → image (q), image → image from indexed images (like), or both combined. On an
    index with the words in its photos, q also finds them by those (``words``: by those
    alone)."""
    svc = services(request)
    return _search(svc, q or [], [], like or [], k, where, columns, min_score, words)


@router.post(
    "/search",
    response_model=schemas.SearchResponse,
    summary="Search with uploaded images",
    dependencies=FORM_ONLY,
)
def search_upload(
    request: Request,
    image: Annotated[list[UploadFile], File(description="Query image(s).")],
    q: Annotated[list[str] | None, Form(description="Text terms to combine with.")] = None,
    like: Annotated[list[AnId] | None, Form(description="Indexed image ids.")] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    where: Annotated[str | None, Form(max_length=MAX_WHERE)] = None,
    columns: Annotated[str | None, Form()] = None,
    min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
) -> schemas.SearchResponse:
    """Image → image by upload; with q and/or like the query vectors are combined."""
    return _search(services(request), q or [], image, like or [], k, where, columns, min_score)


# -- images --------------------------------------------------------------------------------


@router.get("/images/{image_id}", response_model=schemas.ImageInfo, summary="One indexed image")
def image_info(request: Request, image_id: ImageId) -> schemas.ImageInfo:
    """The catalog row of one image (every column but its embedding)."""
    row = services(request).served.image_row(image_id)
    thumbnail_url, image_url = _urls(image_id, row)
    return schemas.ImageInfo(
        id=image_id,
        path=row["path"],
        thumbnail_url=thumbnail_url,
        image_url=image_url,
        columns={c: v for c, v in row.items() if c not in ("id", "path")},
    )


# -- image → text ---------------------------------------------------------------------------


@router.get("/texts", response_model=list[schemas.TextCollectionInfo], summary="Collections")
def text_collections(request: Request) -> list[dict[str, Any]]:
    """Stored text collections this server can rank against an image."""
    return services(request).texts.available()


def _rank_texts(
    svc: Services, upload: UploadFile | None, like: int | None, collection: str, k: int
) -> schemas.TextSearchResponse:
    start = time.perf_counter()
    texts = svc.texts.get(collection)
    image = _images(svc, [upload])[0] if upload is not None else None
    vector = svc.served.image_vector(image, like)
    hits = texts.search(vector[None, :], k)[0]
    return schemas.TextSearchResponse(
        collection=collection,
        took_ms=round((time.perf_counter() - start) * 1000, 3),
        hits=[schemas.TextHit(rank=r, **vars(h)) for r, h in enumerate(hits, 1)],
    )


Collection = Annotated[str, Query(description="Name of a stored text collection.")]


@router.get("/texts/search", response_model=schemas.TextSearchResponse, summary="Image → text")
def texts_search(
    request: Request,
    like: Annotated[int, Query(ge=0, le=MAX_ID, description="Id of the indexed query image.")],
    collection: Collection,
    k: K = 10,
) -> schemas.TextSearchResponse:
    """Rank a stored text collection (captions, labels) against an indexed image."""
    return _rank_texts(services(request), None, like, collection, k)


@router.post(
    "/texts/search",
    response_model=schemas.TextSearchResponse,
    summary="Upload → text",
    dependencies=FORM_ONLY,
)
def texts_search_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="The query image.")],
    collection: Annotated[str, Form()],
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
) -> schemas.TextSearchResponse:
    """Rank a stored text collection against an uploaded image."""
    return _rank_texts(services(request), image, None, collection, k)


# -- zero-shot classification ---------------------------------------------------------------


def _labels(values: list[str]) -> list[str]:
    labels = list(dict.fromkeys(p.strip() for v in values for p in v.split(",") if p.strip()))
    if len(labels) < 2:
        raise ClipsearchError("zero-shot classification needs at least two labels")
    if len(labels) > MAX_LABELS:
        raise ClipsearchError(f"at most {MAX_LABELS} labels")
    return labels


def _classify(
    svc: Services,
    upload: UploadFile | None,
    like: int | None,
    labels: list[str],
    templates: str,
    top: int,
) -> schemas.ClassifyResponse:
    start = time.perf_counter()
    chosen = _labels(labels)
    classifier = svc.served.classifier(chosen, templates)
    image = _images(svc, [upload])[0] if upload is not None else None
    vector = svc.served.image_vector(image, like)
    name = upload.filename if upload is not None else str(like)
    prediction = classifier.predict([name or "image"], vector[None, :], top)[0]
    return schemas.ClassifyResponse(
        label=prediction.label,
        probability=prediction.probability,
        top=[schemas.LabelProbability(label=lb, probability=p) for lb, p in prediction.top],
        took_ms=round((time.perf_counter() - start) * 1000, 3),
    )


Labels = Annotated[list[str], Query(description="Labels, repeated or comma-separated.")]
Templates = Annotated[str, Query(description="Prompt template set: default, simple or photo.")]
Top = Annotated[int, Query(ge=1, le=100, description="How many labels to return.")]


@router.get("/classify", response_model=schemas.ClassifyResponse, summary="Zero-shot, by id")
def classify(
    request: Request,
    like: Annotated[int, Query(ge=0, le=MAX_ID, description="Id of the indexed image.")],
    labels: Labels,
    templates: Templates = "simple",
    top: Top = 3,
) -> schemas.ClassifyResponse:
    """Zero-shot classify an indexed image among the given labels."""
    return _classify(services(request), None, like, labels, templates, top)


@router.post(
    "/classify",
    response_model=schemas.ClassifyResponse,
    summary="Zero-shot, upload",
    dependencies=FORM_ONLY,
)
def classify_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="The image to classify.")],
    labels: Annotated[list[str], Form(description="Labels, repeated or comma-separated.")],
    templates: Annotated[str, Form()] = "simple",
    top: Annotated[int, Form(ge=1, le=100)] = 3,
) -> schemas.ClassifyResponse:
    """Zero-shot classify an uploaded image among the given labels."""
    return _classify(services(request), image, None, labels, templates, top)


# -- duplicates ------------------------------------------------------------------------------


@router.get(
    "/duplicates", response_model=schemas.DuplicatesResponse, summary="Groups of duplicate images"
)
def duplicates(
    request: Request,
    threshold: Annotated[
        float,
        Query(gt=0, le=1, description="Cosine similarity from which two images are one photo."),
    ] = DEFAULT_DUPLICATE_THRESHOLD,
    where: Where = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DUPLICATE_GROUPS)] = 100,
) -> schemas.DuplicatesResponse:
    """Images that are the same photo (byte-identical, re-encoded, resized, slightly cropped,
    rotated), grouped around a suggested keeper. Nothing is deleted or moved."""
    start = time.perf_counter()
    snapshot, groups = services(request).served.duplicates(threshold, where or None)
    return schemas.DuplicatesResponse(
        snapshot=snapshot,
        took_ms=round((time.perf_counter() - start) * 1000, 3),
        threshold=threshold,
        where=where,
        groups_total=len(groups),
        groups=[_duplicate_group(g) for g in groups[:limit]],
    )


def _duplicate_group(group: DuplicateGroup) -> schemas.DuplicateGroup:
    images = []
    for position, image in enumerate(group.images):
        thumbnail_url, image_url = _urls(image.id, vars(image))
        internal = ("mtime_ns", "taken_at", "content_hash")
        fields = {k: v for k, v in vars(image).items() if k not in internal}
        images.append(
            schemas.DuplicateImage(
                **fields, keeper=position == 0, thumbnail_url=thumbnail_url, image_url=image_url
            )
        )
    return schemas.DuplicateGroup(images=images, reclaimable_bytes=group.reclaimable_bytes)


# -- facts --------------------------------------------------------------------------------


@router.get("/info", response_model=schemas.IndexInfo, summary="Index facts")
def info(request: Request) -> schemas.IndexInfo:
    """Model identity, counts, vector-index kind and recall, catalog columns, limits."""
    svc = services(request)
    snapshot = svc.served.current()
    manifest = snapshot.manifest
    config = svc.config
    return schemas.IndexInfo(
        index=str(svc.served.index_dir),
        snapshot=manifest.snapshot,
        updated_at=manifest.updated_at,
        model=manifest.model.as_dict(),
        counts=manifest.counts,
        vector_index=schemas.VectorIndex(**asdict(snapshot.vector_info)),
        columns=svc.served.columns(),
        limits=schemas.Limits(
            max_upload_bytes=config.max_upload_bytes,
            max_pixels=config.max_pixels,
            max_k=MAX_K,
            thumbnail_sizes=list(THUMBNAIL_SIZES),
        ),
    )


@router.get("", response_model=schemas.ApiIndex, summary="The endpoints")
def endpoints(request: Request) -> schemas.ApiIndex:
    """Every endpoint of the API with its summary; the full schema is at /openapi.json."""
    paths = request.app.openapi()["paths"]  # built once, kept by FastAPI
    listed = [
        schemas.Endpoint(method=method.upper(), path=path, summary=operation.get("summary", ""))
        for path, operations in paths.items()
        for method, operation in operations.items()
    ]
    return schemas.ApiIndex(endpoints=listed, docs="/docs", openapi="/openapi.json")


@router.get("/health", response_model=schemas.Health, summary="Is this server up")
def health(request: Request) -> schemas.Health:
    """Cheap: which index this server answers for (``clipsearch query`` checks it)."""
    served = services(request).served
    manifest = served.current().manifest
    return schemas.Health(
        status="ok",
        index=str(served.index_dir),
        snapshot=manifest.snapshot,
        pid=os.getpid(),
        model=manifest.model_spec,
    )
