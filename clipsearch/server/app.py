"""``create_app(config)``: the FastAPI application over one index."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from clipsearch import __version__
from clipsearch.server import api, media
from clipsearch.server.config import ServerConfig
from clipsearch.server.errors import install_error_handlers
from clipsearch.server.security import BodyLimit, HostCheck, SecurityHeaders, TokenCheck
from clipsearch.server.served_index import ServedIndex
from clipsearch.server.text_collections import TextCollections
from clipsearch.server.thumbnails import ThumbnailCache

DESCRIPTION = """\
Semantic search over one image index with the model it was built with.

Every request carries the server's token: `Authorization: Bearer TOKEN` (scripts), or the
cookie a browser gets from the link `clipsearch serve` prints (`/?token=TOKEN`); without it
the answer is 401. Images are named by their catalog **id** everywhere (`like=ID`,
`/api/images/ID/...`); files are served only if they are the indexed, unchanged files.
Errors are JSON: `{"error": "...", "status": N}`.
"""


def create_app(config: ServerConfig, served: ServedIndex | None = None) -> FastAPI:
    """The application; loads the index and model now (and warms them unless told not to)."""
    served = served or ServedIndex(config)
    if config.warm_up:
        served.warm_up()
    app = FastAPI(
        title="clipsearch",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = api.Services(
        config=config,
        served=served,
        thumbnails=ThumbnailCache(
            config.thumbnails, config.thumbnail_cache_bytes, config.follow_symlinks
        ),
        texts=TextCollections(
            served.index_dir, served.index.manifest.model, config.text_collections
        ),
    )
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(media.router)
    app.mount("/static", StaticFiles(directory=media.STATIC_DIR), name="static")
    # Added innermost first: a request meets HostCheck, then the headers, the token, the limit.
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    if config.require_token:
        preflight = bool(config.cors_origins)
        app.add_middleware(TokenCheck, token=config.token, allow_preflight=preflight)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostCheck, allowed=config.allowed_hosts)
    return app
