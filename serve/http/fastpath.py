"""POST /v2/models/{name}[/versions/{version}]/infer without FastAPI's routing and parameter resolution.

    app.add_middleware(InferFastPath, service=svc, body_limit=limit)   # innermost: auth, limits, logs wrap it

The inference route is the one clients call hundreds of times a second. As a FastAPI route it paid
for the exception middleware, the router's regex walk over every route and the resolution of
`name`, `request` and `version`: half the event loop's CPU per single-image request (py-spy and
per-thread CPU; docs/results.md, issue 25), CPU that onnxruntime needs on a small machine. This
ASGI layer sits inside the auth, body-limit and access-log middlewares and answers the route
itself: serve/http/protocol.py's check_model, parse_infer and encode_infer, the dynamic batcher,
the error bodies and status codes of serve/http/errors.py, the same route label in /metrics.
Every other path and method goes on to FastAPI.
"""
from __future__ import annotations

import json
import logging
import re
import zlib
from types import SimpleNamespace

from serve.errors import UserError
from serve.http import protocol
from serve.http.errors import ApiError, one_line, status_of
from serve.http.security import header

_logger = logging.getLogger("foldwise.serve")
_INFER = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
ROUTES = {False: SimpleNamespace(path="/v2/models/{name}/infer"),
          True: SimpleNamespace(path="/v2/models/{name}/versions/{version}/infer")}


def json_bytes(content: dict) -> bytes:
    """As Starlette's JSONResponse renders it (the FastAPI routes' error bodies)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def _text(scope, name: bytes) -> str | None:
    raw = header(scope, name)
    return None if raw is None else raw.decode("latin-1")


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client went away before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """`body` with gzip/deflate undone (as tritonclient may send it), at most `limit` bytes."""
    encoding = (encoding or "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, f"Content-Encoding '{encoding}': send identity, gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, f"body is not valid {encoding} ({exc})") from None
    if len(data) > limit:
        raise ApiError(413, f"decompressed body is above the limit of {limit / 2**20:g} MiB (--max-body-mb)")
    return data


async def _send(send, status: int, content: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-length", str(len(content)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


class InferFastPath:
    """ASGI middleware answering the v2 infer route (see the module docstring)."""

    def __init__(self, app, service, body_limit: int) -> None:
        self.app = app
        self.service = service
        self.body_limit = body_limit

    async def __call__(self, scope, receive, send) -> None:
        match = _INFER.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            return await self.app(scope, receive, send)
        scope["route"] = ROUTES[match["version"] is not None]
        state = scope.setdefault("state", {})
        svc = self.service
        try:
            protocol.check_model(svc.card, match["name"], match["version"])
            body = inflate(await _body(receive), _text(scope, b"content-encoding"), self.body_limit)
            length = _text(scope, protocol.HEADER_LENGTH.lower().encode())
            images, wanted, request_id = protocol.parse_infer(svc.card, body, length)
            state["images"] = len(images)
            probs = await svc.infer(images)
            content, headers = protocol.encode_infer(svc.card, request_id, probs, wanted)
            status = 200
        except (ApiError, UserError) as exc:
            status = exc.status if isinstance(exc, ApiError) else status_of(exc)
            state["error"] = one_line(exc.message if isinstance(exc, ApiError) else str(exc))
            content = json_bytes({"error": state["error"]})
            headers = {"content-type": "application/json", **(exc.headers if isinstance(exc, ApiError) else {})}
        except Exception as exc:  # our bug: logged with its traceback, answered 500
            _logger.error("POST %s failed", scope["path"], exc_info=exc)
            status, state["error"] = 500, "internal error (logged on the server)"
            content, headers = json_bytes({"error": state["error"]}), {"content-type": "application/json"}
        await _send(send, status, content, headers)
