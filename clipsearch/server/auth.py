"""Who may call a server: the holder of its token, and nobody else.

A server makes a random token per start (or takes one: ``serve --token``,
``$CLIPSEARCH_TOKEN``). Scripts send it as ``Authorization: Bearer TOKEN``; ``clipsearch
query`` reads it from the owner-only ``INDEX/server.json``. A browser opens the link
``serve`` prints, ``/?token=TOKEN`` (as Jupyter does): the server answers with a cookie
(``HttpOnly``, ``SameSite=Strict``) and a redirect to the same page without the token, so
the token leaves the address bar and the page's scripts never see it. Every other request
without the token gets 401 and no data.

Standard library only at import: the CLI's ``query`` imports the token checks.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import parse_qsl, urlencode

TOKEN_ENV = "CLIPSEARCH_TOKEN"
MIN_TOKEN_LENGTH = 16
# Characters that travel unquoted in a header, a cookie and a URL.
_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")
_QUERY_PARAMETER = "token"
_BEARER = "bearer "


def new_token() -> str:
    """A fresh secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it can be a server's secret; else a ValueError saying why."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"at least {MIN_TOKEN_LENGTH} characters, so it cannot be guessed")
    if not _TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError("only letters, digits and . _ ~ - (it travels in URLs and headers)")
    return token


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison: how long a refusal takes says nothing about the token."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer_header(token: str | None) -> dict[str, str]:
    """The header that signs a request in; none for a server that asks for no token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def cookie_name(port: int) -> str:
    """One cookie per port: browsers send a host's cookies to all its ports, and two servers
    on one machine (``serve`` and a background one) must not replace each other's."""
    return f"clipsearch-token-{port}"


def login_url(url: str, token: str) -> str:
    """The link that lets a browser in: the server's page with the token."""
    return f"{url.rstrip('/')}/?{urlencode({_QUERY_PARAMETER: token})}"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def bearer_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    value = _header(headers, b"authorization")
    if value is None or value[: len(_BEARER)].lower() != _BEARER:
        return None
    return value[len(_BEARER) :].strip()


def cookie_of(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    value = _header(headers, b"cookie")
    if not value:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(value)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


def split_login(query_string: str) -> tuple[str | None, str]:
    """(the token in a query string, the query string without it)."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    tokens = [v for k, v in pairs if k == _QUERY_PARAMETER]
    rest = urlencode([(k, v) for k, v in pairs if k != _QUERY_PARAMETER])
    return (tokens[-1] if tokens else None), rest


def login_cookie(port: int, token: str) -> str:
    """The Set-Cookie value a browser keeps until it closes (no Max-Age: a session cookie)."""
    return f"{cookie_name(port)}={token}; Path=/; HttpOnly; SameSite=Strict"
