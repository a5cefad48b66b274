"""ASGI middleware that guards every request before a route sees it: the Host check, the
token, the body limit and the security headers.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so that streamed files stay streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.server.auth import (
    bearer_of,
    cookie_name,
    cookie_of,
    login_cookie,
    same_token,
    split_login,
)
from clipsearch.server.errors import error_body

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


async def _send_error(
    send: Send, status: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(error_body(status, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_of(header: str) -> str:
    """The host name of a Host header, without its port: ``[::1]:80`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Refuse requests whose Host header is not one of ours (DNS rebinding defence)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_of(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            headers = dict(scope["headers"])
            host = host_of(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                await _send_error(send, 400, f"host {host!r} is not served here")
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit:,} bytes")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: at once when Content-Length says so,
    else as soon as the streamed body passes the limit (nothing more is read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                await _send_error(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _send_error(send, 413, BodyTooLarge(self.limit).detail)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


class SecurityHeaders:
    """Add headers that keep browsers from sniffing types or framing the page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


NOT_SIGNED_IN = (
    "this clipsearch server needs its token: open the link `clipsearch serve` printed "
    "(…/?token=…), or send the header 'Authorization: Bearer TOKEN'"
)


class TokenCheck:
    """Let in the requests that carry the server's token, in a bearer header or in the
    cookie a browser got from the login link; refuse the rest with 401 before any route,
    file or thumbnail is looked at.

    The login link (``GET /?token=TOKEN``, any page but the API) sets the cookie and
    redirects to the same page without the token. CORS preflights carry no credentials by
    design, so they pass when ``allow_preflight`` (cross-origin callers were configured):
    they reveal nothing, and the request that follows is checked.
    """

    def __init__(self, app: ASGIApp, token: str, allow_preflight: bool = False) -> None:
        self.app = app
        self.token = token
        self.allow_preflight = allow_preflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        port = (scope.get("server") or ("", 0))[1] or 0
        if same_token(bearer_of(headers), self.token) or same_token(
            cookie_of(headers, cookie_name(port)), self.token
        ):
            await self.app(scope, receive, send)
            return
        if self.allow_preflight and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given, rest = split_login(scope.get("query_string", b"").decode("latin-1"))
        if (
            given is not None
            and scope["method"] in ("GET", "HEAD")
            and not scope["path"].startswith("/api/")
            and same_token(given, self.token)
        ):
            await _log_in(send, scope, port, self.token, rest)
            return
        challenge = (b"www-authenticate", b'Bearer realm="clipsearch"')
        await _send_error(send, 401, NOT_SIGNED_IN, [challenge])


async def _log_in(send: Send, scope: Scope, port: int, token: str, rest: str) -> None:
    """303 to the same page without the token, with the cookie that stands for it."""
    path = scope.get("raw_path") or scope["path"].encode()
    # One leading slash: "//host/..." would send the browser to another site.
    location = b"/" + path.lstrip(b"/") + (b"?" + rest.encode() if rest else b"")
    headers = [
        (b"location", location),
        (b"set-cookie", login_cookie(port, token).encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
