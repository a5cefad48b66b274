"""The HTTP API of `clipsearch serve`, through FastAPI's TestClient, on a real small index:
the tiny model, real PNG files, FAISS, DuckDB and Parquet; nothing mocked."""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
try:
    from fastapi.testclient import TestClient
except (ImportError, RuntimeError) as exc:  # Starlette's TestClient needs httpx2 (or httpx)
    pytest.skip(f"FastAPI's TestClient is unavailable: {exc}", allow_module_level=True)

from clipsearch.server.app import create_app
from clipsearch.server.auth import bearer_header
from clipsearch.server.config import ServerConfig
from clipsearch.server.served_index import ServedIndex

from .conftest import TINY
from .serve_index import COLORS, build, color, write_image

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "photos"
    for c, name in enumerate(COLORS):
        for i in range(4):
            width = 64 + 50 * (i % 2)
            write_image(root / name / f"{name} {i}.png", color(name, i), 10 * c + i, width)
    return root


@pytest.fixture(scope="module")
def index_dir(photos) -> Path:
    return build(photos, photos.parent / "index")


@pytest.fixture(scope="module")
def served(index_dir) -> ServedIndex:
    served = ServedIndex(ServerConfig(index_dir))
    served.warm_up()
    return served


def make_client(served: ServedIndex, signed_in: bool = True, **options) -> TestClient:
    """A client of a new app over ``served``; it sends the app's token unless not signed in."""
    config = ServerConfig(served.index_dir, warm_up=False, **options)
    headers = bearer_header(config.token) if signed_in else {}
    return TestClient(create_app(config, served), base_url=BASE, headers=headers)


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return make_client(served)


def hits(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def id_of(client: TestClient, path: Path) -> int:
    found = hits(client.get("/api/search", params={"q": "x", "k": 100}))
    return next(h["id"] for h in found if h["path"] == str(path))


def assert_json_error(response, status: int, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and fragment in body["error"]
    assert "Traceback" not in response.text
    return body


# -- search ----------------------------------------------------------------------------------


def test_text_search_returns_ids_scores_paths_and_urls(client):
    response = client.get("/api/search", params={"q": "a photo", "k": 5, "columns": "width"})
    found = hits(response)
    assert [h["rank"] for h in found] == [1, 2, 3, 4, 5]
    assert len({h["id"] for h in found}) == 5
    assert [h["score"] for h in found] == sorted((h["score"] for h in found), reverse=True)
    for hit in found:
        assert Path(hit["path"]).is_file() and hit["columns"]["width"] in (64, 114)
        assert hit["thumbnail_url"].startswith(f"/api/images/{hit['id']}/thumbnail?v=")
        assert hit["image_url"].startswith(f"/api/images/{hit['id']}/file?v=")
    assert response.json()["snapshot"] == 1


def test_an_uploaded_image_finds_its_indexed_file_first(client, photos):
    query = photos / "green" / "green 2.png"
    response = client.post(
        "/api/search", files={"image": ("q.png", query.read_bytes(), "image/png")}, data={"k": "3"}
    )
    found = hits(response)
    assert found[0]["path"] == str(query)
    assert found[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert response.json()["query"]["images"] == ["q.png"]


def test_more_like_this_by_id_uses_the_stored_embedding(client, photos):
    target = id_of(client, photos / "blue" / "blue 1.png")
    found = hits(client.get("/api/search", params={"like": target, "k": 4}))
    assert found[0]["id"] == target and found[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_combined_query_mixes_text_and_image(client, photos):
    target = id_of(client, photos / "red" / "red 0.png")
    alone = hits(client.get("/api/search", params={"like": target, "k": 12}))
    mixed = hits(client.get("/api/search", params={"like": target, "q": "3:ocean", "k": 12}))
    assert mixed[0]["score"] < 0.99 and [h["id"] for h in mixed] != [h["id"] for h in alone]
    upload = (photos / "red" / "red 0.png").read_bytes()
    both = client.post(
        "/api/search",
        files={"image": ("r.png", upload, "image/png")},
        data={"q": ["3:ocean"], "k": "12"},
    )
    assert [h["id"] for h in hits(both)][:3] == [h["id"] for h in mixed][:3]


def test_where_filters_before_ranking(client):
    params = {"q": "x", "k": 50, "where": "path LIKE '%/blue/%'"}
    found = hits(client.get("/api/search", params=params))
    assert len(found) == 4 and all("/blue/" in h["path"] for h in found)
    wide = hits(client.get("/api/search", params={"q": "x", "k": 3, "where": "width > 100"}))
    assert len(wide) == 3
    assert hits(client.get("/api/search", params={"q": "x", "where": "width > 10000"})) == []


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("id IN (SELECT 1)", "subqueries are not allowed"),
        ("read_text('/etc/passwd') IS NOT NULL", "read_text() is not allowed"),
        ("length((SELECT content FROM read_text('/etc/passwd'))) > 0", "subqueries"),
        ("1=1; COPY (SELECT 1) TO '{index}/evil.csv'", "one predicate only"),
        ("1=1 UNION SELECT 1", "only a predicate"),
        ("getenv('HOME') = ''", "getenv() is not allowed"),
        ("width >", "syntax error"),
        ("widht > 1", "no column widht (did you mean width?); the columns are id, path"),
    ],
)
def test_where_refuses_anything_but_a_predicate(client, index_dir, where, fragment):
    response = client.get("/api/search", params={"q": "x", "where": where.format(index=index_dir)})
    assert_json_error(response, 400, fragment)
    assert not (index_dir / "evil.csv").exists()


def test_k_beyond_the_index_returns_everything(client):
    assert len(hits(client.get("/api/search", params={"q": "x", "k": 1000}))) == 12


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"q": "x", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "x", "k": "ten"}, 422, "k:"),
        ({"q": "x", "k": 100000}, 422, "k:"),
        ({}, 400, "empty query"),
        ({"q": "   "}, 400, "empty query term"),
        ({"q": "x", "columns": "widht"}, 400, "unknown catalog column(s) widht"),
        ({"q": "x", "columns": "embedding"}, 400, "unknown catalog column(s) embedding"),
        ({"like": 987654}, 404, "no image with id 987654"),
        ({"like": "../etc/passwd"}, 422, "like"),
        ({"like": 2**64}, 422, "like"),  # beyond int64: no id, and no 500
        ({"q": ["beach", "-beach"]}, 400, "cancel each other out"),
    ],
)
def test_bad_search_requests_are_4xx_json(client, params, status, fragment):
    assert_json_error(client.get("/api/search", params=params), status, fragment)


def test_unknown_routes_and_methods_are_json_too(client):
    assert_json_error(client.get("/api/nothing"), 404, "Not Found")
    assert_json_error(client.delete("/api/search"), 405, "Method Not Allowed")
    assert_json_error(client.post("/api/search", data={"q": "x"}), 422, "image")


# -- uploads --------------------------------------------------------------------------------


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_uploads_are_refused(client):
    def post(data: bytes, name: str = "q.png"):
        return client.post("/api/search", files={"image": (name, data, "image/png")})

    assert_json_error(post(b"not an image at all"), 400, "cannot read 'q.png': not an image")
    assert_json_error(post(b""), 400, "is empty")
    assert_json_error(post(png_bytes(64, 64)[:60]), 400, "cannot read")
    many = [("image", (f"{i}.png", png_bytes(8, 8), "image/png")) for i in range(9)]
    assert_json_error(client.post("/api/search", files=many), 400, "at most 8 images")


def test_oversized_uploads_and_pixel_bombs_get_413(served):
    small = make_client(served, max_upload_bytes=20_000, max_pixels=1_000_000)
    big = os.urandom(200_000)
    response = small.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert_json_error(response, 413, "request body larger than")

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 10_000

    streamed = small.post(
        "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert_json_error(streamed, 413, "request body larger than")
    # A small file that declares 1200x1200 = 1.44 MP is refused before decoding.
    bomb = png_bytes(1200, 1200)
    assert len(bomb) < 20_000
    response = small.post("/api/search", files={"image": ("bomb.png", bomb, "image/png")})
    assert_json_error(response, 413, "too many pixels")


# -- images, thumbnails, files ----------------------------------------------------------------


def test_image_info_has_catalog_columns_but_no_embedding(client, photos):
    target = id_of(client, photos / "red" / "red 1.png")
    response = client.get(f"/api/images/{target}")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["path"] == str(photos / "red" / "red 1.png")
    assert info["columns"]["width"] == 114 and info["columns"]["format"] == "PNG"
    assert info["columns"]["indexed_at"].endswith("Z") and "embedding" not in info["columns"]
    assert_json_error(client.get("/api/images/424242"), 404, "no image with id 424242")
    assert_json_error(client.get(f"/api/images/{2**64}"), 422, "image_id")


def test_thumbnails_are_jpeg_cached_on_disk_with_cache_headers(client, index_dir):
    hit = hits(client.get("/api/search", params={"q": "x", "k": 1}))[0]
    response = client.get(hit["thumbnail_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    cached = list((index_dir / "thumbnails").glob(f"{hit['id']}-256-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    etag = response.headers["etag"]
    again = client.get(hit["thumbnail_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    unversioned = client.get(f"/api/images/{hit['id']}/thumbnail")
    assert unversioned.headers["cache-control"] == "private, no-cache"
    assert client.get(f"/api/images/{hit['id']}/thumbnail?size=1024").status_code == 200
    assert_json_error(client.get(f"/api/images/{hit['id']}/thumbnail?size=999"), 400, "size")


def test_the_original_file_is_served_byte_for_byte(client):
    hit = hits(client.get("/api/search", params={"q": "x", "k": 1}))[0]
    response = client.get(hit["image_url"])
    assert response.status_code == 200
    assert response.content == Path(hit["path"]).read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("inline; filename*=UTF-8''")
    assert response.headers["etag"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "/api/images/..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images/-1/file",
        "/api/images/1.5/file",
        "/api/images/1/file/..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fserved_index.py",
        "/static/%2fetc%2fpasswd",
        "/%2fetc%2fpasswd",
    ],
)
def test_path_traversal_attempts_get_4xx_and_no_file(client, url):
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code)
    assert b"root:" not in response.content and b"import" not in response.content


def test_a_file_replaced_by_a_symlink_is_not_served(served, tmp_path):
    root = tmp_path / "photos"
    inside = write_image(root / "inside.png", (10, 200, 10), 1)
    write_image(root / "other.png", (10, 10, 200), 2)
    secret = write_image(tmp_path / "private" / "secret.png", (200, 10, 10), 3)
    index_dir = build(root, tmp_path / "index")
    local = make_client(ServedIndex(ServerConfig(index_dir)))
    target = id_of(local, inside)
    assert local.get(f"/api/images/{target}/file").status_code == 200
    # Swap the indexed file for a symlink to a private file with the same size and mtime.
    shutil.copyfile(inside, secret)
    stat = inside.stat()
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    inside.unlink()
    inside.symlink_to(secret)
    for kind in ("file", "thumbnail"):
        response = local.get(f"/api/images/{target}/{kind}")
        assert_json_error(response, 403, "symbolic link")
    # A file changed in place (same path, other content) is not served either.
    os.utime(root / "other.png", ns=(1, 1))
    other = id_of(local, root / "other.png")
    assert_json_error(local.get(f"/api/images/{other}/file"), 404, "changed since it was indexed")


def test_symlinks_indexed_on_purpose_need_follow_symlinks(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "plain.png", (10, 200, 10), 1)
    outside = write_image(tmp_path / "elsewhere" / "linked.png", (200, 10, 10), 2)
    (root / "link.png").symlink_to(outside)
    index_dir = build(root, tmp_path / "index", follow_symlinks=True)
    served = ServedIndex(ServerConfig(index_dir))
    strict, relaxed = make_client(served), make_client(served, follow_symlinks=True)
    target = id_of(strict, root / "link.png")
    assert_json_error(strict.get(f"/api/images/{target}/file"), 403, "symbolic link")
    response = relaxed.get(f"/api/images/{target}/file")
    assert response.status_code == 200 and response.content == outside.read_bytes()
    # Pointed elsewhere after indexing: not the indexed file any more.
    (root / "link.png").unlink()
    (root / "link.png").symlink_to(root / "plain.png")
    assert_json_error(relaxed.get(f"/api/images/{target}/file"), 404, "changed since")


# -- image → text, classification, facts --------------------------------------------------------


def test_image_to_text_against_a_stored_collection(client, served, index_dir, photos, tmp_path):
    from clipsearch.texts import TextCollection

    captions = tmp_path / "captions.txt"
    captions.write_text("a red square\na green field\na blue sky\n")
    TextCollection.build(captions, index_dir.parent / "captions", served.model)
    listed = client.get("/api/texts").json()
    assert {"name": "captions", "count": 3, "usable": True} in listed
    target = id_of(client, photos / "red" / "red 0.png")
    params = {"like": target, "collection": "captions", "k": 3}
    response = client.get("/api/texts/search", params=params)
    assert response.status_code == 200, response.text
    found = response.json()["hits"]
    assert sorted(h["text"] for h in found) == ["a blue sky", "a green field", "a red square"]
    assert [h["rank"] for h in found] == [1, 2, 3]
    upload = (photos / "red" / "red 0.png").read_bytes()
    posted = client.post(
        "/api/texts/search",
        files={"image": ("q.png", upload, "image/png")},
        data={"collection": "captions", "k": "3"},
    )
    assert [h["id"] for h in posted.json()["hits"]] == [h["id"] for h in found]
    missing = {"like": target, "collection": "nothing"}
    assert_json_error(client.get("/api/texts/search", params=missing), 404, "no text collection")
    escape = {"like": target, "collection": "../captions"}
    assert_json_error(client.get("/api/texts/search", params=escape), 400, "bare NAME")
    image_index = {"like": target, "collection": index_dir.name}
    assert_json_error(client.get("/api/texts/search", params=image_index), 400, "image index")


def test_zero_shot_classify_by_id_and_upload(client, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    target = id_of(client, photos / "green" / "green 0.png")
    params = {"like": target, "labels": "red,green,blue", "templates": "simple", "top": 3}
    response = client.get("/api/classify", params=params)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["label"] == result["top"][0]["label"] and len(result["top"]) == 3
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1.0, abs=1e-4)
    upload = (photos / "green" / "green 0.png").read_bytes()
    posted = client.post(
        "/api/classify",
        files={"image": ("g.png", upload, "image/png")},
        data={"labels": ["red", "green", "blue"], "templates": "simple", "top": "3"},
    )
    assert posted.json()["label"] == result["label"]
    one = {"like": target, "labels": "red"}
    assert_json_error(client.get("/api/classify", params=one), 400, "at least two labels")
    path = {"like": target, "labels": "a,b", "templates": "/etc/passwd"}
    assert_json_error(client.get("/api/classify", params=path), 400, "unknown template set")


def test_info_describes_model_counts_and_vector_index(client):
    info = client.get("/api/info").json()
    assert info["model"]["spec"] == TINY and info["model"]["dim"] == 128
    assert info["counts"]["images"] == 12
    assert info["vector_index"]["kind"] == "flat" and info["vector_index"]["count"] == 12
    assert info["vector_index"]["recall_at_10"] == 1.0
    assert "width" in info["columns"] and "embedding" not in info["columns"]
    assert info["limits"]["max_upload_bytes"] > 0
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/classify", "/api/texts/search", "/api/info"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="grid"' in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_foreign_host_headers_and_cross_origin_reads_are_refused(client, served):
    rebound = client.get("/api/info", headers={"host": "evil.example"})
    assert_json_error(rebound, 400, "host 'evil.example' is not served here")
    cross = client.get("/api/info", headers={"origin": "https://evil.example"})
    assert cross.status_code == 200 and "access-control-allow-origin" not in cross.headers
    allowed = make_client(served, cors_origins=("https://ok.example",))
    answer = allowed.get("/api/info", headers={"origin": "https://ok.example"})
    assert answer.headers["access-control-allow-origin"] == "https://ok.example"


def test_an_unexpected_error_is_a_bare_500(served, monkeypatch):
    config = ServerConfig(served.index_dir, warm_up=False)
    app = create_app(config, served)
    broken = TestClient(
        app, base_url=BASE, raise_server_exceptions=False, headers=bearer_header(config.token)
    )

    def fail(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(served.index, "search", fail)
    response = broken.get("/api/search", params={"q": "x"})
    assert_json_error(response, 500, "internal server error")
    assert "secret internals" not in response.text


# -- new snapshots, concurrency ------------------------------------------------------------------


def test_a_new_snapshot_is_picked_up_while_queries_keep_working(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"old {i}.png", (200, 200, 20), i)
    index_dir = build(root, tmp_path / "index")
    live = make_client(ServedIndex(ServerConfig(index_dir)))
    assert len(hits(live.get("/api/search", params={"q": "x", "k": 100}))) == 3
    for i in range(4):
        write_image(root / f"new {i}.png", (20, 200, 200), 10 + i)
    failures: list[str] = []
    update = threading.Thread(target=build, args=(root, index_dir))
    update.start()
    queries = 0
    while update.is_alive() or queries < 5:
        response = live.get("/api/search", params={"q": "x", "k": 100, "columns": "width"})
        queries += 1
        if response.status_code != 200 or len(response.json()["hits"]) not in (3, 7):
            failures.append(response.text)
    update.join()
    assert failures == []
    found = hits(live.get("/api/search", params={"q": "x", "k": 100}))
    assert len(found) == 7 and any("new 2.png" in h["path"] for h in found)
    info = live.get("/api/info").json()
    assert info["snapshot"] == 2 and info["counts"]["images"] == 7
    fresh = next(h for h in found if "new 2.png" in h["path"])
    assert live.get(fresh["thumbnail_url"]).status_code == 200
    # Zero-shot tags written beside the catalog become filterable at once, too.
    from clipsearch.zeroshot.classify import Prediction, write_tags

    tagged = [Prediction(h["path"], "sunny", 0.9, id=h["id"]) for h in found[:2]]
    write_tags(index_dir, tagged)
    params = {"q": "x", "k": 100, "where": "label = 'sunny'", "columns": "label"}
    labelled = hits(live.get("/api/search", params=params))
    assert sorted(h["id"] for h in labelled) == sorted(p.id for p in tagged)
    assert all(h["columns"]["label"] == "sunny" for h in labelled)


def test_thumbnail_cache_stays_within_its_bound(served, tmp_path):
    from clipsearch.server.files import FILE_COLUMNS
    from clipsearch.server.thumbnails import ThumbnailCache

    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=6_000)
    rows = served.current().rows(list(range(12)), ["id", *FILE_COLUMNS])
    sizes = [len(cache.get(row, 256)[0]) for row in rows.values()]
    assert sum(sizes) > 6_000 and cache.size_on_disk() <= 6_000
    newest = max((tmp_path / "thumbs").glob("*.jpg"), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name.startswith(f"{list(rows)[-1]}-256-")


def test_serve_help_loads_no_heavy_module():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from clipsearch.cli import serve\n"
        "from clipsearch.cli.main import app, main\n"
        "if not any(c.name == 'serve' for c in app.registered_commands):\n"
        "    app.command('serve')(serve.serve)\n"
        "sys.argv = ['clipsearch', 'serve', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = {'torch', 'open_clip', 'faiss', 'duckdb', 'numpy', 'fastapi', 'uvicorn'}\n"
        "print('HEAVY', sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout and "HEAVY []" in result.stdout


# -- who may call it ------------------------------------------------------------------------


def every_door(image_id: int, upload: bytes) -> list[tuple[str, str, dict]]:
    """One request to each kind of route: searches, images, uploads, classify, the pages."""
    png = {"image": ("q.png", upload, "image/png")}
    return [
        ("GET", "/api/health", {}),
        ("GET", "/api/info", {}),
        ("GET", "/api/search", {"params": {"q": "red", "k": 3}}),
        ("POST", "/api/search", {"data": {"k": "3"}, "files": png}),
        ("GET", f"/api/images/{image_id}", {}),
        ("GET", f"/api/images/{image_id}/thumbnail", {}),
        ("GET", f"/api/images/{image_id}/file", {}),
        ("GET", "/api/classify", {"params": {"like": image_id, "labels": "red,blue"}}),
        ("POST", "/api/classify", {"data": {"labels": "red,blue"}, "files": png}),
        ("GET", "/api/duplicates", {}),
        ("GET", "/api/texts", {}),
        ("GET", "/", {}),
        ("GET", "/duplicates", {}),
        ("GET", "/docs", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/static/app.js", {}),
    ]


def test_without_the_token_no_route_answers(client, served, photos):
    red = photos / "red" / "red 0.png"
    image_id = id_of(client, red)
    doors = every_door(image_id, red.read_bytes())
    # The control: the signed-in client gets through every door.
    for method, path, options in doors:
        answer = client.request(method, path, **options)
        assert answer.status_code == 200, (method, path, answer.text)
    outsider = make_client(served, signed_in=False)
    wrong = {"authorization": "Bearer " + "x" * 43}
    for headers in ({}, wrong, {"authorization": "Basic dXNlcjpwYXNz"}):
        for method, path, options in doors:
            answer = outsider.request(method, path, headers=headers, **options)
            body = assert_json_error(answer, 401, "needs its token")
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert set(body) == {"error", "status"}  # no path, no score, no pixel
            assert str(photos) not in answer.text


def test_the_token_in_a_url_only_logs_a_browser_in(served):
    config = ServerConfig(served.index_dir, warm_up=False)
    browser = TestClient(create_app(config, served), base_url=BASE, follow_redirects=False)
    # An API call with ?token= is refused: tokens in URLs end up in logs and histories.
    refused = browser.get("/api/search", params={"q": "red", "token": config.token})
    assert_json_error(refused, 401)
    assert_json_error(browser.get("/", params={"token": "y" * 43}), 401)  # a wrong one
    login = browser.get("/duplicates", params={"token": config.token, "where": "width > 1"})
    assert login.status_code == 303
    assert login.headers["location"] == "/duplicates?where=width+%3E+1"  # without the token
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"clipsearch-token-80={config.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # The browser keeps the cookie (httpx's jar, as a browser's): pages and the API answer.
    assert browser.get("/duplicates").status_code == 200
    assert hits(browser.get("/api/search", params={"q": "red", "k": 2}))
    # A cookie of another port (another server on this machine) is not this server's.
    stranger = TestClient(create_app(config, served), base_url=BASE)
    stranger.cookies.set("clipsearch-token-8001", config.token)
    assert_json_error(stranger.get("/api/info"), 401)


def test_a_token_can_be_given_and_auth_turned_off_by_name(served):
    given = "a-token-of-the-users-own-choosing"
    chosen = TestClient(
        create_app(ServerConfig(served.index_dir, warm_up=False, token=given), served),
        base_url=BASE,
    )
    assert chosen.get("/api/info", headers=bearer_header(given)).status_code == 200
    assert_json_error(chosen.get("/api/info"), 401)
    open_door = make_client(served, signed_in=False, require_token=False)
    assert open_door.get("/api/info").status_code == 200


@pytest.mark.parametrize(
    ("token", "fragment"),
    [("short", "at least 16 characters"), ("a token with spaces!!", "only letters")],
)
def test_a_bad_token_is_one_line(token, fragment, tmp_path):
    from .conftest import run_cli

    result = run_cli("serve", "--index", str(tmp_path / "none"), "--token", token)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --token:") and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_lists_its_endpoints(client):
    listed = client.get("/api").json()
    pairs = {(e["method"], e["path"]) for e in listed["endpoints"]}
    assert {("GET", "/api/search"), ("POST", "/api/search"), ("GET", "/api/health")} <= pairs
    assert listed["openapi"] == "/openapi.json"
    schema_paths = set(client.get("/openapi.json").json()["paths"])
    assert {path for _, path in pairs} == schema_paths


def test_an_upload_refuses_parameters_in_the_query_string(client, photos):
    upload = {"image": ("q.png", (photos / "red" / "red 0.png").read_bytes(), "image/png")}
    answer = client.post("/api/search", params={"k": 2}, files=upload)
    assert_json_error(answer, 400, "form fields, not in the query string (k)")
    assert len(hits(client.post("/api/search", data={"k": "2"}, files=upload))) == 2
