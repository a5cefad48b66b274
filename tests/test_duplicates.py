"""`clipsearch duplicates` and `--min-score` on real photos with known copies: CIFAR-10 test
images shipped with the package, upscaled, copied the ways a photo library copies them
(byte for byte under a unicode name, re-encoded, halved, cropped, stored rotated with an
EXIF tag that turns it back), beside a broken file; indexed with the bundled model."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance

from clipsearch import Index
from clipsearch.base import fingerprint
from clipsearch.bundled import DEMO_MODEL, SAMPLES
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.query import duplicates
from clipsearch.server.auth import bearer_header, login_url
from clipsearch.store.vectors import VectorIndexConfig

from .conftest import (
    CHROMIUM_ARGS,
    START_TIMEOUT,
    browser_or_skip,
    run_cli,
    serve_command,
    wait_for_server,
    wait_js,
)

CLASSES = ("cat", "dog", "ship", "truck", "frog", "horse")
EXIF_ORIENTATION = 0x0112
UPSCALE = 4
DAY_NS = 86_400 * 10**9


def _sample_photos() -> dict[str, Image.Image]:
    """The first shipped sample of each class in CLASSES, upscaled to 128 px."""
    table = pq.read_table(SAMPLES)
    photos: dict[str, Image.Image] = {}
    labels = table["label_name"].to_pylist()
    for data, label in zip(table["image"].to_pylist(), labels, strict=True):
        if label in CLASSES and label not in photos:
            small = Image.open(io.BytesIO(data)).convert("RGB")
            photos[label] = small.resize((32 * UPSCALE, 32 * UPSCALE), Image.BICUBIC)
    return photos


def _write(path: Path, image: Image.Image, days_old: int, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    when = 1_700_000_000 * 10**9 - days_old * DAY_NS
    os.utime(path, ns=(when, when))
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("duplicates") / "photos"
    photos = _sample_photos()
    for label, image in photos.items():
        _write(root / f"{label}.jpg", image, days_old=100, quality=92)
    cat = photos["cat"]
    copies = root / "copies"
    copies.mkdir()
    shutil.copy2(root / "cat.jpg", copies / "猫 コピー.jpg")  # same bytes, same mtime
    os.utime(copies / "猫 コピー.jpg", ns=(1_700_000_000 * 10**9,) * 2)  # ... but newer
    _write(copies / "cat-q60.jpg", cat, days_old=50, quality=60)
    _write(copies / "cat-half.png", cat.resize((64, 64), Image.LANCZOS), days_old=50)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored turned; viewers (and clipsearch) turn it back
    _write(copies / "cat-turned.jpg", cat.transpose(Image.ROTATE_90), 50, quality=92, exif=exif)
    shutil.copy2(root / "dog.jpg", root / "dog (1).jpg")
    os.utime(root / "dog (1).jpg", ns=(1_700_000_000 * 10**9,) * 2)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def _index(library: Path, index_dir: Path, flat_threshold: int = 100_000) -> Path:
    options = IndexOptions(workers=0, vectors=VectorIndexConfig(flat_threshold=flat_threshold))
    summary = update_index([library], index_dir, DEMO_MODEL, options)
    assert summary.errors == 1  # broken.jpg
    return index_dir


@pytest.fixture(scope="module")
def index_dir(library, tmp_path_factory) -> Path:
    return _index(library, tmp_path_factory.mktemp("dup-index") / "index")


def _names(group: duplicates.DuplicateGroup) -> list[str]:
    return [Path(image.path).name for image in group.images]


def test_groups_hold_the_copies_and_nothing_else(index_dir):
    groups = Index.open(index_dir).duplicates()
    assert [_names(g) for g in groups] == [
        # The keeper first (same pixels: the oldest), then identical, then by similarity.
        ["cat.jpg", "猫 コピー.jpg", *_names(groups[0])[2:]],
        ["dog.jpg", "dog (1).jpg"],
    ]
    assert sorted(_names(groups[0])[2:]) == ["cat-half.png", "cat-q60.jpg", "cat-turned.jpg"]
    cat, dog = groups
    assert [i.identical for i in cat.images] == [True, True, False, False, False]
    assert [i.identical for i in dog.images] == [True, True]
    similarities = [i.similarity for i in cat.images]
    assert similarities[:2] == [1.0, 1.0] and min(similarities) >= duplicates.DEFAULT_THRESHOLD
    assert similarities[2:] == sorted(similarities[2:], reverse=True)
    matrix = np.array(cat.similarities)
    assert matrix.shape == (5, 5) and np.allclose(matrix, matrix.T)
    assert np.allclose(np.diag(matrix), 1.0, atol=1e-3)
    keeper = cat.keeper
    assert (keeper.width, keeper.height, keeper.format) == (128, 128, "JPEG")
    assert cat.reclaimable_bytes == sum(i.size for i in cat.others)


def test_no_two_different_photos_share_a_group_even_at_a_lower_threshold(index_dir):
    for threshold in (duplicates.DEFAULT_THRESHOLD, 0.9):
        for group in Index.open(index_dir).duplicates(threshold):
            originals = {n for n in _names(group) if n.removesuffix(".jpg") in CLASSES}
            assert len(originals) == 1, _names(group)


def test_where_compares_only_the_matching_images(index_dir, library):
    copies = str(library / "copies")
    groups = Index.open(index_dir).duplicates(where=f"path LIKE '{copies}/%'")
    assert len(groups) == 1
    # cat.jpg is out of scope: the keeper is the largest, then oldest, of the copies.
    assert _names(groups[0])[0] in ("cat-q60.jpg", "cat-turned.jpg")
    assert all(i.path.startswith(copies) for i in groups[0].images)
    assert Index.open(index_dir).duplicates(where="width > 100000") == []


def test_where_scopes_to_a_date_range(index_dir):
    # Originals were modified in August 2023, their copies from late September on.
    index = Index.open(index_dir)
    since_september = index.duplicates(where="mtime_ns >= epoch_ns(TIMESTAMP '2023-09-01')")
    assert [sorted(_names(g)) for g in since_september] == [
        sorted(["猫 コピー.jpg", "cat-q60.jpg", "cat-half.png", "cat-turned.jpg"])
    ]
    august = (
        "mtime_ns BETWEEN epoch_ns(TIMESTAMP '2023-08-01') AND epoch_ns(TIMESTAMP '2023-08-31')"
    )
    assert index.duplicates(where=august) == []  # one of each photo: nothing to group


def test_an_approximate_vector_index_finds_the_same_groups(library, index_dir, tmp_path):
    ivf = _index(library, tmp_path / "ivf", flat_threshold=5)
    assert json.loads((ivf / "manifest.json").read_text())["vector_index"]["kind"] != "flat"
    exact = [_names(g) for g in Index.open(index_dir).duplicates()]
    assert [_names(g) for g in Index.open(ivf).duplicates()] == exact


def test_the_catalog_keeps_a_fingerprint_of_every_image(index_dir, library):
    table = Index.open(index_dir).snapshot.table(["path", "fingerprint"])
    pictures = dict(zip(table["path"].to_pylist(), table["fingerprint"].to_pylist(), strict=True))
    assert len(pictures) == 11 and all(len(p) == fingerprint.SIZE for p in pictures.values())
    cat, dog = pictures[str(library / "cat.jpg")], pictures[str(library / "dog.jpg")]
    turned = pictures[str(library / "copies" / "cat-turned.jpg")]  # upright, as displayed
    assert fingerprint.difference(cat, turned) < fingerprint.MAX_DIFFERENCE / 2
    assert fingerprint.difference(cat, dog) > 2 * fingerprint.MAX_DIFFERENCE


def test_different_dark_photos_are_not_one_photo(tmp_path):
    # Night shots: every grey level near black, so in absolute grey levels any two were as
    # close as a copy, and the models embed them alike too. Their patterns still differ.
    root = tmp_path / "night"
    for label, image in _sample_photos().items():
        _write(root / f"{label}.jpg", ImageEnhance.Brightness(image).enhance(0.06), 10)
    night_cat = Image.open(root / "cat.jpg")
    _write(root / "copies" / "cat-q60.jpg", night_cat, 5, quality=60)  # one real copy
    update_index([root], tmp_path / "index", DEMO_MODEL, IndexOptions(workers=0))
    groups = Index.open(tmp_path / "index").duplicates()
    assert [sorted(_names(g)) for g in groups] == [["cat-q60.jpg", "cat.jpg"]]


def _from_before_fingerprints(index_dir: Path, tmp_path: Path) -> Path:
    """A copy of the index as clipsearch wrote it before catalogs held fingerprints."""
    older = tmp_path / "older"
    shutil.copytree(index_dir, older)
    for part in (older / "catalog").glob("part-*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["fingerprint"]), part)
    return older


def test_an_index_from_before_fingerprints_reads_them_from_the_files(index_dir, tmp_path):
    older = _from_before_fingerprints(index_dir, tmp_path)
    expected = [_names(g) for g in Index.open(index_dir).duplicates()]
    assert [_names(g) for g in Index.open(older).duplicates()] == expected


def test_indexing_into_an_index_from_before_fingerprints_mixes_parts(index_dir, library, tmp_path):
    older = _from_before_fingerprints(index_dir, tmp_path)
    extra = library.parent / "extra"
    _write(extra / "ship-copy.png", _sample_photos()["ship"], days_old=1)
    summary = update_index([library, extra], older, DEMO_MODEL, IndexOptions(workers=0))
    assert summary.new == 1 and summary.committed
    pictures = Index.open(older).snapshot.table(["path", "fingerprint"])
    known = {
        p: f is not None
        for p, f in zip(*(pictures[c].to_pylist() for c in pictures.column_names), strict=True)
    }
    assert known[str(extra / "ship-copy.png")] and not known[str(library / "cat.jpg")]
    names = [_names(g) for g in Index.open(older).duplicates()]
    assert ["ship.jpg", "ship-copy.png"] in names and len(names) == 3
    shutil.rmtree(extra)


def test_a_server_opens_an_index_from_before_fingerprints(index_dir, library, tmp_path):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    from fastapi.testclient import TestClient

    from clipsearch.server.app import create_app
    from clipsearch.server.config import ServerConfig

    older = _from_before_fingerprints(index_dir, tmp_path)
    config = ServerConfig(older)
    signed_in = bearer_header(config.token)
    with TestClient(create_app(config), base_url="http://127.0.0.1", headers=signed_in) as client:
        hits = client.get("/api/search", params={"q": "a photo of a cat", "k": 3}).json()["hits"]
        assert len(hits) == 3
        assert client.get("/api/duplicates").json()["groups_total"] == 2
        assert "fingerprint" not in client.get("/api/info").json()["columns"]
    # and `clipsearch repair` finds it intact: a part without the column is not damage
    from clipsearch.store.repair import repair_index

    report = repair_index(older)
    assert not report.committed and report.damaged == []


def test_a_chain_of_look_alikes_is_split_around_keepers():
    # 1 ~ 2 and 2 ~ 3 (burst shots, each a little different), but 1 and 3 are not the same
    # photo: one group of three would hold two different photos.
    alike = {(1, 2), (2, 3), (4, 5)}
    groups = duplicates._split_around_keepers(
        [3, 2, 1, 5, 4], order=lambda i: i, same_photo=lambda a, b: (a, b) in alike
    )
    assert groups == [[1, 2], [4, 5]]  # 3 is nobody's copy once 2 is taken by its keeper


def test_threshold_is_checked():
    with pytest.raises(ClipsearchError, match="threshold"):
        duplicates.find_duplicates(None, threshold=0)  # type: ignore[arg-type]


# -- the command ------------------------------------------------------------------------------


def test_cli_lists_groups_paths_json_and_a_page(index_dir, tmp_path):
    shown = run_cli("duplicates", "--index", str(index_dir))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("2 groups of duplicates, 5 redundant copies")
    assert "猫 コピー.jpg" in shown.stdout and "identical" in shown.stdout

    paths = run_cli("duplicates", "--index", str(index_dir), "--paths")
    listed = sorted(Path(line).name for line in paths.stdout.splitlines())
    assert listed == sorted(
        ["猫 コピー.jpg", "cat-q60.jpg", "cat-half.png", "cat-turned.jpg", "dog (1).jpg"]
    )
    assert paths.stderr == ""  # nothing but paths, for a pipeline

    page = tmp_path / "dups.html"
    as_json = run_cli("duplicates", "--index", str(index_dir), "--json", "--html", str(page))
    payload = json.loads(as_json.stdout)
    assert payload["threshold"] == duplicates.DEFAULT_THRESHOLD
    assert [len(g["images"]) for g in payload["groups"]] == [5, 2]
    assert payload["groups"][0]["images"][0]["keeper"] is True
    html = page.read_text(encoding="utf-8")
    assert "Group 2: 2 images" in html and html.count("data:image/") == 7

    none = run_cli("duplicates", "--index", str(index_dir), "--where", "width > 100000")
    assert none.returncode == 0 and none.stdout == "no duplicates found (threshold 0.9)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "width >"], "error: --where: invalid filter"),
        (["--threshold", "1.5"], "--threshold"),
        (["--json", "--paths"], "alternatives"),
    ],
)
def test_cli_bad_input_is_one_line(index_dir, args, message):
    result = run_cli("duplicates", "--index", str(index_dir), *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


# -- --min-score ------------------------------------------------------------------------------


def test_min_score_keeps_only_relevant_hits(index_dir, library):
    index = Index.open(index_dir)
    everything = index.search(image=library / "cat.jpg", k=20)
    assert len(everything) == 11  # every indexed image
    copies = index.search(image=library / "cat.jpg", k=20, min_score=0.95)
    assert {Path(h.path).name for h in copies} == {
        "cat.jpg", "猫 コピー.jpg", "cat-q60.jpg", "cat-half.png", "cat-turned.jpg"
    }  # fmt: skip
    assert all(h.score >= 0.95 for h in copies)
    assert len(index.search(image=library / "cat.jpg", k=2, min_score=0.95)) == 2  # k: at most
    assert index.search(image=library / "cat.jpg", k=20, min_score=1.01) == []

    result = run_cli(
        "query", "--image", str(library / "cat.jpg"), "--index", str(index_dir),
        "--min-score", "0.95", "-k", "20", "--json", "--local", "--warm-for", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 5


# -- in `clipsearch serve` --------------------------------------------------------------------


def test_the_api_answers_groups_with_image_urls(index_dir):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    from fastapi.testclient import TestClient

    from clipsearch.server.app import create_app
    from clipsearch.server.config import ServerConfig

    config = ServerConfig(index_dir, warm_up=False)
    signed_in = bearer_header(config.token)
    with TestClient(create_app(config), base_url="http://127.0.0.1", headers=signed_in) as client:
        answer = client.get("/api/duplicates").json()
        assert answer["groups_total"] == 2 and answer["threshold"] == 0.9
        cat = answer["groups"][0]
        assert [i["keeper"] for i in cat["images"]] == [True, False, False, False, False]
        assert client.get(cat["images"][1]["thumbnail_url"]).status_code == 200
        assert client.get("/api/duplicates", params={"limit": 1}).json()["groups_total"] == 2
        assert len(client.get("/api/duplicates", params={"limit": 1}).json()["groups"]) == 1
        scoped = client.get("/api/duplicates", params={"where": "path LIKE '%dog%'"}).json()
        assert [len(g["images"]) for g in scoped["groups"]] == [2]
        since = {"where": "mtime_ns >= epoch_ns(TIMESTAMP '2023-09-01')"}  # a date range
        dated = client.get("/api/duplicates", params=since).json()
        assert [len(g["images"]) for g in dated["groups"]] == [4]
        bad = client.get("/api/duplicates", params={"where": "width >"})
        assert bad.status_code == 400 and "where" in bad.json()["error"]
        assert client.get("/api/duplicates", params={"threshold": 2}).status_code == 422
        cat_id = cat["images"][0]["id"]
        relevant = client.get("/api/search", params={"like": cat_id, "k": 20, "min_score": 0.95})
        scores = [hit["score"] for hit in relevant.json()["hits"]]
        assert len(scores) == 5 and min(scores) >= 0.95
        assert relevant.json()["query"]["min_score"] == 0.95
        # Zero-shot tags written meanwhile: the kept answer for a filter on them is not reused.
        from clipsearch.zeroshot.classify import Prediction, write_tags

        dogs = scoped["groups"][0]["images"]
        for label, found in (("x", 0), ("y", 1)):
            write_tags(index_dir, [Prediction(i["path"], label, 1.0, id=i["id"]) for i in dogs])
            tagged = client.get("/api/duplicates", params={"where": "label = 'y'"}).json()
            assert tagged["groups_total"] == found
        page = client.get("/duplicates")
        assert page.status_code == 200 and "duplicates.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_duplicates_page_in_headless_chromium(index_dir, tmp_path):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    sync_playwright, chromium = browser_or_skip()
    process = subprocess.Popen(
        serve_command(index_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    problems: list[str] = []
    try:
        info = wait_for_server(index_dir, process, START_TIMEOUT)
        assert info is not None, process.communicate(timeout=5)[0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(login_url(info.url, info.token))
                page.click("text=Duplicates")
                wait_js(page, "() => document.querySelectorAll('.group').length === 2")
                wait_js(page, LOADED)
                assert "2 groups" in page.text_content("#status")
                first = page.locator(".group").first
                assert first.locator(".card").count() == 5
                assert first.locator(".card.keeper .name").text_content() == "cat.jpg"
                captions = first.locator(".card .meta").all_text_contents()
                assert "identical" in captions[1] and "128×128 · JPEG" in captions[0]
                assert first.locator(".card .name").nth(1).text_content() == "猫 コピー.jpg"
                page.screenshot(path=str(tmp_path / "duplicates-page.png"), full_page=True)
                print(f"\nscreenshot: {tmp_path / 'duplicates-page.png'}")

                page.fill("#where", "path LIKE '%dog%'")
                page.press("#where", "Enter")
                wait_js(page, "() => document.querySelectorAll('.group').length === 1")
                assert "where=" in page.url  # the view is a link one can share
                page.fill("#where", "width >")
                page.press("#where", "Enter")
                wait_js(page, "() => document.querySelector('#status').classList.contains('error')")
            finally:
                browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [p for p in problems if "400 (Bad Request)" not in p] == []


LOADED = """() => {
  const images = Array.from(document.querySelectorAll('.card img'));
  return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""
