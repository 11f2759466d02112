"""The real `kaggle` client, imported only once credentials are known to exist, with Kaggle's
failures turned into one-line errors that say what to do.

`import kaggle` authenticates at import time and prints help when it finds no credentials, so
foldwise looks for them first and can then say plainly what is missing. The key is never
printed or logged: every message passes through `redact`.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from serve.errors import UserError

_logger = logging.getLogger(__name__)
T = TypeVar("T")


def poll_until(check: Callable[[], tuple[bool, T, str]], timeout: float, interval: float, what: str,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> tuple[bool, T]:
    """Call `check` -> (done, value, state) until done, doubling the pause from `interval` (at most
    60 s) and logging `what` and its state before each; (False, last value) when the next pause would
    end past `timeout` seconds. `check` raises for states that will never become done."""
    deadline, wait = clock() + timeout, interval
    while True:
        done, value, state = check()
        if done or clock() + wait > deadline:
            return done, value
        _logger.info("%s is %s; next check in %.0fs", what, state, wait)
        sleep(wait)
        wait = min(wait * 2, 60.0)


def config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def _secrets() -> list[str]:
    found = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    path = config_dir() / "kaggle.json"
    if path.is_file():
        try:
            found.append(str(json.loads(path.read_text()).get("key", "")))
        except (json.JSONDecodeError, OSError):
            pass
    token = config_dir() / "access_token"
    if token.is_file():
        with contextlib.suppress(OSError):
            found.append(token.read_text().strip())
    return [s for s in found if len(s) >= 4]


def redact(text: str) -> str:
    """`text` with every known Kaggle secret replaced by ***."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def credentials_source() -> str | None:
    """Where the kaggle client will find credentials ('environment', a file path), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME/KAGGLE_KEY)"
    for name in ("access_token", "kaggle.json"):
        path = config_dir() / name
        if path.is_file():
            if path.stat().st_mode & 0o077:
                _logger.warning("%s is readable by other users; run: chmod 600 %s", path, path)
            return str(path)
    return None


NO_CREDENTIALS = ("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or save the token from "
                  "kaggle.com > Settings > API as ~/.kaggle/kaggle.json (chmod 600)")


def api():
    """An authenticated `kaggle.api.KaggleApi`; UserError when no credentials exist."""
    if credentials_source() is None:
        raise UserError(NO_CREDENTIALS)
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
        client = KaggleApi()
        try:
            client.authenticate()
        except SystemExit:
            raise UserError(NO_CREDENTIALS) from None
    return client


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind a kaggle client exception, if there is one.

    Some client methods (kernels status/output) re-raise an HTTPError as a ValueError: the
    exceptions it was raised from (`__cause__`, `__context__`) are searched too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None) or getattr(current, "status", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    text = str(exc)
    for code in (400, 401, 403, 404, 409, 429, 500, 502, 503, 504):
        if text.startswith(f"{code} ") or f" {code} " in f" {text} " or f"({code})" in text:
            return code
    return None


def _body(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(getattr(response, "text", "") or "")
    except Exception:  # noqa: BLE001  (a streamed body may not be readable any more)
        return ""


def _refused(kind: str, slug: str) -> str:
    if kind == "dataset":
        return (f"Kaggle refused access to dataset '{slug}' (403): its owner must be your Kaggle username "
                "(or a team you belong to); check submit.dataset in params.yaml")
    if kind == "kernel":
        return (f"Kaggle refused access to notebook '{slug}' (403): its owner must be your Kaggle username; check "
                "submit.kernel in params.yaml (GPU notebooks also need a phone-verified account: "
                "kaggle.com > Settings)")
    return (f"Kaggle refused access to '{slug}' (403): join the competition and accept its rules at "
            f"https://www.kaggle.com/competitions/{slug}/rules, then run again")


def _missing(kind: str, slug: str) -> str:
    if kind == "dataset":
        return f"Kaggle has no dataset '{slug}' (404): check submit.dataset in params.yaml (owner/slug)"
    if kind == "kernel":
        return (f"Kaggle has no notebook '{slug}' or one of its sources (404): check submit.kernel, "
                "submit.dataset and submit.competition in params.yaml")
    return f"Kaggle has no competition or dataset '{slug}' (404): check the slug in params.yaml"


def explain(exc: BaseException, competition: str | None, action: str, kind: str = "competition") -> UserError:
    """A one-line UserError naming the cause of a failed Kaggle call and the fix.

    `competition` is the slug the call was about (a competition, or an owner/slug for `kind`
    "dataset" or "kernel"); the fix named for 403/404/429 depends on `kind`."""
    status = http_status(exc)
    body = _body(exc)
    slug = competition or "?"
    low = (body + " " + str(exc)).lower()
    if status == 401:
        msg = ("Kaggle rejected the credentials (401): check KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json; "
               "a new token is at kaggle.com > Settings > API")
    elif kind == "competition" and (status == 429 or "limit" in low and ("submission" in low or "daily" in low)):
        msg = (f"Kaggle's daily submission limit for '{slug}' is reached ({status}): "
               "nothing was uploaded; try again after the limit resets (00:00 UTC)")
    elif status == 429:
        msg = ("Kaggle is limiting this account's requests (429): wait a few minutes and run the same command "
               "again (finished steps are not repeated)")
    elif status == 403:
        msg = _refused(kind, slug)
    elif status == 404:
        msg = _missing(kind, slug)
    elif status is not None and status >= 500:
        msg = f"Kaggle's server failed ({status}) and kept failing after retries: try again later"
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        msg = f"{type(exc).__name__}: {first}"
    return UserError(redact(f"kaggle: {action} '{slug}' failed: {msg}"))


FIRST_WAIT = 1.0  # seconds before the first retry of a server error (doubling, at most 30)


def call(fn: Callable[[], T], competition: str | None, action: str, tries: int = 4,
         first_wait: float | None = None, sleep: Callable[[float], None] = time.sleep,
         kind: str = "competition") -> T:
    """Run a kaggle client call; retry server errors (5xx) with bounded backoff; explain failures.

    What the client prints is kept off the terminal (its own retry notices go to the log)."""
    wait = FIRST_WAIT if first_wait is None else first_wait
    for attempt in range(1, tries + 1):
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                return fn()
        except SystemExit as exc:  # the client calls exit() on some auth failures
            raise UserError(NO_CREDENTIALS) from exc
        except Exception as exc:  # noqa: BLE001  (requests/kagglesdk raise many types)
            status = http_status(exc)
            if status is not None and status >= 500 and attempt < tries:
                _logger.warning("kaggle: %s '%s': server error %s, retry %d/%d in %.0fs", action, competition,
                                status, attempt, tries - 1, wait)
                sleep(wait)
                wait = min(wait * 2, 30)
                continue
            raise explain(exc, competition, action, kind) from None
        finally:
            for line in err.getvalue().splitlines():
                if line.strip():
                    _logger.info("kaggle client: %s", redact(line.strip())[:300])
    raise AssertionError("unreachable")


def as_dict(obj: Any) -> dict:
    """A kagglesdk response object (or dict) as a plain dict of its public fields."""
    if isinstance(obj, dict):
        return obj
    for attr in ("to_dict", "_asdict"):
        if hasattr(obj, attr):
            with contextlib.suppress(TypeError):
                return getattr(obj, attr)()
    return {k.lstrip("_"): v for k, v in vars(obj).items()} if hasattr(obj, "__dict__") else {"value": obj}


def username() -> str | None:
    """The Kaggle username the credentials name (KAGGLE_USERNAME or kaggle.json), without importing
    the client; None when only a token (or nothing) is configured."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    path = config_dir() / "kaggle.json"
    if path.is_file():
        try:
            return str(json.loads(path.read_text()).get("username") or "") or None
        except (json.JSONDecodeError, OSError):
            return None
    return None


def sdk_call(client: Any, service: str, method: str, request: Any, missing_ok: bool = False) -> Any:
    """One kagglesdk call (`service` e.g. "datasets.dataset_api_client") through the authenticated
    client's HTTP session; None for a 404 when `missing_ok` (how "does it exist yet?" is asked)."""
    from requests.exceptions import HTTPError

    try:
        with client.build_kaggle_client() as kaggle:
            group, name = service.split(".")
            return getattr(getattr(getattr(kaggle, group), name), method)(request)
    except HTTPError as exc:
        if missing_ok and http_status(exc) == 404:
            return None
        raise


def status_name(value: Any) -> str:
    """A kagglesdk enum (or string) status as a lower-case word: COMPLETE -> 'complete'."""
    return str(getattr(value, "name", value) or "").lower()
