"""Text collections and image→text ranking, with the real tiny model, FAISS and Parquet."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from clipsearch.cli.texts import print_text_hits, texts_app
from clipsearch.errors import ClipsearchError
from clipsearch.store import storage
from clipsearch.store.manifest import Manifest
from clipsearch.texts import (
    TextCollection,
    TextList,
    rank_image_against_texts,
    rank_texts,
    read_texts_file,
    resolve_texts,
)

from .conftest import TINY

LINES = [
    "a red square",  # 0
    "",  # 1: blank
    "  a photo of a dog  ",  # 2: stored stripped
    "a red square",  # 3: repeat of 0
    "the open sea\r",  # 4: CRLF line ending
    "   ",  # 5: blank
    "ein Hund im Schnee",  # 6
]
KEPT_IDS = [0, 2, 4, 6]
KEPT = ["a red square", "a photo of a dog", "the open sea", "ein Hund im Schnee"]
CAPTIONS = [
    "a red square",
    "a blue circle",
    "a photo of a dog",
    "a photo of a cat",
    "the open sea",
    "a mountain at dawn",
    "a bowl of fruit",
    "a city street at night",
    "an old wooden boat",
    "a child with a kite",
    "a plate of pasta",
    "snow on pine trees",
]


def _one_line_error(excinfo: pytest.ExceptionInfo[ClipsearchError], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "query.png"
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = (200, 30, 30)
    pixels[10:40, 30:60] = (20, 40, 220)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    return tiny_model.save(tmp_path_factory.mktemp("ckpt") / "tiny-copy")


# -- files -------------------------------------------------------------------------------


def test_read_texts_file_skips_blanks_and_repeats(texts_file):
    source = read_texts_file(texts_file)
    assert source.texts == KEPT and source.ids == KEPT_IDS
    assert (source.lines, source.blank, source.duplicates) == (7, 2, 1)
    assert source.sha256 == hashlib.sha256(texts_file.read_bytes()).hexdigest()


def test_bad_texts_files_are_one_line_errors(tmp_path):
    with pytest.raises(ClipsearchError) as excinfo:
        read_texts_file(tmp_path / "missing.txt")
    _one_line_error(excinfo, "no such texts file", "missing.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(ClipsearchError) as excinfo:
        read_texts_file(blank)
    _one_line_error(excinfo, "no texts in", "blank.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(ClipsearchError) as excinfo:
        read_texts_file(latin1)
    _one_line_error(excinfo, "not UTF-8", "line 2")


# -- build and open ----------------------------------------------------------------------


def test_build_open_round_trip(tmp_path, texts_file, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "indexes" / "caps"
    built = TextCollection.build(texts_file, directory, tiny_model)
    assert len(built) == 4

    opened = TextCollection.open("caps")  # a bare name is indexes/NAME
    assert opened.directory == directory
    assert len(opened) == 4 and opened.texts == KEPT
    assert opened.ids.tolist() == KEPT_IDS  # 0-based line numbers, in line order
    assert opened.identity == tiny_model.identity and opened.model_spec == TINY
    np.testing.assert_allclose(opened.embeddings(), tiny_model.embed_texts(KEPT), atol=1e-5)

    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1 and manifest["kind"] == "texts"
    assert manifest["model"] == tiny_model.identity.as_dict()
    assert manifest["embedding_dim"] == 128 and manifest["embedding_dtype"] == "float32"
    assert manifest["counts"] == {"texts": 4} and manifest["errors"] is None
    assert len(manifest["catalog"]) == 1 and manifest["catalog"][0].startswith("catalog/texts-")
    assert manifest["source"]["file"] == "captions.txt"
    assert manifest["source"]["sha256"] == hashlib.sha256(texts_file.read_bytes()).hexdigest()
    assert manifest["vector_index"]["kind"] == "flat" and manifest["vector_index"]["count"] == 4
    assert manifest["created_at"] and manifest["updated_at"]

    # A collection written before text collections shared the image manifest's type (its
    # file under "texts", its size under "count") still opens.
    older = {k: v for k, v in manifest.items() if k not in ("catalog", "counts", "retired")}
    older |= {"texts": manifest["catalog"][0], "count": 4}
    (directory / "manifest.json").write_text(json.dumps(older), encoding="utf-8")
    assert TextCollection.open(directory).texts == KEPT

    table = pq.read_table(directory / manifest["catalog"][0])
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("text").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 128)
    assert table.column("id").to_pylist() == KEPT_IDS
    assert _files(directory) == {
        "manifest.json",
        ".lock",
        *manifest["catalog"],
        manifest["vector_index"]["file"],
    }


def _files(directory: Path) -> set[str]:
    """The files under ``directory`` (not those in retired/), relative to it."""
    return {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and "retired" not in p.relative_to(directory).parts
    }


def test_rebuild_replaces_the_collection(tmp_path, texts_file, tiny_model, monkeypatch):
    directory = tmp_path / "caps"
    first = TextCollection.build(texts_file, directory, tiny_model)
    old_files = first.manifest.files()
    replacement = tmp_path / "other.txt"
    replacement.write_text("one\ntwo\n", encoding="utf-8")
    TextCollection.build(replacement, directory, tiny_model)

    reopened = TextCollection.open(directory)
    assert reopened.texts == ["one", "two"] and reopened.ids.tolist() == [0, 1]
    assert reopened.manifest.snapshot == 2
    assert reopened.manifest.created_at == first.manifest.created_at
    # The old files are retired, as an image index's are: kept for readers of the snapshot
    # before until the grace period ends (storage.RETIRED_GRACE_SECONDS).
    assert set(reopened.manifest.retired) == old_files
    assert old_files <= _files(directory / "retired")
    assert not old_files & _files(directory)
    # The collection opened before the rebuild still answers from its own snapshot.
    assert first.search(tiny_model.embed_texts(["the open sea"]), 1)[0][0].text == "the open sea"

    # A failed rebuild (empty file) leaves the committed collection as it was.
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ClipsearchError):
        TextCollection.build(empty, directory, tiny_model)
    assert TextCollection.open(directory).texts == ["one", "two"]

    # Past the grace period, the next build deletes them.
    monkeypatch.setattr(storage, "RETIRED_GRACE_SECONDS", 0)
    TextCollection.build(replacement, directory, tiny_model)
    assert not old_files & _files(directory / "retired")


def test_open_refuses_what_is_not_a_text_collection(tmp_path, texts_file, tiny_model):
    with pytest.raises(ClipsearchError) as excinfo:
        TextCollection.open(tmp_path / "nothing")
    _one_line_error(excinfo, "no text collection at", "nothing")

    image_index = tmp_path / "photos"
    image_index.mkdir()
    storage.commit_snapshot(image_index, Manifest(tiny_model.identity, 128, "float16"), None)
    with pytest.raises(ClipsearchError) as excinfo:
        TextCollection.open(image_index)
    _one_line_error(excinfo, "is an image index, not a text collection")
    with pytest.raises(ClipsearchError) as excinfo:
        TextCollection.build(texts_file, image_index, tiny_model)
    _one_line_error(excinfo, "is an image index")

    with pytest.raises(ClipsearchError) as excinfo:
        resolve_texts(tiny_model, str(tmp_path / "nope.txt"))
    _one_line_error(excinfo, "no such file, and no text collection at")

    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"x")
    with pytest.raises(ClipsearchError) as excinfo:
        TextCollection.build(texts_file, folder, tiny_model)
    _one_line_error(excinfo, "not a text collection and not empty", "beach.jpg")
    assert [p.name for p in folder.iterdir()] == ["beach.jpg"]


def test_open_reports_a_damaged_collection(tmp_path, texts_file, tiny_model):
    collection = TextCollection.build(texts_file, tmp_path / "caps", tiny_model)
    (collection.directory / collection.manifest.catalog[0]).unlink()
    with pytest.raises(ClipsearchError) as excinfo:
        TextCollection.open(collection.directory)
    _one_line_error(excinfo, "is damaged", "rebuild it")


# -- searching ---------------------------------------------------------------------------


def test_each_text_finds_itself_first(tmp_path, texts_file, tiny_model):
    collection = TextCollection.build(texts_file, tmp_path / "caps", tiny_model)
    queries = tiny_model.embed_texts(KEPT)
    for hits, text_id, text in zip(collection.search(queries, 1), KEPT_IDS, KEPT, strict=True):
        assert [(h.id, h.text) for h in hits] == [(text_id, text)]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    on_the_fly = rank_texts(tiny_model, KEPT, queries, 1, ids=KEPT_IDS)
    assert [h[0].id for h in on_the_fly] == KEPT_IDS


def test_k_beyond_the_collection_returns_all_sorted(tmp_path, texts_file, tiny_model):
    collection = TextCollection.build(texts_file, tmp_path / "caps", tiny_model)
    query = tiny_model.embed_texts(["a photo of a cat"])[0]  # 1-D: one query
    everything = collection.search(query, 100)[0]
    assert sorted(h.id for h in everything) == KEPT_IDS
    scores = [h.score for h in everything]
    assert scores == sorted(scores, reverse=True)
    top2 = collection.search(query, 2)[0]
    assert [h.id for h in top2] == [h.id for h in everything[:2]]
    listed = TextList.embed(tiny_model, KEPT, KEPT_IDS)
    assert [h.id for h in listed.search(query, 100)[0]] == [h.id for h in everything]
    expected = tiny_model.embed_texts(KEPT) @ query
    by_id = dict(zip(KEPT_IDS, expected, strict=True))
    for hit in everything:
        assert hit.score == pytest.approx(by_id[hit.id], abs=1e-5)
    with pytest.raises(ClipsearchError) as excinfo:
        collection.search(query, 0)
    _one_line_error(excinfo, "k must be at least 1")


def test_image_ranks_its_true_caption_first(tmp_path, image_file, tiny_model, monkeypatch):
    # Random weights carry no meaning, so the truth is constructed: rank the caption set by
    # the image's own embedding here, then both query paths must reproduce that ranking.
    monkeypatch.chdir(tmp_path)
    image = tiny_model.embed_images([image_file])[0]
    scores = tiny_model.embed_texts(CAPTIONS) @ image
    expected = [CAPTIONS[i] for i in np.argsort(-scores, kind="stable")]
    assert scores.max() - np.sort(scores)[-2] > 1e-4, "constructed case has a clear winner"
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    TextCollection.build(captions, tmp_path / "indexes" / "caps", tiny_model)

    from_file = rank_image_against_texts(image_file, str(captions), TINY, k=len(CAPTIONS))
    from_collection = rank_image_against_texts(image_file, "caps", k=len(CAPTIONS))  # its model
    assert [r["text"] for r in from_file] == expected
    assert [r["text"] for r in from_collection] == expected
    assert from_collection[0] == {
        "rank": 1,
        "id": CAPTIONS.index(expected[0]),
        "text": expected[0],
        "score": pytest.approx(float(scores.max()), abs=1e-5),
    }
    for a, b in zip(from_file, from_collection, strict=True):
        assert a["id"] == b["id"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
    top3 = rank_image_against_texts(image_file, "caps", k=3)
    assert [r["rank"] for r in top3] == [1, 2, 3]


def test_query_errors_are_one_line(tmp_path, texts_file, image_file, tiny_model):
    TextCollection.build(texts_file, tmp_path / "caps", tiny_model)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels", encoding="utf-8")
    with pytest.raises(ClipsearchError) as excinfo:
        rank_image_against_texts(not_an_image, str(tmp_path / "caps"), k=3)
    _one_line_error(excinfo, "cannot read image", "notes.png")
    with pytest.raises(ClipsearchError) as excinfo:
        rank_image_against_texts(tmp_path / "gone.jpg", str(tmp_path / "caps"), k=3)
    _one_line_error(excinfo, "cannot read image", "no such file")
    with pytest.raises(ClipsearchError) as excinfo:
        rank_image_against_texts(image_file, str(tmp_path / "unknown"), k=3)
    _one_line_error(excinfo, "no text collection at", "unknown")


def test_model_mismatch_is_refused(tmp_path, texts_file, image_file, tiny_model, checkpoint_dir):
    from clipsearch.model import Model

    copy = Model.load(str(checkpoint_dir))
    assert copy.identity.weights.startswith("sha256:")
    directory = tmp_path / "caps"
    TextCollection.build(texts_file, directory, copy)

    with pytest.raises(ClipsearchError) as excinfo:
        resolve_texts(tiny_model, str(directory))
    _one_line_error(excinfo, f"'{copy.identity.spec}'", f"'{TINY}'")
    with pytest.raises(ClipsearchError) as excinfo:
        rank_image_against_texts(image_file, str(directory), TINY, k=2)
    _one_line_error(excinfo, "was built with model", f"'{TINY}'")

    assert isinstance(resolve_texts(copy, str(directory)), TextCollection)
    rows = rank_image_against_texts(image_file, str(directory), k=2)  # the collection's model
    assert len(rows) == 2
    # A FILE is embedded with whatever model is given: nothing to mismatch.
    assert isinstance(resolve_texts(tiny_model, str(texts_file)), TextList)


# -- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(texts_app, name="texts")
    return app


def test_cli_texts_index_line_and_json(tmp_path, texts_file, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["texts", "index", str(texts_file), "--name", "caps", "--model", TINY]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"stored 4 texts in indexes/caps \(model random:clipsearch-tiny, \d+\.\d s\); "
        r"skipped 1 duplicate line and 2 blank lines\n",
        result.output,
    ), result.output

    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["collection"] == str(tmp_path / "indexes" / "caps")
    assert data["count"] == 4 and data["model"] == TINY
    assert data["model_identity"]["weights"] == "random:seed=0"
    assert data["source"]["file"] == "captions.txt" and len(data["source"]["sha256"]) == 64
    assert data["vector_index"]["kind"] == "flat" and isinstance(data["seconds"], float)


def test_cli_rebuild_keeps_the_collection_model(tmp_path, texts_file, cli, checkpoint_dir):
    runner = CliRunner()
    directory = str(tmp_path / "caps")
    args = ["texts", "index", str(texts_file), "--name", directory]
    assert runner.invoke(cli, [*args, "--model", str(checkpoint_dir)]).exit_code == 0
    # No --model: the collection's model, not $CLIPSEARCH_MODEL.
    result = runner.invoke(cli, [*args, "--json"], env={"CLIPSEARCH_MODEL": "random:no-such"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"] == str(checkpoint_dir)


def test_cli_errors(tmp_path, cli, capsys):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["texts", "index", str(tmp_path / "missing.txt"), "--name", str(tmp_path / "c")]
    )
    assert isinstance(result.exception, ClipsearchError)  # main() prints it, exits 2
    assert result.exception.exit_code == 2
    assert "\n" not in str(result.exception) and "missing.txt" in str(result.exception)
    assert not (tmp_path / "c").exists()  # nothing created for a bad file

    result = runner.invoke(cli, ["texts", "index", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and "--name" in result.output  # usage error

    print_text_hits([{"rank": 1, "id": 3, "text": "a\ndog", "score": 0.5}])
    assert capsys.readouterr().out == "1  0.5000  a dog\n"


def test_a_collection_with_the_older_flat_layout_opens_and_rebuilds(
    tmp_path, texts_file, tiny_model
):
    # Collections built before they took an image index's folders kept their files at the top.
    directory = tmp_path / "caps"
    TextCollection.build(texts_file, directory, tiny_model)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    flat = {}
    for key, name in (
        ("texts", manifest["catalog"][0]),
        ("vectors", manifest["vector_index"]["file"]),
    ):
        flat[key] = f"{key}-0123456789ab{Path(name).suffix}"
        (directory / name).rename(directory / flat[key])
    manifest["catalog"] = [flat["texts"]]
    manifest["vector_index"]["file"] = flat["vectors"]
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert TextCollection.open(directory).texts == KEPT

    rebuilt = TextCollection.build(texts_file, directory, tiny_model)
    assert rebuilt.manifest.snapshot == 2 and TextCollection.open(directory).texts == KEPT
    assert set(flat.values()) <= _files(directory / "retired")  # for readers of the old one
    assert not set(flat.values()) & _files(directory)
