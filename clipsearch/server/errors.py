"""Every failure becomes ``{"error": "<one line>", "status": N}``: 4xx for the client's
mistakes, a bare 500 (details only in the server log) for ours. No traceback leaves."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipsearch.errors import ClipsearchError, NotFound

logger = logging.getLogger("clipsearch.server")


class ApiError(Exception):
    """A client error with its HTTP status (404 unknown id, 403 refused file, 413 too big)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": " ".join(str(message).split()), "status": status, **extra}


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **extra), status_code=status)


def _field(location: tuple | list) -> str:
    """``("query", "k")`` → ``k``: where the parameter came from is noise to a client."""
    parts = list(location)
    if parts and parts[0] in ("query", "path", "body", "form", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into JSON error responses."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(ClipsearchError)
    async def _user_error(request: Request, exc: ClipsearchError) -> JSONResponse:
        # The library names the argument at fault; over HTTP it is the query parameter.
        prefix = f"{exc.parameter}: " if exc.parameter else ""
        return error_response(404 if isinstance(exc, NotFound) else 400, prefix + str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": _field(e.get("loc", ())), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error_response(422, summary or "invalid request", details=problems)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, "internal server error (the server log has the details)")
