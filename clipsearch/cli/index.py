"""``clipsearch index``: embed the images under some folders into an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import (
    CacheDirOpt,
    DeviceOpt,
    EngineOpt,
    FlatThresholdOpt,
    IndexOpt,
    JsonOpt,
    MaxMemoryOpt,
    ModelOpt,
    PrecisionOpt,
    vector_index_config,
)
from clipsearch.errors import ClipsearchError
from clipsearch.settings import DEFAULT_MAX_PIXELS, let_decoders_share_cores, resolve_index_dir

_SHOWN_ERRORS = 10


def index(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files or folders to index (walked recursively).")
    ],
    index: IndexOpt = None,
    model: ModelOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 64,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Decoding processes (0: decode in this process). Default: one per CPU, "
            "at least 4, at most 8.",
            show_default=False,
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Glob of files or folders to skip, e.g. '*.png' or 'thumbs'. Repeatable.",
            show_default=False,
        ),
    ] = None,
    include_hidden: Annotated[
        bool, typer.Option(help="Also index dot-files and dot-folders.")
    ] = False,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Follow symbolic links (loops are detected).")
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(min=1, help="Refuse images with more pixels than this (decompression bombs)."),
    ] = DEFAULT_MAX_PIXELS,
    max_memory: MaxMemoryOpt = None,
    flat_threshold: FlatThresholdOpt = 100_000,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            min=1, help="Save embedded images to disk every N images: the most a crash can redo."
        ),
    ] = 512,
    ocr: Annotated[
        bool | None,
        typer.Option(
            "--ocr/--no-ocr",
            help="Read the words written in each photo too (OCR; the ocr extra: pip install "
            "'clipsearch[ocr]'), also in photos indexed before, without embedding them "
            "again. The index remembers it: later runs keep reading until --no-ocr "
            "(text read so far is kept). Default: as the index was told last.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    precision: PrecisionOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index the images under PATHs (re-running embeds only what changed).

    New files are embedded, changed ones re-embedded, moved ones keep their embedding,
    deleted ones are removed. An interrupted run resumes where it stopped.

    Several processes: torchrun --nproc-per-node N -m clipsearch index PATH... (rank 0 commits).
    """
    let_decoders_share_cores()  # before the imports below load torch and faiss
    from clipsearch.base.process_group import main_process
    from clipsearch.cli.progress import make_progress
    from clipsearch.ingest.indexer import IndexOptions, default_workers, update_index
    from clipsearch.ingest.scan import ScanOptions

    options = IndexOptions(
        scan=ScanOptions(tuple(exclude or ()), include_hidden, follow_symlinks),
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        max_pixels=max_pixels,
        part_rows=checkpoint_every,
        device=device,
        cache_dir=str(cache_dir) if cache_dir else None,
        engine=engine,
        precision=precision,
        vectors=vector_index_config(max_memory, flat_threshold),
        read_text=ocr,
    )
    index_dir = resolve_index_dir(index)
    progress = make_progress("embedding") if main_process() else None
    try:
        summary = update_index(paths, index_dir, model, options, progress)
    except KeyboardInterrupt:
        raise ClipsearchError(
            "interrupted: images embedded so far are kept; run the same command again to finish",
            exit_code=130,
        ) from None
    finally:
        if progress:
            progress.close()
    if summary is None:  # a torchrun rank other than 0: rank 0 reports
        return
    errors = _error_list(index_dir)
    if as_json:
        print(json.dumps({**summary.as_dict(), "error_files": errors}, indent=2, default=str))
        return
    print(summary.line())
    _print_errors(errors, index_dir)


def _error_list(index_dir: Path) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    from clipsearch.store.manifest import read_manifest
    from clipsearch.store.storage import snapshot_path

    manifest = read_manifest(index_dir)
    if manifest is None or not manifest.errors:
        return []
    # Retired by another writer's commit since this run's: it is then in retired/.
    table = pq.read_table(snapshot_path(index_dir, manifest.errors), columns=["path", "reason"])
    return table.to_pylist()


def _print_errors(errors: list[dict[str, str]], index_dir: Path) -> None:
    if not errors:
        return
    print(f"{len(errors):,} file{'s' if len(errors) != 1 else ''} could not be read:")
    for row in errors[:_SHOWN_ERRORS]:
        print(f"  {row['path']}: {row['reason']}")
    if len(errors) > _SHOWN_ERRORS:
        print(f"  ... and {len(errors) - _SHOWN_ERRORS:,} more (clipsearch index --json lists all)")
