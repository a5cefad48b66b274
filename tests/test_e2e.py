"""End to end on real images, offline: train → export → index → query → classify → image→text.

Drives the real CLI as subprocesses in a temporary folder, as a newcomer following the
README's "Offline, further" would. Needs ../shared/data (CIFAR-10); skips with the reason
otherwise. Thresholds are set from measured runs with a safety margin (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Measured on the tiny recipe (see benchmarks/RESULTS.md), minus a safety margin.
MIN_TEXT_PRECISION_AT_20 = 0.50
MIN_IMAGE_PRECISION_AT_20 = 0.20  # mean over 5 dog images (measured 0.33; chance 0.10)
MIN_ACCURACY = 0.50
MIN_TOP3_IMAGE_TO_TEXT = 6  # of 10 images, one per class


def _label(path: str) -> str:
    return Path(path).parent.name


def _cli(*args: str, cwd: Path, timeout: int = 300) -> str:
    result = run_cli(*args, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"clipsearch {' '.join(args)}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory) -> Path:
    """The tiny recipe, trained as the README says (its data paths pointed at shared_data)."""
    work = tmp_path_factory.mktemp("e2e")
    cifar = shared_data / "cifar10"
    _cli(
        "train",
        str(REPO / "train" / "cifar10-tiny.toml"),
        "--out",
        str(work / "model"),
        "--set",
        f"data.path={cifar}/train-*.parquet",
        "--set",
        f"eval.data.path={cifar}/test.parquet",
        cwd=work,
        timeout=1800,
    )
    return work


@pytest.fixture(scope="module")
def photos(trained, shared_data) -> Path:
    root = trained / "photos"
    _cli(
        "datasets",
        "export",
        str(shared_data / "cifar10" / "test.parquet"),
        str(root / "cifar10"),
        "--limit",
        "1000",
        "--by-label",
        cwd=trained,
    )
    dogs = sorted((root / "cifar10" / "dog").iterdir())
    shutil.copy(dogs[0], root / "cifar10" / "dog" / "собака 🐶 first.png")
    broken = root / "broken"
    broken.mkdir()
    (broken / "empty.png").write_bytes(b"")
    (broken / "notes.jpg").write_text("this is text, not a JPEG")
    whole = dogs[1].read_bytes()
    (broken / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return root


@pytest.fixture(scope="module")
def indexed(trained, photos) -> dict:
    report = json.loads(
        _cli("index", str(photos), "--model", str(trained / "model"), "--json", cwd=trained)
    )
    return report


def test_index_reports_broken_files_and_indexes_the_rest(indexed):
    assert indexed["images"] == 1001 and indexed["new"] == 1001
    broken = {Path(e["path"]).name: e["reason"] for e in indexed["error_files"]}
    assert set(broken) == {"empty.png", "notes.jpg", "truncated.png"}
    assert broken["empty.png"] == "empty file" and broken["notes.jpg"] == "not an image"


def test_text_query_finds_dogs(trained, indexed):
    hits = json.loads(_cli("query", "a photo of a dog", "-k", "20", "--json", cwd=trained))
    precision = sum(_label(h["path"]) == "dog" for h in hits) / 20
    print(f"text query precision@20: {precision:.2f}")
    assert precision >= MIN_TEXT_PRECISION_AT_20


def test_unicode_named_image_finds_itself(trained, indexed, photos):
    query = photos / "cifar10" / "dog" / "собака 🐶 first.png"
    hits = json.loads(_cli("query", "--image", str(query), "-k", "2", "--json", cwd=trained))
    assert str(query) in [h["path"] for h in hits]  # itself and its twin copy, both ≈ 1
    assert hits[1]["score"] == pytest.approx(1.0, abs=2e-3)


def test_image_query_finds_dogs(trained, indexed, photos):
    queries = sorted((photos / "cifar10" / "dog").glob("[0-9]*.png"))[:5]
    precisions = []
    for query in queries:
        hits = json.loads(_cli("query", "--image", str(query), "-k", "21", "--json", cwd=trained))
        others = [h for h in hits if h["path"] != str(query)][:20]
        precisions.append(sum(_label(h["path"]) == "dog" for h in others) / 20)
    mean = sum(precisions) / len(precisions)
    print(f"image query precision@20, 5 dog images: {precisions} (mean {mean:.2f})")
    assert mean >= MIN_IMAGE_PRECISION_AT_20


def test_classify_index_accuracy(trained, indexed):
    result = json.loads(_cli("classify", "--labels", ",".join(CLASSES), "--json", cwd=trained))
    predictions = result["predictions"]
    assert len(predictions) == 1001
    accuracy = sum(p["label"] == _label(p["path"]) for p in predictions) / len(predictions)
    print(f"zero-shot accuracy on 1,001 indexed test images: {accuracy:.3f}")
    assert accuracy >= MIN_ACCURACY


def test_image_to_text_ranks_the_true_class(trained, indexed, photos):
    prompts = trained / "prompts.txt"
    prompts.write_text("".join(f"a photo of a {c}.\n" for c in CLASSES))
    in_top3 = 0
    for label in CLASSES:
        image = sorted((photos / "cifar10" / label).iterdir())[-1]
        rows = json.loads(
            _cli(
                "query",
                "--image",
                str(image),
                "--texts",
                str(prompts),
                "-k",
                "3",
                "--json",
                cwd=trained,
            )
        )
        in_top3 += f"a photo of a {label}." in [r["text"] for r in rows]
    print(f"image→text: true class in top 3 for {in_top3}/10 images")
    assert in_top3 >= MIN_TOP3_IMAGE_TO_TEXT
