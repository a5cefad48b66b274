"""``clipsearch serve``: a JSON API and a web page over one index, with the model kept loaded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import (
    CacheDirOpt,
    DeviceOpt,
    EngineOpt,
    IndexOpt,
    ModelOpt,
    TokenOpt,
    parse_size,
)
from clipsearch.errors import ClipsearchError
from clipsearch.server.config import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_PIXELS, DEFAULT_PORT
from clipsearch.settings import resolve_index_dir


def serve(
    index: IndexOpt = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but loopback lets other machines reach the "
            "server (they still need its token).",
        ),
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port (0: any free port).")
    ] = DEFAULT_PORT,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    cache_dir: CacheDirOpt = None,
    max_upload: Annotated[
        str, typer.Option(help="Largest uploaded query image, e.g. 20M.")
    ] = "20M",
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse uploaded images with more pixels than this.")
    ] = DEFAULT_MAX_UPLOAD_PIXELS,
    thumbnail_cache: Annotated[
        str, typer.Option(help="Disk space for cached thumbnails (INDEX/thumbnails), e.g. 256M.")
    ] = "256M",
    texts: Annotated[
        list[Path] | None,
        typer.Option(
            "--texts",
            help="A text collection directory clients may name for image → text (repeatable); "
            "collections next to the index are offered anyway.",
            show_default=False,
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Let pages from this origin call the API (repeatable). Default: none.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host name clients use to reach a non-loopback server (repeatable).",
            show_default=False,
        ),
    ] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option(help="Serve indexed files that are symbolic links (index --follow-symlinks)."),
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="CPU threads per query (concurrent queries already run side by side)."
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    token: TokenOpt = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Answer every request without a token: anyone who can reach the port "
            "searches the index and reads its photos (every account on this machine, and "
            "the network beyond loopback).",
        ),
    ] = False,
    idle_exit: Annotated[
        float,
        typer.Option(
            min=0,
            help="Exit after this many seconds without a request (0: never). Such a server "
            "is the only one of its kind per index: a second one exits at once.",
        ),
    ] = 0,
) -> None:
    """Serve the index over HTTP: the search page at /, the JSON API at /api (docs at /docs).

    Only the holder of the server's token gets in: it prints a link for the browser
    (/?token=...), scripts send 'Authorization: Bearer TOKEN', and `clipsearch query` reads
    it from INDEX/server.json (the owner's alone). A new random token each start, unless
    --token or $CLIPSEARCH_TOKEN gives one. The model stays loaded, so a query answers in
    milliseconds; `clipsearch query` uses the server when one runs for the same index. New
    snapshots written by `clipsearch index` are picked up without a restart.
    """
    from clipsearch.server.auth import login_url, new_token
    from clipsearch.server.config import ServerConfig, allowed_hosts_for, is_loopback
    from clipsearch.server.runner import serve as run_server

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ClipsearchError(
            f"clipsearch serve needs the 'serve' extra ({exc.name} is missing): "
            "pip install 'clipsearch[serve]'"
        ) from None
    if no_auth:
        who = (
            "every account on this machine"
            if is_loopback(host)
            else f"anyone who can reach {host} over the network"
        )
        print(
            f"warning: --no-auth: {who} can search the index and read its photos",
            file=sys.stderr,
        )
    config = ServerConfig(
        index_dir=resolve_index_dir(index),
        model=model,
        device=device,
        cache_dir=str(cache_dir) if cache_dir else None,
        engine=engine,
        max_upload_bytes=parse_size(max_upload, "--max-upload"),
        max_pixels=max_pixels,
        thumbnail_cache_bytes=parse_size(thumbnail_cache, "--thumbnail-cache"),
        follow_symlinks=follow_symlinks,
        cors_origins=tuple(cors_origin or ()),
        allowed_hosts=allowed_hosts_for(host, tuple(allowed_host or ())),
        text_collections=tuple(p.expanduser().absolute() for p in texts or ()),
        threads=threads,
        idle_exit=idle_exit,
        token=token or new_token(),
        require_token=not no_auth,
    )

    def announce(url: str) -> None:
        link = login_url(url, config.token) if config.require_token else f"{url}/"
        print(f"clipsearch: serving {config.index_dir} at {link} (Ctrl-C stops)", file=sys.stderr)

    run_server(config, host, port, log_level=log_level, announce=announce)
