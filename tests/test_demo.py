"""The bundled model and sample photos, and `clipsearch demo` over them: offline, no ../shared."""

from __future__ import annotations

import json
import re
from io import BytesIO

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipsearch.bundled import DEMO_MODEL, SAMPLES
from clipsearch.errors import ClipsearchError
from clipsearch.model import Model
from clipsearch.model.spec import parse_spec
from tests.conftest import TINY, TORCH_MODULES, run_cli, run_cli_watching_imports

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_samples_are_thirty_test_images_of_each_class():
    table = pq.read_table(SAMPLES)
    labels = table.column("label_name").to_pylist()
    assert sorted(set(labels)) == CLASSES
    assert all(labels.count(c) == 30 for c in CLASSES)
    assert len(set(table.column("test_row").to_pylist())) == 300
    assert all(image.startswith(b"\x89PNG") for image in table.column("image").to_pylist())
    assert SAMPLES.stat().st_size < 2 * 2**20


def test_bundled_spec_round_trips_and_unknown_names_list_the_shipped_ones():
    spec = parse_spec(DEMO_MODEL)
    assert spec.kind == "bundled" and str(spec) == DEMO_MODEL
    assert (spec.path / "clipsearch_onnx.json").is_file()
    with pytest.raises(ClipsearchError, match=r"no bundled model 'nope'.*bundled:cifar10-small"):
        parse_spec("bundled:nope")


def test_the_bundled_model_knows_its_classes():
    """Its class prompts rank the samples of that class first: the trained weights shipped
    intact (a damaged or random table would not)."""
    model = Model.load(DEMO_MODEL)
    assert model.engine == "onnx" and model.dim == 256
    images = pq.read_table(SAMPLES)
    photos = [Image.open(BytesIO(b)) for b in images.column("image").to_pylist()]
    labels = np.array(images.column("label_name").to_pylist())
    scores = (
        model.embed_images(photos) @ model.embed_texts([f"a photo of a {c}." for c in CLASSES]).T
    )
    accuracy = float(np.mean(np.array(CLASSES)[scores.argmax(1)] == labels))
    assert accuracy > 0.8  # 0.86 measured (chance 0.1)


def test_the_bundled_model_refuses_the_torch_engine_in_one_line():
    with pytest.raises(ClipsearchError, match="bundled model: it runs in the onnx engine only"):
        Model.load(DEMO_MODEL, engine="torch")


def test_an_index_of_the_bundled_model_refuses_another_model(tmp_path):
    from clipsearch.query.search import Index

    run_cli("demo", "--dir", str(tmp_path / "demo"), "--json")
    with pytest.raises(ClipsearchError, match="built with model 'bundled:cifar10-small'"):
        Index.open(tmp_path / "demo" / "index", model=TINY)


def test_demo_prints_precision_per_query_and_zero_shot_accuracy(tmp_path):
    """README's first command, as a user runs it: no torch imported, every query scored."""
    result, heavy = run_cli_watching_imports("demo", cwd=tmp_path)  # into ./clipsearch-demo
    assert result.returncode == 0, result.stderr
    assert not heavy & TORCH_MODULES
    precisions = [float(p) for p in re.findall(r"precision@10 (\d\.\d\d)", result.stdout)]
    assert len(precisions) == 5  # four text queries and one photo
    assert min(precisions) >= 0.8, result.stdout
    accuracy = float(re.search(r"zero-shot accuracy (\d\.\d\d)", result.stdout).group(1))
    assert accuracy >= 0.8
    assert "clipsearch index ~/Pictures" in result.stdout.splitlines()[-1]


def test_demo_json_page_and_a_second_run_start_afresh(tmp_path):
    folder = tmp_path / "demo"
    for _ in range(2):  # the second run empties what the first wrote: 300 photos, not 600
        result = run_cli("demo", "--dir", "demo", "-k", "5", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["photos"] == 300
    assert [q["kind"] for q in report["queries"]] == ["text"] * 4 + ["image"]
    for query in report["queries"]:
        assert len(query["hits"]) == 5
        assert query["precision"] == sum(h["label"] == query["target"] for h in query["hits"]) / 5
    photo = report["queries"][-1]["query"]
    assert photo.startswith(str(folder))  # a relative --dir, yet the query photo
    assert photo not in [h["path"] for h in report["queries"][-1]["hits"]]  # is not a hit
    assert report["zero_shot_accuracy"] == pytest.approx(
        np.mean(list(report["zero_shot_per_class"].values())), abs=1e-9
    )  # 30 photos per class: the mean of the per-class accuracies
    page = (folder / "results.html").read_text()
    assert page.count("<img") == 5 * 5 + 1  # the hits and the query photo
    assert page.count('class="wrong"') == sum(
        h["label"] != q["target"] for q in report["queries"] for h in q["hits"]
    )


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = run_cli("demo", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "did not write" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
