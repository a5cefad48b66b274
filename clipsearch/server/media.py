"""Bytes for browsers: thumbnails, original files (by id only) and the web page.

URLs carry the content version (``?v=``, from the catalog): a response for the current
version may be cached for good (``immutable``); any other request must revalidate with
its ETag, so a file changed in place is never shown stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from clipsearch.server import schemas
from clipsearch.server.api import ImageId, services
from clipsearch.server.config import THUMBNAIL_SIZES
from clipsearch.server.errors import ApiError
from clipsearch.server.files import FILE_COLUMNS, open_indexed, read_chunks, version_of

STATIC_DIR = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_FOREVER = "private, max-age=31536000, immutable"
_REVALIDATE = "private, no-cache"
# Typed as the routes' responses= parameter is.
_errors: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Error} for code in (400, 403, 404, 422)
}

router = APIRouter()


def _cache_headers(etag: str, requested: str | None, current: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"', "Cache-Control": _FOREVER if requested == current else _REVALIDATE}


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match", "")
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return etag in tags or "*" in tags


def _file_row(request: Request, image_id: int) -> dict:
    return services(request).served.image_row(image_id, ["id", *FILE_COLUMNS])


@router.get(
    "/api/images/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors},
    summary="Thumbnail of an indexed image",
)
def thumbnail(
    request: Request,
    image_id: ImageId,
    size: Annotated[int, Query(description=f"Longest side: one of {THUMBNAIL_SIZES}.")] = 256,
    v: Annotated[str | None, Query(description="Content version from a hit's URL.")] = None,
) -> Response:
    """A JPEG at most ``size`` pixels on its longer side, made once and cached on disk."""
    if size not in THUMBNAIL_SIZES:
        raise ApiError(400, f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")
    row = _file_row(request, image_id)
    version = version_of(row)
    headers = _cache_headers(f"{version}-{size}", v, version)
    if _not_modified(request, f"{version}-{size}"):
        return Response(status_code=304, headers=headers)
    data, _ = services(request).thumbnails.get(row, size)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get(
    "/api/images/{image_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/*": {}}}, **_errors},
    summary="The original file of an indexed image",
)
def original(
    request: Request,
    image_id: ImageId,
    v: Annotated[str | None, Query(description="Content version from a hit's URL.")] = None,
) -> Response:
    """The indexed file itself, if it is still the file that was indexed."""
    row = _file_row(request, image_id)
    version = version_of(row)
    headers = _cache_headers(version, v, version)
    if _not_modified(request, version):
        return Response(status_code=304, headers=headers)
    indexed = open_indexed(row, services(request).config.follow_symlinks)
    inline = "attachment" if indexed.media_type == "application/octet-stream" else "inline"
    headers["Content-Disposition"] = f"{inline}; filename*=UTF-8''{quote(indexed.name)}"
    headers["Content-Length"] = str(indexed.size)
    return StreamingResponse(
        read_chunks(indexed.file, indexed.size), media_type=indexed.media_type, headers=headers
    )


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The search page (plain HTML, CSS and JavaScript from ``static/``)."""
    return _page("index.html")


@router.get("/duplicates", include_in_schema=False)
def duplicates_page() -> FileResponse:
    """Groups of duplicate images, side by side (``/api/duplicates``)."""
    return _page("duplicates.html")


def _page(name: str) -> FileResponse:
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=headers)
