"""The query layer on a real small index: the tiny model, real images, FAISS, DuckDB, Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.query.search import Index
from clipsearch.zeroshot.classify import load_classifier

from .conftest import TINY, run_cli

CLASSES = ["red", "green", "blue"]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _image(color: tuple[int, int, int], seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 40, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search") / "photos"
    for c, name in enumerate(CLASSES):
        for i in range(10):
            size = (64 + 40 * (i % 3), 48)  # widths 64, 104, 144: something to filter on
            (root / name).mkdir(parents=True, exist_ok=True)
            _image(COLORS[name], 100 * c + i, size).save(root / name / f"{name} {i}.png")
    return root


@pytest.fixture(scope="module")
def index_dir(photos) -> Path:
    directory = photos.parent / "index"
    update_index([photos], directory, TINY, IndexOptions(workers=0))
    return directory


@pytest.fixture
def index(index_dir) -> Index:
    return Index.open(index_dir)


def test_an_indexed_image_finds_itself_first(index, photos):
    query = photos / "green" / "green 3.png"
    hits = index.search(image=query, k=5)
    assert hits[0].path == str(query)
    assert hits[0].score == pytest.approx(1.0, abs=2e-3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a PIL image is embedded afresh and finds the same file
    fresh = index.search(image=Image.open(query), k=1)
    assert fresh[0].path == str(query) and fresh[0].score == pytest.approx(1.0, abs=2e-3)


def test_text_search_returns_k_hits_with_ids_and_paths(index):
    hits = index.search("a photo of a dog", k=7)
    assert len(hits) == 7 and len({h.id for h in hits}) == 7
    assert all(Path(h.path).is_file() for h in hits)
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


def test_k_larger_than_the_index_returns_everything(index):
    assert len(index.search("anything", k=1000)) == 30


def test_where_filters_rows_and_still_returns_k(index):
    hits = index.search("a photo", k=8, where="width > 100", columns=["width"])
    assert len(hits) == 8
    assert all(h.columns["width"] > 100 for h in hits)
    only_blue = index.search("x", k=50, where="path LIKE '%/blue/%'")
    assert len(only_blue) == 10 and all("/blue/" in h.path for h in only_blue)
    assert index.search("x", k=5, where="width > 10000") == []


def test_bad_where_is_a_clear_error_naming_the_parameter(index):
    with pytest.raises(ClipsearchError, match=r"invalid filter 'widht > 1'") as raised:
        index.search("x", where="widht > 1")
    assert raised.value.parameter == "where"  # the CLI says --where, the API where
    assert "--" not in str(raised.value)  # library errors speak the library's language
    assert "no column widht (did you mean width?); the columns are id, path, size" in str(
        raised.value
    )  # not DuckDB's statement with a caret under the fault, nor "embedding"
    assert "LINE" not in str(raised.value) and "embedding" not in str(raised.value)


def test_a_minus_term_pushes_its_images_down(index):
    target = index.search("2:ocean", k=30)
    pushed_id = index.search("ocean", k=1)[0].id  # the image most like the negative term
    plain = [h.id for h in index.search("a red car", k=30)]
    with_minus = [h.id for h in index.search(["a red car", "-ocean"], k=30)]
    assert with_minus.index(pushed_id) > plain.index(pushed_id)
    assert target[0].id == pushed_id  # a positive weight keeps the direction


def test_combined_terms_are_the_weighted_normalized_sum(index):
    model = index.model
    beach, people = model.embed_texts(["beach", "people"])
    expected = 2 * beach - people
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(index.query_vector(["2:beach", "-people"]), expected, atol=1e-5)
    by_vector = index.search(expected, k=5)
    by_terms = index.search(["2:beach", "-people"], k=5)
    assert [h.id for h in by_vector] == [h.id for h in by_terms]


def test_text_and_image_combine(index, photos):
    query = photos / "red" / "red 1.png"
    hits = index.search("a photo", image=query, k=3)
    assert len(hits) == 3 and 0.0 < hits[0].score < 1.0


def test_empty_query_and_bad_k(index):
    with pytest.raises(ClipsearchError, match="empty query"):
        index.search([])
    with pytest.raises(ClipsearchError, match="k must be at least 1"):
        index.search("x", k=0)


def test_unknown_index_and_other_model(tmp_path, index_dir):
    with pytest.raises(ClipsearchError, match="no index at"):
        Index.open(tmp_path / "nothing")
    with pytest.raises(ClipsearchError, match="built with model"):
        Index.open(index_dir, model="random:ViT-B-32")


def test_classify_index_and_cache(index_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    first = Index.open(index_dir)
    predictions = first.classify(CLASSES, templates="simple", top=3)
    assert len(predictions) == 30
    for p in predictions:
        assert p.label == p.top[0][0] and len(p.top) == 3
        assert sum(prob for _, prob in p.top) == pytest.approx(1.0, abs=1e-4)
    # the second run with the same labels encodes no text and loads no model
    monkeypatch.setattr("clipsearch.model.Model.load", lambda *a, **k: pytest.fail("model loaded"))
    again = Index.open(index_dir).classify(CLASSES, templates="simple", top=3)
    assert [(p.path, p.label) for p in again] == [(p.path, p.label) for p in predictions]


def test_cache_is_keyed_by_labels(index, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    identity = index.manifest.model
    one = load_classifier(identity, ["a", "b"], ["{}"], lambda: index.model)
    two = load_classifier(identity, ["a", "b"], ["{}"], lambda: index.model)
    other = load_classifier(identity, ["a", "c"], ["{}"], lambda: index.model)
    assert (one.from_cache, two.from_cache, other.from_cache) == (False, True, False)
    np.testing.assert_array_equal(one.weights, two.weights)


# -- CLI ---------------------------------------------------------------------------------


def test_cli_query_json_schema(index_dir, photos):
    result = run_cli("query", "a photo", "-k", "4", "--json", "--index", str(index_dir))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert all({"rank", "id", "path", "score"} <= set(r) for r in rows)


def test_cli_query_table_paths_and_html(index_dir, photos, tmp_path):
    query = str(photos / "blue" / "blue 2.png")
    table = run_cli("query", "--image", query, "-k", "3", "--index", str(index_dir))
    assert table.returncode == 0, table.stderr
    first = table.stdout.splitlines()[0].split(None, 2)
    assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=2e-3)
    assert first[2] == query
    page = tmp_path / "hits.html"
    paths = run_cli(
        "query",
        "--image",
        query,
        "-k",
        "3",
        "--paths",
        "--html",
        str(page),
        "--index",
        str(index_dir),
    )
    assert paths.stdout.splitlines()[0] == query and len(paths.stdout.splitlines()) == 3
    html = page.read_text()
    assert html.count("data:image/") == 3 and "blue 2.png" in html  # thumbnails inlined


def test_cli_negative_terms(index_dir):
    dashed = run_cli("query", "--json", "--index", str(index_dir), "--", "a photo", "-ocean")
    option = run_cli("query", "a photo", "--not", "ocean", "--json", "--index", str(index_dir))
    assert dashed.returncode == option.returncode == 0, dashed.stderr + option.stderr
    assert json.loads(dashed.stdout) == json.loads(option.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "--index", "{index}"], "empty query"),
        (["query", "x", "--index", "{missing}"], "no index at"),
        (["query", "x", "-k", "0", "--index", "{index}"], "k must be at least 1"),
        (["query", "x", "-m", "random:ViT-B-32", "--index", "{index}"], "built with model"),
        (["query", "--image", "{missing}/q.jpg", "--index", "{index}"], "cannot read image"),
        (["query", "x", "--where", "width >", "--index", "{index}"], "--where: invalid filter"),
        (["query", "--like", "424242", "--index", "{index}"], "--like: no image with id 424242"),
        (["query", "--like", str(2**64), "--index", "{index}"], f"no image with id {2**64}"),
        (
            ["classify", "--index", "{index}", "--labels", "a,b", "--templates", "{latin1}"],
            "--templates: cannot read templates file",
        ),
        (
            ["classify", "--index", "{index}", "--labels", "a,b", "--templates", "{no_braces}"],
            "--templates: templates must each contain one {}",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(index_dir, tmp_path, args, message):
    (tmp_path / "latin1.txt").write_bytes(b"a photo of a caf\xe9 {}\n")  # not UTF-8
    (tmp_path / "plain.txt").write_text("a photo\n")
    names = {"latin1": tmp_path / "latin1.txt", "no_braces": tmp_path / "plain.txt"}
    filled = [a.format(index=index_dir, missing=tmp_path / "missing", **names) for a in args]
    result = run_cli(*filled)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr


def test_cli_unreadable_query_image(index_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    result = run_cli("query", "--image", str(broken), "--index", str(index_dir))
    assert result.returncode == 2 and result.stderr.startswith("error: cannot read image")


def test_cli_image_to_text(index_dir, photos, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red square\na green field\na blue sky\n")
    result = run_cli(
        "query",
        "--image",
        str(photos / "red" / "red 0.png"),
        "--texts",
        str(captions),
        "--json",
        "--index",
        str(index_dir),
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["text"] for r in rows) == ["a blue sky", "a green field", "a red square"]
    assert [r["rank"] for r in rows] == [1, 2, 3]


def test_cli_classify_eval_and_tags(photos, index_dir, tmp_path):
    env = {"CLIPSEARCH_CACHE": str(tmp_path / "cache")}
    plot = tmp_path / "cm.png"
    result = run_cli(
        "classify",
        str(photos),
        "--eval",
        "--templates",
        "simple",
        "--workers",
        "0",
        "--plot",
        str(plot),
        "--json",
        "-m",
        TINY,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["eval"]
    assert report["count"] == 30 and report["labels"] == sorted(CLASSES)
    assert np.array(report["confusion"]).sum() == 30
    correct = np.trace(np.array(report["confusion"]))
    assert report["accuracy"] == pytest.approx(correct / 30)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    tagged = run_cli(
        "classify",
        "--index",
        str(index_dir),
        "--labels",
        "red,green,blue",
        "--templates",
        "simple",
        "--write-tags",
        "--json",
        env=env,
    )
    assert tagged.returncode == 0, tagged.stderr
    predictions = json.loads(tagged.stdout)["predictions"]
    label = predictions[0]["label"]
    expected = sum(p["label"] == label for p in predictions)
    found = run_cli(
        "query",
        "x",
        "-k",
        "100",
        "--where",
        f"label = '{label}'",
        "--json",
        "--columns",
        "label,label_probability",
        "--index",
        str(index_dir),
    )
    rows = json.loads(found.stdout)
    assert len(rows) == expected and all(r["label"] == label for r in rows)
