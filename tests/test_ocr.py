"""The words in photos (`index --ocr`): real photos (the bundled CIFAR-10 samples, enlarged)
with words rendered onto them, read by the real OCR models of the `ocr` extra."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from clipsearch import Index
from clipsearch.bundled import SAMPLES
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.store.catalog import catalog_schema, read_tables
from clipsearch.store.manifest import read_manifest

from .conftest import TINY, paused_cli, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rapidocr") is None,
    reason="the ocr extra is not installed (pip install 'clipsearch[ocr]')",
)

# word → (text height in px, degrees the photo is turned after the words are written)
WORDS = {"BAKERY": (40, 0), "EXIT 12": (28, 0), "Oslo": (48, 90), "invoice": (32, 180)}


def _photo(row: int, word: str | None = None, height: int = 32, turn: int = 0) -> Image.Image:
    raw = pq.read_table(SAMPLES, columns=["image"]).column("image")[row].as_py()
    image = Image.open(io.BytesIO(raw)).convert("RGB").resize((480, 480), Image.BICUBIC)
    if word is not None:
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=height)
        box = draw.textbbox((60, 200), word, font=font)
        draw.rectangle(box, fill=(250, 250, 245))
        draw.text((60, 200), word, font=font, fill=(20, 20, 20))
    return image.rotate(turn, expand=True) if turn else image


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for row, (word, (height, turn)) in enumerate(WORDS.items()):
        _photo(row, word, height, turn).save(folder / f"word-{row}.jpg", quality=92)
    for row in range(len(WORDS), len(WORDS) + 3):
        _photo(row).save(folder / f"plain-{row}.jpg", quality=92)
    return folder


def _catalog(index_dir: Path) -> dict[str, dict]:
    manifest = read_manifest(index_dir)
    columns = ["id", "path", "text", "text_lines", "embedding"]
    schema = catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
    table = read_tables(index_dir, manifest.catalog, columns, schema)
    return {Path(row["path"]).name: row for row in table.to_pylist()}


def _options(read_text: bool | None) -> IndexOptions:
    return IndexOptions(workers=2, read_text=read_text)


def test_index_reads_the_words_in_photos_and_remembers_to(photos, tmp_path):
    index_dir = tmp_path / "index"
    summary = update_index([photos], index_dir, TINY, _options(True))
    assert summary.text_read == 7 and read_manifest(index_dir).ocr is True
    rows = _catalog(index_dir)
    for row, word in enumerate(WORDS):
        found = rows[f"word-{row}.jpg"]
        assert word.lower() in found["text"].lower(), (word, found["text"])  # turned ones too
        line = next(li for li in found["text_lines"] if word.lower() in li["text"].lower())
        assert 0.5 < line["confidence"] <= 1 and len(line["box"]) == 8
    for name in ("plain-4.jpg", "plain-5.jpg", "plain-6.jpg"):
        assert rows[name]["text"] == "" and rows[name]["text_lines"] == []  # read: no text

    # Later runs keep reading, without being told again.
    _photo(9, "STOP", 44).save(photos / "later.jpg", quality=92)
    try:
        again = update_index([photos], index_dir, None, _options(None))
        assert again.new == 1 and again.text_read == 1
        assert "stop" in _catalog(index_dir)["later.jpg"]["text"].lower()
    finally:
        (photos / "later.jpg").unlink()

    # A filter over the words, as over any column.
    index = Index.open(index_dir)
    hits = index.search("a photo", k=10, where="text ILIKE '%bakery%'")
    assert [Path(h.path).name for h in hits] == ["word-0.jpg"]


def test_ocr_asked_of_an_index_reads_its_photos_without_embedding_them_again(photos, tmp_path):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options(None))  # no OCR: no text
    before = _catalog(index_dir)
    assert read_manifest(index_dir).ocr is False
    assert all(row["text"] is None for row in before.values())

    result = run_cli("index", str(photos), "--index", str(index_dir), "--ocr", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["text_read"] == 7 and summary["embedded"] == 0 and summary["new"] == 0
    after = _catalog(index_dir)
    assert {name: row["id"] for name, row in after.items()} == {
        name: row["id"] for name, row in before.items()
    }
    for name, row in after.items():  # the same vectors, not embedded again
        np.testing.assert_array_equal(row["embedding"], before[name]["embedding"])
    assert "bakery" in after["word-0.jpg"]["text"].lower()
    index = Index.open(index_dir)
    assert len(index) == 7 and index.snapshot.vectors.ntotal == 7

    # Nothing left to read: the next run commits nothing.
    result = run_cli("index", str(photos), "--index", str(index_dir), "--json")
    assert json.loads(result.stdout)["committed"] is False

    # --no-ocr stops reading new photos; what was read stays.
    result = run_cli("index", str(photos), "--index", str(index_dir), "--no-ocr", "--json")
    assert result.returncode == 0, result.stderr
    assert read_manifest(index_dir).ocr is False
    assert "bakery" in _catalog(index_dir)["word-0.jpg"]["text"].lower()


def test_an_indexed_photo_that_cannot_be_read_again_keeps_its_row(photos, tmp_path):
    folder = shutil.copytree(photos, tmp_path / "photos")
    index_dir = tmp_path / "index"
    update_index([folder], index_dir, TINY, _options(None))
    # Damaged in place since it was indexed, with its size and time as they were: the run
    # takes it for unchanged, and only reading its text finds out.
    damaged = folder / "plain-5.jpg"
    stat = damaged.stat()
    damaged.write_bytes(b"\0" * stat.st_size)
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    summary = update_index([folder], index_dir, None, _options(True))
    assert summary.text_read == 6 and summary.errors == 0 and summary.embedded == 0
    rows = _catalog(index_dir)
    assert len(rows) == 7 and rows["plain-5.jpg"]["text"] is None  # kept, not yet read
    assert "bakery" in rows["word-0.jpg"]["text"].lower()
    # Nothing else to read: the next run commits nothing (it tries the damaged photo again).
    again = update_index([folder], index_dir, None, _options(None))
    assert again.committed is False and again.text_read == 0


@pytest.fixture(scope="module")
def read_index(photos, tmp_path_factory) -> Path:
    index_dir = tmp_path_factory.mktemp("read") / "index"
    update_index([photos], index_dir, TINY, _options(True))
    return index_dir


def _names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


@pytest.mark.parametrize(
    "query, photo",
    [
        ("bakery", "word-0.jpg"),
        ("Bakery receipt", "word-0.jpg"),  # one word found is enough
        ("exit 12", "word-1.jpg"),
        ("0SLO", "word-2.jpg"),  # OCR's look-alikes and case never matter
        ("invoce", "word-3.jpg"),  # one letter dropped
        ("lnvoice", "word-3.jpg"),  # one misread
    ],
)
def test_a_text_query_finds_photos_by_their_words(read_index, query, photo):
    index = Index.open(read_index)
    hits = index.search(query, k=3)
    assert _names(hits)[0] == photo
    assert hits[0].marks and hits[0].text[slice(*hits[0].marks[0])]  # the words found, marked
    words_alone = index.search(query, k=3, words_only=True)
    assert _names(words_alone) == [photo]  # by words alone: only photos with them


def test_a_query_no_words_match_ranks_by_meaning_as_without_ocr(read_index, photos, tmp_path):
    plain = tmp_path / "plain"
    update_index([photos], plain, TINY, _options(False))
    for query in ("a photo of a frog", "a red truck"):
        with_text = Index.open(read_index).search(query, k=7)
        without = Index.open(plain).search(query, k=7)
        assert _names(with_text) == _names(without)
        # The same embeddings: reading decodes a photo again, larger, for the text alone.
        assert [h.score for h in with_text] == [h.score for h in without]


def test_a_quoted_phrase_matches_its_words_in_order(read_index):
    index = Index.open(read_index)
    assert _names(index.search('"exit 12"', k=5)) == ["word-1.jpg"]
    assert _names(index.search('"12 exit"', k=5)) == []


def test_words_in_json_over_the_cli_and_the_http_api(read_index):
    result = run_cli("query", "bakery", "--index", str(read_index), "--local", "--json", "-k", "2")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)[0]
    start, end = best["text_marks"][0]
    assert best["text"][start:end].lower() == "bakery" and best["path"].endswith("word-0.jpg")
    page = read_index.parent / "hits.html"
    shown = run_cli(
        "query", "bakery", "--index", str(read_index), "--local", "-k", "1", "--html", str(page)
    )
    assert "[BAKERY]" in shown.stdout and "[BAKERY]" in page.read_text(encoding="utf-8")

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from clipsearch.server.app import create_app
    from clipsearch.server.config import ServerConfig

    config = ServerConfig(read_index, warm_up=False)
    headers = {"Authorization": f"Bearer {config.token}"}
    client = TestClient(create_app(config), base_url="http://127.0.0.1", headers=headers)
    answer = client.get("/api/search", params={"q": "exit 12", "words": "true", "k": 3})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert len(hits) == 1 and "EXIT" in hits[0]["text"] and hits[0]["text_marks"]


def test_words_only_on_an_index_without_text_is_one_line(photos, tmp_path):
    plain = tmp_path / "plain"
    update_index([photos], plain, TINY, _options(False))
    result = run_cli("query", "bakery", "--words", "--index", str(plain), "--local")
    assert result.returncode != 0 and "--words" in result.stderr and "--ocr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_reading_an_index_killed_midway_resumes_and_loses_nothing(photos, tmp_path):
    index_dir = tmp_path / "index"
    update_index([photos], index_dir, TINY, _options(None))
    before = _catalog(index_dir)
    # Paused once it has staged its first rows, and killed there.
    options = ["--index", str(index_dir), "--ocr", "--workers", "0", "--batch-size", "2"]
    reader = paused_cli(
        "clipsearch.store.staging:Staging.write",
        *["index", str(photos), *options, "--checkpoint-every", "2"],
        after=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "paused\n", "the run staged nothing"
    finally:
        reader.kill()
        reader.communicate()
    assert reader.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert _catalog(index_dir).keys() == before.keys()  # the committed index, as it was
    assert all(row["text"] is None for row in _catalog(index_dir).values())

    result = run_cli("index", str(photos), "--index", str(index_dir), "--ocr", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed"] > 0 and summary["text_read"] == 7 - summary["resumed"]
    after = _catalog(index_dir)
    assert {n: r["id"] for n, r in after.items()} == {n: r["id"] for n, r in before.items()}
    assert all(row["text"] is not None for row in after.values())
    for name, row in after.items():
        np.testing.assert_array_equal(row["embedding"], before[name]["embedding"])


def test_a_damaged_ocr_model_is_one_line_naming_it(photos, tmp_path):
    # The installed rapidocr, shadowed by a copy whose detection model is cut short.
    import rapidocr

    installed = Path(rapidocr.__file__).parent
    shadow = tmp_path / "site" / "rapidocr"
    shutil.copytree(installed, shadow, ignore=shutil.ignore_patterns("*.onnx"))
    for model in (installed / "models").glob("*.onnx"):
        (shadow / "models" / model.name).symlink_to(model)
    detector = next((shadow / "models").glob("*det*.onnx"))
    detector.unlink()
    detector.write_bytes(b"\x08\x07" * 100)
    env = {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{Path(__file__).parents[1]}"}
    index_dir = str(tmp_path / "index")
    result = run_cli("index", str(photos), "--index", index_dir, "-m", TINY, "--ocr", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot load the OCR models") and detector.name in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_small_print_of_a_photographed_page_is_read():
    """A receipt photographed whole: 40 lines 0.8% of the photo high (32 px of 4000), given
    as the decode for reading hands it over (1500x2000). The detector's first look, at 640
    px, finds 28 of them; where it finds only small print it looks again, larger."""
    from clipsearch.ocr.reader import TextReader, joined

    rng = random.Random(0)
    page = Image.new("RGB", (3000, 4000), (90, 70, 50))
    draw = ImageDraw.Draw(page)
    draw.rectangle((600, 200, 2400, 3800), fill=(245, 243, 236))
    font = ImageFont.load_default(size=32)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    items = ["".join(rng.choices(syllables, k=3)) for _ in range(40)]
    for row, item in enumerate(items):
        price = f"{rng.randint(1, 99)}.{rng.randint(10, 99)}"
        draw.text((680, 260 + row * 48), f"{item}  {price}", font=font, fill=(20, 20, 20))
    page = page.rotate(3, Image.BICUBIC, fillcolor=(90, 70, 50))  # held a little askew
    page = page.filter(ImageFilter.GaussianBlur(1.5)).resize((1500, 2000), Image.BILINEAR)
    text = joined(TextReader().read(page))
    assert sum(item in text for item in items) >= 36, text
