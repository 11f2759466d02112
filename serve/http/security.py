"""Who may call the server and how much they may send: bearer tokens, body caps, server-side paths.

    app = BodyLimit(app, max_body=64 << 20, max_upload=4 << 30, upload_paths=("/jobs",))
    app = BearerAuth(app, token, open_paths=("/v2/health/live", "/v2/health/ready"))
    path = resolve_under(data_root, "test/images")   # ApiError unless it stays under data_root

Both middlewares are plain ASGI (no buffering): the token is compared in constant time
(`hmac.compare_digest`); a body above its cap is refused from its Content-Length before any of it
is read, or as soon as a chunked body passes the cap. A server-side path is relative, has no
`..`, and after following every symlink still lies under --data-root; an image folder's files are
checked one by one too.
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path, PurePosixPath

from serve.http.errors import ApiError, error_response
from serve.images import list_images
from serve.paths import inside

_logger = logging.getLogger(__name__)
Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The raw value of request header `name` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class BearerAuth:
    """401 unless `Authorization: Bearer <token>` matches (health endpoints stay open for probes)."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = header(scope, b"authorization")
        problem = None
        if given is None:
            problem = "missing bearer token (send the header `Authorization: Bearer <token>`)"
        else:
            scheme, _, credential = given.partition(b" ")
            # compare_digest takes time independent of where the tokens differ
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self.token):
                problem = "invalid bearer token"
        if problem is None:
            return await self.app(scope, receive, send)
        response = error_response(401, problem, {"WWW-Authenticate": 'Bearer realm="foldwise"'})
        await response(scope, receive, send)


class BodyLimit:
    """413 for a request body above `max_body` bytes (`max_upload` for POSTs to `upload_paths`)."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int, upload_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_paths = frozenset(upload_paths)

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"] in self.upload_paths:
            return self.max_upload, "--max-upload-mb"
        return self.max_body, "--max-body-mb"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, option = self.limit_for(scope)
        mib = f"{limit / 2**20:g} MiB"
        length = header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await error_response(400, "Content-Length is not a number")(scope, receive, send)
            if declared > limit:
                message = f"request body of {declared:,} bytes is above the limit of {mib} ({option})"
                return await error_response(413, message, {"Connection": "close"})(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, f"request body is above the limit of {mib} ({option})")
            return message

        await self.app(scope, counted, send)


def resolve_under(root: Path, relative: str) -> Path:
    """`root / relative`, resolved, or ApiError: 400 for an absolute path, `..` or a symlink that
    leads out of `root`; 404 when nothing is there."""
    shown = repr(relative)
    if not relative or "\x00" in relative or "\\" in relative:
        raise ApiError(400, f"path {shown}: give a path relative to the server's --data-root")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise ApiError(400, f"path {shown}: must be relative to the server's --data-root, without '..'")
    root = root.resolve()
    target = (root / pure).resolve()
    if not inside(target, root):
        raise ApiError(400, f"path {shown}: leads outside the server's --data-root (a symlink); refused")
    if not target.exists():
        raise ApiError(404, f"path {shown}: not found under the server's --data-root")
    if target.is_dir():
        for f in list_images(target):
            if not inside(f.resolve(), root):
                raise ApiError(400, f"path {shown}: {f.name} leads outside the server's --data-root "
                                    "(a symlink); refused")
    return target
