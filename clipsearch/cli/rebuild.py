"""``clipsearch rebuild``: a new vector index (and a compacted catalog) without re-embedding."""

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


def rebuild(
    index: IndexOpt = None,
    max_memory: MaxMemoryOpt = None,
    flat_threshold: FlatThresholdOpt = 100_000,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact/--no-compact",
            help="Merge small catalog parts (many incremental runs leave many) into parts of "
            "up to 100,000 rows.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Build an index's vector index again from its stored embeddings, as a new snapshot.

    For a new memory budget (--max-memory picks the kind: exact, IVF, IVF-SQ8 or IVF-PQ) or
    after many incremental runs. Nothing is re-embedded and no image changes id; the build
    reads the catalog in chunks, so it needs memory for the vector index, not for every
    embedding. Queries keep answering from the snapshot before until it commits.
    """
    from clipsearch.store.repair import rebuild_index

    report = rebuild_index(
        resolve_index_dir(index), vector_index_config(max_memory, flat_threshold), compact
    )
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.line())
