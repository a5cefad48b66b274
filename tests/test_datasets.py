"""Exporting a Parquet image dataset to files: a written Parquet and the real CIFAR-10."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.ingest.datasets import export_images, safe_folder_name

from .conftest import run_cli


def _encoded(color: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "set.parquet"
    table = pa.table(
        {
            "image": [_encoded("red", "PNG"), _encoded("blue", "JPEG"), _encoded("red", "PNG")],
            "label_name": ["red thing", "blue/../x", "red thing"],
        }
    )
    pq.write_table(table, path)
    return path


def test_export_by_label(dataset, tmp_path):
    summary = export_images(dataset, tmp_path / "out", by_label=True)
    assert summary.written == 3 and summary.labels == {"red thing": 2, "blue/../x": 1}
    assert sorted(
        p.relative_to(tmp_path / "out").as_posix()
        for p in (tmp_path / "out").rglob("*.*")
        if p.is_file()
    ) == [
        "blue_.._x/1.jpg",
        "red thing/0.png",
        "red thing/2.png",
    ]
    assert Image.open(tmp_path / "out" / "red thing" / "0.png").getpixel((0, 0)) == (255, 0, 0)


def test_export_flat_with_limit(dataset, tmp_path):
    summary = export_images(dataset, tmp_path / "flat", limit=2)
    assert summary.written == 2
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["0.png", "1.jpg"]


def test_folder_names_cannot_escape():
    assert safe_folder_name("../../etc") == "_.._etc"
    assert safe_folder_name("pick-up truck") == "pick-up truck"
    assert safe_folder_name("  ") == "unlabelled"


def test_missing_column_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(ClipsearchError, match="no column 'pixels'"):
        export_images(dataset, tmp_path / "x", image_column="pixels")
    with pytest.raises(ClipsearchError, match="cannot read Parquet"):
        export_images(tmp_path / "missing.parquet", tmp_path / "x")


def test_cli_exports_real_cifar10(shared_data, tmp_path):
    result = run_cli(
        "datasets",
        "export",
        str(shared_data / "cifar10" / "test.parquet"),
        str(tmp_path / "c"),
        "--limit",
        "50",
        "--by-label",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 50 images in 10 label folders to {tmp_path / 'c'}"
    dogs = sorted((tmp_path / "c" / "dog").iterdir())
    assert len(dogs) == 5 and Image.open(dogs[0]).size == (32, 32)
