"""Errors as the client sees them: JSON `{"error": "<one line>"}` with the right status, never a traceback.

    raise ApiError(413, "request has 2000 images, above --max-images 1024")

The body is the Open Inference Protocol's error object, so Triton/KServe clients show the
message. `install(app)` maps our exceptions (ApiError, UserError and its kinds, FastAPI's
validation and routing errors) to responses; anything else is our bug: logged with its
traceback on the server, answered `500 {"error": "internal error (logged on the server)"}`.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.errors import TooLarge, UnreadableImage, UserError, first_line

_logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success: HTTP status, a one-line message, optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.headers = headers or {}


def one_line(message: str, limit: int = 500) -> str:
    """The first line of `message`, at most `limit` characters."""
    text = first_line(message, 10_000) or "error"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def status_of(exc: UserError) -> int:
    """413 for inputs above a limit, 415 for bytes that are not an image, else 422 (readable but wrong)."""
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, UnreadableImage):
        return 415
    return 422


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    return f"{where}: {first.get('msg', 'invalid value')}"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into `{"error": ...}`."""

    def answer(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        request.state.error = one_line(message)  # for the access log
        return error_response(status, message, headers)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return answer(request, exc.status, exc.message, exc.headers)

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> JSONResponse:
        return answer(request, status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(request, 422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint (see /docs)"
        elif exc.status_code == 405:
            message = "method not allowed here (see /docs)"
        return answer(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        _logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return answer(request, 500, "internal error (logged on the server)")
