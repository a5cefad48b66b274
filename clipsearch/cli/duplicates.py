"""``clipsearch duplicates``: groups of images that are the same photo. Nothing is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipsearch.cli.options import IndexOpt, JsonOpt
from clipsearch.errors import ClipsearchError
from clipsearch.settings import DEFAULT_DUPLICATE_THRESHOLD, resolve_index_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from clipsearch.cli.progress import PlainProgress, RichProgress
    from clipsearch.query.duplicates import DuplicateGroup, DuplicateImage


def duplicates(
    index: IndexOpt = None,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Cosine similarity of two images' embeddings from which their fingerprints "
            "(8x8 grey pictures kept in the index) are compared; both must agree, and "
            "byte-identical files always count. The default is calibrated on re-encoded, "
            "resized, cropped and rotated copies (benchmarks/RESULTS.md). Lower finds more "
            "heavily edited copies, at a price: below about 0.8, different photos of plain, "
            "alike scenes (a ship and a plane on an empty sky) can be grouped too; look at "
            "the groups (--html) before acting on them.",
        ),
    ] = DEFAULT_DUPLICATE_THRESHOLD,
    where: Annotated[
        str | None,
        typer.Option(
            help="Only compare images matching this DuckDB SQL predicate over catalog "
            "columns, e.g. \"path LIKE '/photos/2024/%'\".",
            show_default=False,
        ),
    ] = None,
    paths: Annotated[
        bool,
        typer.Option(
            "--paths",
            help="Print only the copies each keeper makes redundant, one path per line, for "
            "your own pipeline (clipsearch never deletes or moves anything).",
        ),
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write a self-contained HTML page of the groups, side by side.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find groups of images that are the same photo: byte-identical files, re-encodes,
    resizes, small crops, other formats, copies stored rotated.

    Each group names a suggested keeper (the most pixels, then the oldest); every other image
    in it is the same photo as the keeper: byte-identical, or embeddings within --threshold and
    fingerprints alike. Found from what the index holds: nothing is embedded again.
    """
    if as_json and paths:
        raise ClipsearchError("--json and --paths are alternatives: give one")
    from clipsearch.cli.progress import make_progress
    from clipsearch.query.search import Index

    opened = Index.open(resolve_index_dir(index))
    bar = None if as_json or paths else make_progress("duplicates", what="images to compare")
    groups = opened.duplicates(threshold, where, _reporter(bar) if bar else None)
    if bar:
        bar.close()
    if html is not None:
        from clipsearch.query.pages import write_duplicates_page

        write_duplicates_page(html, groups, threshold)
    if as_json:
        payload = {"threshold": threshold, "groups": [g.as_dict() for g in groups]}
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    elif paths:
        for group in groups:
            for image in group.others:
                print(image.path)
    else:
        _print_groups(groups, threshold)


def _reporter(bar: PlainProgress | RichProgress) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback driving ``bar``."""
    reported: list[int] = []  # empty until the first call starts the bar

    def report(done: int, total: int) -> None:
        if not reported:
            bar.start(total)
            reported.append(0)
        bar.advance(done - reported[0])
        reported[0] = done

    return report


def _print_groups(groups: list[DuplicateGroup], threshold: float) -> None:
    if not groups:
        print(f"no duplicates found (threshold {threshold:g})")
        return
    redundant = sum(len(g.others) for g in groups)
    reclaimable = sum(g.reclaimable_bytes for g in groups)
    print(
        f"{_count(len(groups), 'group')} of duplicates, {_count(redundant, 'redundant copy')}, "
        f"{_readable_size(reclaimable)} reclaimable (threshold {threshold:g})"
    )
    for number, group in enumerate(groups, 1):
        print(f"\ngroup {number}: {len(group.images)} images")
        for position, image in enumerate(group.images):
            mark = "keep" if position == 0 else "    "
            alike = "identical" if image.identical else f"{image.similarity:.3f}"
            alike = "" if position == 0 else alike
            print(f"  {mark}  {alike:>9}  {_describe(image)}  {image.path}")


def _describe(image: DuplicateImage) -> str:
    return f"{image.dimensions:>11}  {(image.format or '?'):<5} {_readable_size(image.size):>8}"


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number:,} {noun if number == 1 else plural}"


def _readable_size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 100_000 else f"{count / 1e3:,.1f} kB"
