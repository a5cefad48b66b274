"""``clipsearch repair``: check an index's files, mend what can be mended without re-embedding."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from clipsearch.cli.options import (
    FlatThresholdOpt,
    IndexOpt,
    JsonOpt,
    MaxMemoryOpt,
    vector_index_config,
)
from clipsearch.settings import resolve_index_dir


def repair(
    index: IndexOpt = None,
    rebuild_vectors: Annotated[
        bool,
        typer.Option(
            "--rebuild-vectors",
            help="Build the vector index again from the catalog even if it is intact "
            "(e.g. with a new --max-memory).",
        ),
    ] = False,
    max_memory: MaxMemoryOpt = None,
    flat_threshold: FlatThresholdOpt = 100_000,
    as_json: JsonOpt = False,
) -> None:
    """Check every file of an index; drop damaged catalog parts, rebuild the vector index.

    Images of a dropped part are no longer indexed: the next `clipsearch index` of their
    folders embeds them again. Nothing is re-embedded here. Exits 1 when something was
    damaged (and mended), 0 when the index was intact.
    """
    from clipsearch.store.repair import repair_index

    report = repair_index(
        resolve_index_dir(index), rebuild_vectors, vector_index_config(max_memory, flat_threshold)
    )
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for problem in report.damaged:
            print(f"damaged: {problem}")
        print(report.line())
    if report.damaged:
        raise typer.Exit(1)
