"""A live `clipsearch serve` on 127.0.0.1: `clipsearch query` through it, raw HTTP requests,
and the web page in a real headless Chromium (skipped with the reason when unavailable)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")

from clipsearch.errors import ClipsearchError
from clipsearch.server.auth import bearer_header, login_url
from clipsearch.server.client import find_server
from clipsearch.server.discovery import ServerInfo, write_info
from clipsearch.store.layout import SERVER_FILE

from .conftest import (
    CHROMIUM_ARGS,
    MODEL_MODULES,
    START_TIMEOUT,
    browser_or_skip,
    run_cli_watching_imports,
    serve_command,
    wait_for_server,
    wait_js,
)
from .serve_index import COLORS, build, color, write_image


class Live:
    def __init__(self, process: subprocess.Popen, info: ServerInfo, photos: Path):
        self.process, self.url, self.photos = process, info.url, photos
        self.index_dir, self.token = Path(info.index), info.token

    def raw(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        """GET ``path`` exactly as written (no client-side normalization of '..'), with the
        server's token."""
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        headers = {"Host": host} if host else {}
        headers.update(bearer_header(self.token))
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        status, body = response.status, response.read()
        connection.close()
        return status, body


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    photos = root / "photos"
    for c, name in enumerate(COLORS):
        for i in range(4):
            write_image(photos / name / f"{name} {i}.png", color(name, i), 10 * c + i)
    index_dir = build(photos, root / "index")
    process = subprocess.Popen(
        serve_command(index_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    info = wait_for_server(index_dir, process, START_TIMEOUT)
    if info is None:
        process.kill()
        pytest.fail(f"the server did not start: {process.communicate()[0]}")
    yield Live(process, info, photos)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def run_query(
    *args: str, cwd: Path | None = None, token: str | None = None
) -> tuple[list[dict], bool]:
    """`clipsearch query ... --json` in a fresh process: (rows, whether it loaded a model);
    ``token`` in $CLIPSEARCH_TOKEN, as a script would give it."""
    env = {"CLIPSEARCH_TOKEN": token} if token else None
    result, heavy = run_cli_watching_imports("query", *args, "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), bool(heavy & MODEL_MODULES)


def test_query_answers_through_the_running_server(live):
    rows, model_loaded = run_query("a photo", "-k", "4", "--index", str(live.index_dir))
    assert not model_loaded  # the server embedded the text: no model in this process
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    local, model_local = run_query("a photo", "-k", "4", "--index", str(live.index_dir), "--local")
    assert model_local
    assert [(r["id"], r["path"]) for r in rows] == [(r["id"], r["path"]) for r in local]
    for a, b in zip(rows, local, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_query_like_an_indexed_image_through_the_server(live, tmp_path):
    blue = live.photos / "blue" / "blue 3.png"
    server = ["--server", live.url]
    first, _ = run_query("--image", str(blue), "-k", "1", *server, cwd=tmp_path, token=live.token)
    like = ["--like", str(first[0]["id"]), "-k", "3"]
    # No index in tmp_path: only the server can answer this one.
    rows, model_loaded = run_query(*like, *server, cwd=tmp_path, token=live.token)
    assert not model_loaded and rows[0]["id"] == first[0]["id"] and rows[0]["path"] == str(blue)
    local, _ = run_query(*like, "--index", str(live.index_dir), "--local")
    assert [r["id"] for r in rows] == [r["id"] for r in local]


def test_query_by_image_and_explicit_server_url(live, tmp_path):
    query = live.photos / "blue" / "blue 3.png"
    rows, model_loaded = run_query(
        "--image", str(query), "-k", "2", "--server", live.url, cwd=tmp_path, token=live.token
    )
    assert not model_loaded
    assert rows[0]["path"] == str(query) and rows[0]["score"] == pytest.approx(1.0, abs=2e-3)


def test_a_stale_server_file_is_ignored(live, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(live.index_dir, copy, ignore=shutil.ignore_patterns(SERVER_FILE))
    assert find_server(copy) is None  # no file
    (copy / SERVER_FILE).write_text("{not json")
    assert find_server(copy) is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    then = "2020-01-01T00:00:00+00:00"
    write_info(copy, ServerInfo(live.url, int(dead), str(copy), then, live.token))
    assert find_server(copy) is None  # its process is gone
    # Alive (this test's pid) but nothing listens at the URL any more.
    closed = "http://127.0.0.1:9"
    write_info(copy, ServerInfo(closed, os.getpid(), str(copy), then, live.token))
    assert find_server(copy) is None
    # A live server, but for another index: not used for this one.
    write_info(copy, ServerInfo(live.url, os.getpid(), str(copy), then, live.token))
    assert find_server(copy) is None
    assert find_server(live.index_dir) is not None
    with pytest.raises(ClipsearchError, match="serves"):  # --server URL --index OTHER
        find_server(copy, live.url, index_given=True)
    given = find_server(copy, live.url, index_given=False, token=live.token)
    assert given.index == str(live.index_dir)
    rows, model_loaded = run_query("a photo", "-k", "3", "--index", str(copy))
    assert model_loaded and len(rows) == 3  # searched locally, quietly


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../../../etc/passwd",
        "/api/images/../../../../../../etc/passwd",
        "/api/images/1/../../../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "//etc/passwd",
        "/static//etc/passwd",
        "/static/../server/served_index.py",
        "/api/images/1/file%00.png",
    ],
)
def test_raw_traversal_requests_get_no_file(live, path):
    status, body = live.raw(path)
    assert 400 <= status < 500, (path, status)
    assert b"root:" not in body and b"import" not in body


def test_the_login_redirect_stays_on_this_server(live):
    parts = urlsplit(live.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", f"//evil.example/x?token={live.token}")  # no header: a browser
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 303 and response.getheader("location") == "/evil.example/x"


def test_the_live_server_refuses_foreign_host_names(live):
    status, body = live.raw("/api/info", host="attacker.example:8000")
    assert status == 400 and json.loads(body)["error"].startswith("host ")
    assert live.raw("/api/info", host="localhost")[0] == 200


# -- the page in a real browser ---------------------------------------------------------------


THUMBNAILS_LOADED = """() => {
  const images = Array.from(document.querySelectorAll('.card img'));
  return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


def test_the_page_in_headless_chromium(live, tmp_path):
    sync_playwright, chromium = browser_or_skip()
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(login_url(live.url, live.token))
            wait_js(page, "() => document.querySelector('#info').textContent.includes('12 images')")

            page.fill("#q", "a red photo")
            page.press("#q", "Enter")
            wait_js(page, "() => document.querySelectorAll('.card').length === 12")
            wait_js(page, THUMBNAILS_LOADED)
            assert "12 results" in page.text_content("#status")

            third = page.locator(".card").nth(2)
            like_id = third.get_attribute("data-id")
            third.locator(".like").click()
            wait_js(page, f"() => document.querySelector('.card')?.dataset.id === '{like_id}'")
            assert page.text_content(".card .score") == "1.000"
            assert page.is_visible("#query-image") and "like=" in page.url
            wait_js(page, THUMBNAILS_LOADED)
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")

            page.locator(".card .thumb").first.click()
            wait_js(page, "() => document.querySelector('#viewer').open")
            wait_js(page, "() => document.querySelector('#viewer-img').naturalWidth > 0")
            page.click("#viewer-close")

            upload = live.photos / "green" / "green 1.png"
            page.set_input_files("#file", str(upload))
            wait_js(
                page, "() => document.querySelector('.card .name')?.title.endsWith('green 1.png')"
            )
            page.fill("#where", "width >")
            page.press("#where", "Enter")
            wait_js(page, "() => document.querySelector('#status').classList.contains('error')")
            assert "invalid filter" in page.text_content("#status")
        finally:
            browser.close()
    unexpected = [p for p in problems if "400 (Bad Request)" not in p]  # the bad filter above
    assert unexpected == []


# -- another account on the same machine ------------------------------------------------------

# Run by another user with the system's Python (the test's own may sit in a folder that user
# cannot enter): every request, without the token and then with it, and the server file.
OUTSIDER = r"""
import http.client, json, sys, urllib.parse
url, token, image_id, server_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
parts = urllib.parse.urlsplit(url)
boundary = "b0undary"
def part(name, value, extra=""):
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'
    return head.encode() + b"\r\n" + value + b"\r\n"
def form(fields):
    body = b"".join(part(name, value.encode()) for name, value in fields)
    image = bytes.fromhex(sys.argv[5])
    body += part("image", image, '; filename="q.png"\r\nContent-Type: image/png')
    return body + f"--{boundary}--\r\n".encode()
doors = {
    "search": ("GET", "/api/search?q=red&k=3", None),
    "thumbnail": ("GET", f"/api/images/{image_id}/thumbnail", None),
    "file": ("GET", f"/api/images/{image_id}/file", None),
    "upload": ("POST", "/api/search", form([("k", "3")])),
    "classify": ("GET", f"/api/classify?like={image_id}&labels=red,blue", None),
    "classify upload": ("POST", "/api/classify", form([("labels", "red,blue")])),
    "info": ("GET", "/api/info", None),
    "page": ("GET", "/", None),
}
answers = {}
for signed_in in (False, True):
    for name, (method, path, body) in doors.items():
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if signed_in else {}
        if body is not None:
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        key = f"{'with' if signed_in else 'without'} token: {name}"
        answers[key] = [response.status, len(data), data[:2000].decode("latin-1")]
try:
    open(server_file).read()
    answers["server.json"] = "read"
except OSError as exc:
    answers["server.json"] = type(exc).__name__
print(json.dumps(answers))
"""


def test_another_account_gets_nothing_without_the_token(live):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("acting as another user needs root (setpriv --reuid)")
    system_python, setpriv = Path("/usr/bin/python3"), shutil.which("setpriv")
    if not system_python.exists() or setpriv is None:
        pytest.skip("needs /usr/bin/python3 and setpriv(1) to run as another user")
    red = live.photos / "red" / "red 0.png"
    rows, _ = run_query("--image", str(red), "-k", "1", "--index", str(live.index_dir))
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [str(system_python), "-I", "-c", OUTSIDER, live.url, live.token]
    command += [str(rows[0]["id"]), str(live.index_dir / SERVER_FILE), red.read_bytes().hex()]
    result = subprocess.run([*nobody, *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers.pop("server.json") == "PermissionError"  # nor can it read the token
    refused = {k: v for k, v in answers.items() if k.startswith("without")}
    assert len(refused) == 8
    for name, (status, _, body) in refused.items():
        assert status == 401, (name, body)
        assert json.loads(body)["error"].startswith("this clipsearch server needs its token")
        assert str(live.photos) not in body
    # The control: the same account, the same requests, with the token: the door opens.
    for name, (status, _, body) in answers.items():
        if name.startswith("with "):
            assert status == 200, (name, body)
    assert answers["with token: file"][1] == red.stat().st_size


def test_a_server_named_by_url_needs_its_token(live, tmp_path):
    query = ["query", "a photo", "--server", live.url, "--json"]
    refused, _ = run_cli_watching_imports(*query, cwd=tmp_path, env={"CLIPSEARCH_TOKEN": ""})
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --token: the server at")
    assert "refused to answer without its token" in refused.stderr
    wrong, _ = run_cli_watching_imports(*query, "--token", "w" * 43, cwd=tmp_path)
    assert wrong.returncode == 2 and "refused the token given" in wrong.stderr


def test_stopping_the_server_removes_server_json(live):
    live.process.send_signal(signal.SIGTERM)
    assert live.process.wait(timeout=30) == 0
    assert not (live.index_dir / SERVER_FILE).exists()
