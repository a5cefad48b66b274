"""``clipsearch query``: text → image, image → image, both, and image → text."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from clipsearch.cli.options import (
    CacheDirOpt,
    DeviceOpt,
    EngineOpt,
    IndexOpt,
    JsonOpt,
    ModelOpt,
    TokenOpt,
)
from clipsearch.errors import ClipsearchError
from clipsearch.settings import DEFAULT_WARM_SECONDS, INDEX_ENV, WARM_ENV, resolve_index_dir


def query(
    text: Annotated[
        list[str] | None,
        typer.Argument(
            help="Query terms, each [+|-][WEIGHT:]TEXT, e.g. 'a dog' '2:beach' '-people'.",
            show_default=False,
        ),
    ] = None,
    negative: Annotated[
        list[str] | None,
        typer.Option(
            "--not",
            help="Push images like this text down (same as a '-TEXT' term; "
            "raw '-TEXT' terms need `--` before them).",
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            help="Query image (repeatable); with TEXT the two are combined.",
            show_default=False,
        ),
    ] = None,
    like: Annotated[
        list[int] | None,
        typer.Option(
            "--like",
            help="An indexed image's id (the 'id' of --json output; repeatable): more like "
            "it, from its stored embedding; with TEXT or --image the queries are combined.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Number of results (at most).")] = 10,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            min=-1,
            max=1,
            help="Drop hits less similar (cosine) to the query than this: fewer than -k, or "
            "none, when few images are relevant.",
            show_default=False,
        ),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            help='DuckDB SQL predicate over catalog columns, e.g. "width > 1000".',
            show_default=False,
        ),
    ] = None,
    texts: Annotated[
        str | None,
        typer.Option(
            "--texts",
            help="Rank the lines of FILE, or a stored text collection NAME, "
            "against --image (image → text).",
            show_default=False,
        ),
    ] = None,
    words: Annotated[
        bool,
        typer.Option(
            "--words",
            help="Find photos by the words written in them alone (an index made with "
            "--ocr), as a query in double quotes does for a phrase. Without it a text "
            "query on such an index ranks by meaning and by those words together.",
        ),
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Extra catalog columns in the output, comma-separated (e.g. width,height).",
            show_default=False,
        ),
    ] = None,
    paths: Annotated[bool, typer.Option("--paths", help="Print one path per line.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write a self-contained HTML page of the hits with thumbnails.",
            show_default=False,
        ),
    ] = None,
    index: IndexOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
    server: Annotated[
        str | None,
        typer.Option(
            help="URL of a running `clipsearch serve` to ask (default: the one serving the "
            "index, if any). Unreachable: search locally.",
            show_default=False,
        ),
    ] = None,
    token: TokenOpt = None,
    local: Annotated[
        bool, typer.Option("--local", help="Search in this process even if a server runs.")
    ] = False,
    warm_for: Annotated[
        float,
        typer.Option(
            "--warm-for",
            envvar=WARM_ENV,
            min=0,
            help="After a search in this process, leave a background server for the index "
            "that exits after this many idle seconds, so the next query answers at once "
            "(0: off; needs the serve extra).",
        ),
    ] = DEFAULT_WARM_SECONDS,
) -> None:
    """Search an index by text, by image, or both; or rank texts against an image.

    When `clipsearch serve` runs for the index, it answers (no model load here).
    """
    if as_json and paths:
        raise ClipsearchError("--json and --paths are alternatives: give one")
    if texts is not None:
        _image_to_text(text, image, texts, k, index, model, device, cache_dir, engine, as_json)
        return
    wanted = [c.strip() for c in (columns or "").split(",") if c.strip()]
    terms = [*(text or []), *(f"-{t}" for t in negative or [])]
    rows = None
    if not local:
        search = _Search(terms, image or [], like or [], k, where, wanted, min_score, words)
        rows = _via_server(server, token, index, model, search)
    searched_here = rows is None
    if rows is None:
        from clipsearch.query.search import Index

        opened = Index.open(index, model=model, device=device, cache_dir=cache_dir, engine=engine)
        hits = opened.search(
            terms or None,
            image=image or None,
            like=like or (),
            k=k,
            where=where,
            columns=wanted,
            min_score=min_score,
            words_only=words,
        )
        rows = [hit.as_dict(rank) for rank, hit in enumerate(hits, 1)]
    if html is not None:
        from clipsearch.query.pages import write_hits_page

        title = " ".join([*(text or []), *(str(p) for p in image or []), *map(str, like or [])])
        write_hits_page(html, f"clipsearch: {title}", rows)
    _print_hits(rows, wanted, as_json, paths)
    if searched_here and warm_for > 0 and model is None and server is None:
        from clipsearch.cli.background import start_background_server

        start_background_server(resolve_index_dir(index), warm_for, engine, device)


@dataclass(frozen=True)
class _Search:
    """What to ask a server for, as the local search would be asked."""

    terms: list[str]
    images: list[Path]
    like: list[int]
    k: int
    where: str | None
    columns: list[str]
    min_score: float | None
    words_only: bool


def _via_server(
    url: str | None,
    token: str | None,
    index: str | None,
    model: str | None,
    search: _Search,
) -> list[dict[str, Any]] | None:
    """Rows from a running server for this index, or None to search locally.

    Anything a server cannot answer as the local search would (bad input, another model,
    a --where it refuses, no server at all) is left to the local search.
    """
    from clipsearch.server.client import ServerUnavailable, find_server

    if search.k < 1 or not (search.terms or search.images or search.like):
        return None
    index_given = index is not None or bool(os.environ.get(INDEX_ENV))
    client = find_server(resolve_index_dir(index), url, index_given, token)
    if client is None:
        return None
    if model is not None:
        from clipsearch.model.spec import parse_spec

        if str(parse_spec(model)) != client.health.get("model"):
            return None
    try:
        return client.search(
            search.terms,
            search.images,
            search.k,
            search.where,
            search.columns,
            search.min_score,
            search.like,
            search.words_only,
        )
    except ServerUnavailable:
        return None


def _print_hits(rows: list[dict[str, Any]], columns: list[str], as_json: bool, paths: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    elif not rows:  # silence would read as a crash; on stderr, so that a pipe gets nothing
        print("no results", file=sys.stderr)
    elif paths:
        for row in rows:
            print(row["path"])
    else:
        for row in rows:
            extra = "".join(f"  {row[c]}" for c in columns)
            print(f"{row['rank']:>4}  {row['score']:.4f}  {row['path']}{extra}")
            if row.get("text_marks"):  # the words found, marked, under the hit
                from clipsearch.query.words import marked

                print(f"        {marked(row['text'], row['text_marks'])}")


def _image_to_text(
    text: list[str] | None,
    image: list[Path] | None,
    texts: str,
    k: int,
    index: str | None,
    model: str | None,
    device: str,
    cache_dir: Path | None,
    engine: str,
    as_json: bool,
) -> None:
    from clipsearch.cli.texts import print_text_hits
    from clipsearch.texts import rank_image_against_texts

    if text or not image or len(image) != 1:
        raise ClipsearchError("--texts ranks texts against one --image (and takes no TEXT)")
    if model is None and Path(texts).is_file():
        from clipsearch.store.manifest import indexed_model_spec

        model = indexed_model_spec(resolve_index_dir(index))  # FILE: the index's model
    rows = rank_image_against_texts(image[0], texts, model, k, device, cache_dir, engine)
    print_text_hits(rows, as_json)
