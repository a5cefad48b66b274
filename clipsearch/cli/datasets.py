"""``clipsearch datasets export``: a Parquet image dataset as real image files."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import JsonOpt

datasets_app = typer.Typer(
    help="Work with image datasets stored as Parquet (e.g. ../shared/data/cifar10).",
    no_args_is_help=True,
)


@datasets_app.command("export")
def export(
    parquet: Annotated[Path, typer.Argument(help="Parquet file with an image-bytes column.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the images into.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N rows.", show_default=False)
    ] = None,
    by_label: Annotated[
        bool, typer.Option(help="One subfolder per label: OUT_DIR/<label>/<row>.png.")
    ] = False,
    image_column: Annotated[str, typer.Option(help="Column with the encoded image.")] = "image",
    label_column: Annotated[str, typer.Option(help="Column naming each row's label.")] = (
        "label_name"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Write the images of a Parquet dataset as files, e.g. to index or --eval them."""
    from clipsearch.ingest.datasets import export_images

    summary = export_images(parquet, out_dir, limit, by_label, image_column, label_column)
    if as_json:
        print(json.dumps(asdict(summary), indent=2, ensure_ascii=False))
        return
    folders = f" in {len(summary.labels)} label folders" if by_label else ""
    print(f"wrote {summary.written:,} images{folders} to {summary.out_dir}")
