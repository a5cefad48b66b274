"""A small client for a running ``clipsearch serve``: what ``clipsearch query`` uses to skip
loading the model. Standard library only, so a query through a server imports no torch.

Every request carries the server's token (``server.json`` has it; for a server named by
URL the caller passes it). Anything unexpected (no server, a stale ``server.json``, a
refused token, a timeout, an error status) raises ``ServerUnavailable``, and the caller
searches locally instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError
from clipsearch.server.auth import TOKEN_ENV, bearer_header
from clipsearch.server.discovery import process_alive, read_info

if TYPE_CHECKING:
    import urllib.request

HEALTH_TIMEOUT = 1.0
QUERY_TIMEOUT = 60.0


@cache
def _opener() -> urllib.request.OpenerDirector:
    # Imported here: urllib.request costs a cold query ~10 ms when no server runs.
    import urllib.request

    # Loopback traffic must not go through an HTTP proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerUnavailable(Exception):
    """The server cannot answer this request; search locally."""


class TokenRefused(ServerUnavailable):
    """The server wants a token this client does not have (401)."""


def _request(request: urllib.request.Request, timeout: float) -> Any:
    try:
        with _opener().open(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as exc:  # urllib's URLError and HTTPError are OSErrors
        if getattr(exc, "code", None) == 401:
            raise TokenRefused(str(exc)) from None
        raise ServerUnavailable(str(exc)) from None


def _multipart(
    fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, Path]]
) -> tuple[bytes, str]:
    import mimetypes
    import urllib.parse
    import uuid

    boundary = f"clipsearch-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode("utf-8")
            + b"\r\n"
        )
    for name, path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:  # the local search reports it properly
            raise ServerUnavailable(str(exc)) from None
        filename = urllib.parse.quote(path.name)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class ServerClient:
    url: str
    health: dict[str, Any]
    token: str | None = None

    @classmethod
    def connect(
        cls, url: str, token: str | None = None, timeout: float = HEALTH_TIMEOUT
    ) -> ServerClient:
        import urllib.request

        url = url.rstrip("/")
        request = urllib.request.Request(f"{url}/api/health", headers=bearer_header(token))
        health = _request(request, timeout)
        if not isinstance(health, dict) or health.get("status") != "ok":
            raise ServerUnavailable(f"{url} is not a clipsearch server")
        return cls(url, health, token)

    @property
    def index(self) -> str:
        return str(self.health.get("index", ""))

    def search(
        self,
        terms: Sequence[str],
        images: Sequence[Path],
        k: int,
        where: str | None,
        columns: Sequence[str],
        min_score: float | None = None,
        like: Sequence[int] = (),
        words_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Hits as ``clipsearch query`` prints them: rank, id, path, score, columns."""
        import urllib.parse
        import urllib.request

        fields = [("q", t) for t in terms] + [("like", str(i)) for i in like] + [("k", str(k))]
        if where is not None:
            fields.append(("where", where))
        if min_score is not None:
            fields.append(("min_score", repr(min_score)))
        if columns:
            fields.append(("columns", ",".join(columns)))
        if words_only:
            fields.append(("words", "true"))
        if images:
            body, kind = _multipart(fields, [("image", Path(p)) for p in images])
            headers = {"Content-Type": kind, **bearer_header(self.token)}
            request = urllib.request.Request(f"{self.url}/api/search", data=body, headers=headers)
        else:
            query = urllib.parse.urlencode(fields)
            request = urllib.request.Request(
                f"{self.url}/api/search?{query}", headers=bearer_header(self.token)
            )
        answer = _request(request, QUERY_TIMEOUT)
        try:
            return [
                {
                    "rank": h["rank"],
                    "id": h["id"],
                    "path": h["path"],
                    "score": h["score"],
                    **{c: h["columns"][c] for c in columns},
                }
                for h in answer["hits"]
            ]
        except (KeyError, TypeError) as exc:
            raise ServerUnavailable(f"unexpected answer from {self.url}: {exc}") from None


def _same_dir(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def find_server(
    index_dir: Path, url: str | None = None, index_given: bool = True, token: str | None = None
) -> ServerClient | None:
    """A reachable server answering for ``index_dir``, or None.

    Without ``url`` the server is the one ``INDEX/server.json`` names (ignored when its
    process is gone), with the token written there. With ``url`` and no index asked for,
    that server's index is used; its token is ``token``, else the one ``server.json`` has
    when it names the same URL.
    """
    info = read_info(index_dir)
    if url is None:
        if info is None or not process_alive(info.pid):
            return None
        url, token = info.url, info.token
        explicit = False
    else:
        if token is None and info is not None and info.url.rstrip("/") == url.rstrip("/"):
            token = info.token
        explicit = True
    try:
        client = ServerClient.connect(url, token)
    except TokenRefused:
        if explicit:
            refused = "the token given" if token else "to answer without its token"
            raise ClipsearchError(
                f"the server at {url} refused {refused}: give the one `clipsearch serve` "
                f"printed (or set ${TOKEN_ENV})",
                parameter="token",
            ) from None
        return None
    except ServerUnavailable:
        return None
    if _same_dir(client.index, index_dir) or (explicit and not index_given):
        return client
    if explicit:
        raise ClipsearchError(f"the server at {url} serves {client.index}, not {index_dir}")
    return None
