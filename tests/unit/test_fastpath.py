"""serve/http/fastpath.py: which requests the infer fast path answers, and the bodies it inflates."""
from __future__ import annotations

import gzip
import zlib

import pytest

from serve.http.errors import ApiError
from serve.http.fastpath import _INFER, inflate


@pytest.mark.parametrize("path, name, version", [("/v2/models/ensemble/infer", "ensemble", None),
                                                 ("/v2/models/ensemble/versions/1/infer", "ensemble", "1")])
def test_the_infer_routes_match_with_their_name_and_version(path: str, name: str, version: str | None) -> None:
    match = _INFER.fullmatch(path)
    assert match is not None and match["name"] == name and match["version"] == version


@pytest.mark.parametrize("path", ["/v2/models/ensemble", "/v2/models/ensemble/ready", "/v2/models/a/b/infer",
                                  "/v2/models//infer", "/v2/models/ensemble/infer/x", "/predict"])
def test_other_paths_go_on_to_fastapi(path: str) -> None:
    assert _INFER.fullmatch(path) is None


def test_gzip_and_deflate_bodies_are_inflated_within_the_limit() -> None:
    body = b"x" * 1000
    assert inflate(body, None, 2000) == body and inflate(body, "identity", 2000) == body
    assert inflate(gzip.compress(body), "gzip", 2000) == body
    assert inflate(zlib.compress(body), "Deflate", 2000) == body


@pytest.mark.parametrize("body, encoding, status, words", [
    (b"abc", "br", 415, "Content-Encoding 'br'"),
    (b"not gzip at all", "gzip", 400, "not valid gzip"),
    (gzip.compress(b"x" * 5000, mtime=0), "gzip", 413, "decompressed body is above the limit"),
])
def test_bad_bodies_are_one_line_errors(body: bytes, encoding: str, status: int, words: str) -> None:
    with pytest.raises(ApiError) as exc:
        inflate(body, encoding, 2000)
    assert exc.value.status == status and words in exc.value.message and "\n" not in exc.value.message
