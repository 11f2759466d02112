"""A local emulator of the Kaggle API endpoints foldwise reaches, for the REAL `kaggle` client.

With `KAGGLE_API_ENVIRONMENT=LOCALHOST` the kaggle client (2.x, kagglesdk) sends JSON POSTs with
HTTP Basic auth (username, key) to `http://localhost/api/v1/<Service>/<Method>` on port 80.
Implemented (request / response fields as kagglesdk names them, camelCase in JSON):

  competitions.CompetitionApiService/DownloadDataFiles  {competitionName} -> 302 to /files/<slug>.zip
  datasets.DatasetApiService/DownloadDataset            {ownerSlug, datasetSlug} -> 302 to /files/<slug>.zip
  competitions.CompetitionApiService/StartSubmissionUpload {competitionName, fileName, contentLength, ...}
                                                         -> {token, createUrl}; the client PUTs the file there
  competitions.CompetitionApiService/CreateSubmission    {competitionName, blobFileTokens, submissionDescription}
                                                         -> {message, ref}; the emulator scores the file
  competitions.CompetitionApiService/ListSubmissions     {competitionName} -> {submissions: [ApiSubmission]}
                                                         (ref, date, description, fileName, status PENDING |
                                                         COMPLETE | ERROR, publicScore "0.91234", errorDescription)
  competitions.CompetitionApiService/GetSubmissionLimits -> {numToday, numTotal, numAllowedNow}

Code competitions (datasets, notebooks, code submissions): tests/helpers/kaggle_code_emulator.py.

A submission stays PENDING for `pending_polls` ListSubmissions calls, then is COMPLETE with the
accuracy of its label column on the solution file's ids (5 decimals, a string, as Kaggle sends
it), or ERROR when it cannot be scored. The score is computed here, independently of foldwise.

Failures, as Kaggle sends them (JSON `{"code": N, "message": ...}` with that HTTP status):
wrong Basic auth -> 401; an unknown competition or dataset -> 404; `fail(method, status, times,
message)` makes the next `times` calls of `method` fail (403 rules, 429 daily limit, 500/503); a
429 says `Retry-After: 0` (the client then retries at once, at most 10 times, before giving up).
Every API request is recorded in `requests` ({"method", "user", "body"}).

    with KaggleEmulator() as kaggle:                 # or the `kaggle_emulator` pytest fixture
        kaggle.add_competition("fashion-mnist", zip_path, solution_csv)
        subprocess.run([...], env={**os.environ, **kaggle.env()})
"""
from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from helpers.kaggle_code_emulator import CODE_METHODS, CodeCompetitionEndpoints

LOCK_FILE = "/tmp/foldwise-kaggle-emulator.lock"
MESSAGES = {
    401: "Unauthenticated: invalid username or key",
    403: "You must accept this competition's rules before you'll be able to submit",
    404: "Not found",
    429: "Your team has used its daily Submission allowance (5) today, please try again tomorrow UTC",
    500: "Internal server error",
    503: "Service unavailable",
}


class KaggleEmulator(CodeCompetitionEndpoints):
    """The Kaggle API endpoints above on localhost:`port`, in a background thread."""

    def __init__(self, username: str = "foldwise-test", key: str = "0123456789abcdef-test-key",
                 port: int = 80) -> None:
        self.username, self.key, self.port = username, key, port
        self.competitions: dict[str, dict] = {}
        self.datasets: dict[str, Path] = {}
        self.failures: dict[str, list[tuple[int, str]]] = {}
        self.requests: list[dict] = []
        self.uploads: dict[str, dict] = {}     # token -> {competition, file_name, bytes}
        self.submissions: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._init_code()

    # ------------------------------------------------------------ configuration
    def add_competition(self, slug: str, zip_path: str | Path, solution_csv: str | Path, id_column: str = "id",
                        target_column: str = "label", pending_polls: int = 1) -> None:
        self.competitions[slug] = {"zip": Path(zip_path), "solution": Path(solution_csv), "id": id_column,
                                   "target": target_column, "pending_polls": pending_polls}

    def add_dataset(self, ref: str, zip_path: str | Path) -> None:
        self.datasets[ref] = Path(zip_path)

    def fail(self, method: str, status: int, times: int = 1, message: str | None = None) -> None:
        with self._lock:
            self.failures.setdefault(method, []).extend([(status, message or MESSAGES.get(status, "error"))] * times)

    def env(self) -> dict[str, str]:
        return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_USERNAME": self.username, "KAGGLE_KEY": self.key}

    def calls(self, method: str) -> int:
        return sum(1 for r in self.requests if r["method"] == method)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> KaggleEmulator:
        self._server = ThreadingHTTPServer(("", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_code()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KaggleEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ behaviour
    def _score(self, comp: dict, data: bytes) -> tuple[float | None, str | None]:
        """Accuracy of the submission's target column on the solution's ids, or (None, why)."""
        with open(comp["solution"], newline="") as fh:
            truth = {row[comp["id"]]: row[comp["target"]] for row in csv.DictReader(fh)}
        try:
            rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        except UnicodeDecodeError:
            return None, "Submission file is not UTF-8 text"
        if not rows or comp["id"] not in rows[0] or comp["target"] not in rows[0]:
            return None, f"Submission must have columns '{comp['id']}' and '{comp['target']}'"
        got = {r[comp["id"]]: r[comp["target"]] for r in rows}
        missing = [i for i in truth if i not in got]
        if missing:
            return None, f"Submission is missing {len(missing)} required ids, e.g. {missing[0]}"
        return sum(got[i] == t for i, t in truth.items()) / len(truth), None

    def handle_api(self, method: str, body: dict, user: str | None, key: str | None) -> tuple[int, Any]:
        with self._lock:
            self.requests.append({"method": method, "user": user, "body": body})
            if user != self.username or key != self.key:
                return 401, {"code": 401, "message": MESSAGES[401]}
            queued = self.failures.get(method)
            if queued:
                status, message = queued.pop(0)
                return status, {"code": status, "message": message}
            if method in CODE_METHODS:
                return self.handle_code(method, body, user)
            if method == "DownloadDataset":
                ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
                if ref not in self.datasets:
                    return 404, {"code": 404, "message": f"Dataset {ref} not found"}
                return 302, f"/files/dataset/{ref}/{body.get('datasetSlug')}.zip"
            slug = body.get("competitionName", "")
            comp = self.competitions.get(slug)
            if comp is None:
                return 404, {"code": 404, "message": f"Competition {slug} not found"}
            if method == "CreateCodeSubmission":
                return self._code_submission(body, comp, slug)
            if method == "DownloadDataFiles":
                return 302, f"/files/competition/{slug}/{slug}.zip"
            if method == "StartSubmissionUpload":
                token = hashlib.sha256(f"{slug}/{len(self.uploads)}".encode()).hexdigest()[:24]
                self.uploads[token] = {"competition": slug, "file_name": body.get("fileName"), "bytes": None}
                return 200, {"token": token, "createUrl": f"http://localhost:{self.port}/upload/{token}"}
            if method == "CreateSubmission":
                upload = self.uploads.get(body.get("blobFileTokens", ""))
                if upload is None or upload["bytes"] is None:
                    return 400, {"code": 400, "message": "Invalid blob file token"}
                score, error = self._score(comp, upload["bytes"])
                ref = 1000 + len(self.submissions)
                self.submissions.append({
                    "ref": ref, "competition": slug, "message": body.get("submissionDescription", ""),
                    "file_name": upload["file_name"], "sha256": hashlib.sha256(upload["bytes"]).hexdigest(),
                    "score": score, "error": error, "polls_left": comp["pending_polls"],
                    "date": datetime.now(UTC).replace(tzinfo=None)})
                return 200, {"message": "Successfully submitted", "ref": ref}
            if method == "ListSubmissions":
                out = []
                for sub in reversed([s for s in self.submissions if s["competition"] == slug]):
                    entry = {"ref": sub["ref"], "date": sub["date"].isoformat(timespec="milliseconds") + "Z",
                             "description": sub["message"], "fileName": sub["file_name"],
                             "submittedBy": self.username, "status": "PENDING"}
                    if sub["polls_left"] > 0:
                        sub["polls_left"] -= 1
                    elif sub["error"]:
                        entry.update(status="ERROR", errorDescription=sub["error"])
                    else:
                        entry.update(status="COMPLETE", publicScore=f"{sub['score']:.5f}", privateScore="")
                    out.append(entry)
                return 200, {"submissions": out}
            if method == "GetSubmissionLimits":
                n = sum(1 for s in self.submissions if s["competition"] == slug)
                return 200, {"numToday": n, "numTotal": n, "numAllowedNow": max(0, 5 - n)}
            return 404, {"code": 404, "message": f"method {method} is not emulated"}

    def file_bytes(self, path: str) -> bytes | None:
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[1] == "competition" and parts[2] in self.competitions:
            return self.competitions[parts[2]]["zip"].read_bytes()
        if len(parts) >= 5 and parts[1] == "dataset" and f"{parts[2]}/{parts[3]}" in self.datasets:
            return self.datasets[f"{parts[2]}/{parts[3]}"].read_bytes()
        if len(parts) >= 2 and parts[1] == "kernel":
            return self.kernel_file(parts)
        return None


def _handler_for(emulator: KaggleEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def _auth(self) -> tuple[str | None, str | None]:
            value = self.headers.get("Authorization", "")
            if not value.startswith("Basic "):
                return None, None
            user, _, key = base64.b64decode(value[6:]).decode().partition(":")
            return user, key

        def do_POST(self) -> None:
            raw = self._body()
            if not self.path.startswith("/api/v1/"):
                self._send(404, b'{"code": 404, "message": "not found"}', "application/json")
                return
            method = self.path.rstrip("/").rsplit("/", 1)[-1]
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, b'{"code": 400, "message": "bad json"}', "application/json")
                return
            status, result = emulator.handle_api(method, body, *self._auth())
            if status == 302:
                self._send(302, b"", "text/plain", {"Location": f"http://localhost:{emulator.port}{result}"})
            else:
                self._send(status, json.dumps(result).encode(), "application/json",
                           {"Retry-After": "0"} if status == 429 else None)

        def do_GET(self) -> None:
            data = emulator.file_bytes(self.path)
            if data is None:
                self._send(404, b"not found", "text/plain")
                return
            self._send(200, data, "application/zip",
                       {"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT", "ETag": hashlib.md5(data).hexdigest()})

        def do_PUT(self) -> None:
            data = self._body()
            token = self.path.rstrip("/").rsplit("/", 1)[-1]
            with emulator._lock:
                if self.path.startswith("/upload/") and token in emulator.blobs:
                    status = emulator.put_blob(token, data, self.headers.get("Content-Range", ""))
                    self._send(status, b"{}", "application/json")
                    return
                upload = emulator.uploads.get(token) if self.path.startswith("/upload/") else None
                if upload is not None:
                    upload["bytes"] = data
            self._send(200 if upload is not None else 404, b"{}", "application/json")

    return Handler


@contextlib.contextmanager
def running_emulator() -> Iterator[KaggleEmulator]:
    """A started emulator on port 80 (as Kaggle's client expects for LOCALHOST), stopped after.

    Port 80 is one per machine: a file lock makes test runs in other checkouts (or xdist
    workers) wait for it instead of failing to bind; OSError when it cannot bind at all."""
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        emulator = KaggleEmulator()
        emulator.start()
        try:
            yield emulator
        finally:
            emulator.stop()
