"""Turn a Parquet image dataset (such as ../shared/data/cifar10) into image files on disk.

Real folders of images are what indexing and scoring a labelled folder work on; datasets
usually come as Parquet with the encoded image bytes in a column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clipsearch.errors import ClipsearchError

_MAGIC = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"BM": ".bmp"}
_UNSAFE = re.compile(r"[/\\\x00]+")  # what would break out of, or end, a folder name


@dataclass
class ExportSummary:
    written: int
    labels: dict[str, int]  # images per label folder ("" when not by label)
    out_dir: str


def extension_of(data: bytes) -> str:
    for magic, extension in _MAGIC.items():
        if data.startswith(magic):
            return extension
    if data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def safe_folder_name(label: str) -> str:
    """A label as a folder name, read back as the label by ``zeroshot.label_of_folder`` (for
    training and scoring): no separators, no leading dots."""
    name = _UNSAFE.sub("_", label.strip()).lstrip(".")
    return name or "unlabelled"


def export_images(
    parquet: Path,
    out_dir: Path,
    limit: int | None = None,
    by_label: bool = False,
    image_column: str = "image",
    label_column: str = "label_name",
) -> ExportSummary:
    """Write each row's image bytes to ``out_dir/[<label>/]<row>.<ext>``, in row order."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(parquet)
    except (OSError, ValueError) as exc:
        raise ClipsearchError(f"cannot read Parquet file {parquet}: {exc}") from None
    columns = [image_column] + ([label_column] if by_label else [])
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ClipsearchError(
            f"{parquet} has no column {missing[0]!r} (columns: {', '.join(schema.names)})"
        )
    table = pq.read_table(parquet, columns=columns)
    if limit is not None:
        table = table.slice(0, limit)
    images = table.column(image_column).to_pylist()
    labels = table.column(label_column).to_pylist() if by_label else [""] * len(images)
    counts: dict[str, int] = {}
    width = len(str(max(len(images) - 1, 0)))
    for row, (data, label) in enumerate(zip(images, labels, strict=True)):
        if not isinstance(data, bytes):
            raise ClipsearchError(f"column {image_column!r} must hold image bytes (row {row})")
        folder = out_dir / safe_folder_name(str(label)) if by_label else out_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{row:0{width}d}{extension_of(data)}").write_bytes(data)
        counts[str(label)] = counts.get(str(label), 0) + 1
    return ExportSummary(len(images), counts, str(out_dir))
