"""``clipsearch demo``: index the bundled sample photos, search and classify them, score it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import JsonOpt

HINT = (
    'Your own photos: clipsearch index ~/Pictures, then clipsearch query "a dog on a beach" '
    "(with the default model, ViT-B-32, downloaded once: the bundled one learned only the "
    "names of CIFAR-10's 10 classes)."
)


def demo(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="Folder for the sample photos, their index and results.html; a folder an "
            "earlier demo wrote is emptied first, any other non-empty folder is refused.",
        ),
    ] = Path("clipsearch-demo"),
    k: Annotated[int, typer.Option("-k", min=1, max=30, help="Hits per query (precision@k).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Index 300 bundled CIFAR-10 test photos with the bundled model, search them by words
    and by a photo, classify them zero-shot, and score every answer by the photos' true labels.

    Offline, in seconds, with no other data: the quickest way to see clipsearch work.
    """
    from clipsearch.cli.progress import make_progress
    from clipsearch.demo import run_demo

    progress = None if as_json else make_progress("embedding")
    try:
        report = run_demo(directory, k, progress)
    finally:
        if progress:
            progress.close()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    print(
        f"indexed {report.photos} CIFAR-10 test photos (never seen in training) with "
        f"{report.model} in {report.index_seconds:.1f} s → {report.directory}/index"
    )
    for query in report.queries:
        shown = f'"{query.query}"' if query.kind == "text" else f"photos like {_near(query.query)}"
        print(f"\n{shown}  precision@{len(query.hits)} {query.precision:.2f}")
        for rank, hit in enumerate(query.hits[:3], 1):
            mark = "" if hit.label == query.target else f"   (not {query.target})"
            print(f"  {rank}. {hit.score:.3f}  {hit.label:<10} {_near(hit.path)}{mark}")
        rest = [h.label if h.label == query.target else h.label.upper() for h in query.hits[3:]]
        if rest:
            print(f"  then: {' '.join(rest)}")
    print(
        f"\nzero-shot accuracy {report.zero_shot_accuracy:.2f} on the {report.photos} photos "
        f"({len(report.labels)} classes, chance {1 / len(report.labels):.2f})"
    )
    print(f"results page: {report.page}   ({report.seconds:.1f} s in all)")
    print(HINT)


def _near(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (shorter lines)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
