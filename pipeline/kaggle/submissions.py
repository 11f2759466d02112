"""File submissions through the real kaggle client: list, find our own, upload once, wait for the score.

    subs = list_submissions(api(), "fashion-mnist")           # [{ref, status, public_score, description, ...}]
    find_duplicate(subs, sha256_of_file)                      # a submission of this very file, or None
    upload_once(api(), params, "fashion-mnist", path, digest, message, record)

Each foldwise message ends with `sha256:<first 16 hex digits>` of the file (of the notebook, for a
code submission), so a re-run never wastes a submission; the message says what produced it (git
commit, params hash, OOF score). Polling doubles its pause (at most 60 s) until Kaggle has scored
the submission or `submit.poll_timeout` passes. Shared by the submit stage, `foldwise kaggle push`
and `foldwise submissions`.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.provenance import git_commit
from pipeline.kaggle.client import call, poll_until
from pipeline.kaggle.params import SubmitParams
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
TAG = re.compile(r"sha256:([0-9a-f]{16})")
UPLOAD_FAILED = "Could not submit to competition"  # the kaggle client's message when the blob upload fails


def build_message(params: SubmitParams, digest: str, oof: float | None, phash: str, metric: str = "accuracy") -> str:
    """The submission description: what produced the file, always ending in its hash tag."""
    base = params.message
    if not base:
        base = f"foldwise {git_commit() or 'uncommitted'} params {phash}"
        if oof is not None:
            base += f" oof {metric} {oof:.5f}"
    return f"{base} sha256:{digest[:16]}"


def _status_name(status: Any) -> str:
    return str(getattr(status, "name", status)).lower()


def _score(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def submission_record(sub: Any) -> dict:
    """The fields foldwise keeps of a kaggle `ApiSubmission`."""
    date = getattr(sub, "date", None)
    return {"ref": getattr(sub, "ref", None), "status": _status_name(getattr(sub, "status", "")),
            "public_score": _score(getattr(sub, "public_score", None)),
            "private_score": _score(getattr(sub, "private_score", None)),
            "date": date.isoformat() if hasattr(date, "isoformat") else (str(date) if date else None),
            "description": getattr(sub, "description", "") or "",
            "file_name": getattr(sub, "file_name", "") or "",
            "error": getattr(sub, "error_description", "") or None}


def list_submissions(client: Any, competition: str) -> list[dict]:
    subs = call(lambda: client.competition_submissions(competition), competition, "listing submissions of")
    return [submission_record(s) for s in (subs or []) if s is not None]


def find_duplicate(submissions: list[dict], digest: str) -> dict | None:
    for sub in submissions:
        m = TAG.search(sub["description"])
        if m and m.group(1) == digest[:16]:
            return sub
    return None


def poll(client: Any, competition: str, ref: int, params: SubmitParams,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict:
    """Wait (doubling the pause, at most 60 s) until submission `ref` is complete or failed."""
    def check() -> tuple[bool, dict | None, str]:
        found = next((s for s in list_submissions(client, competition) if s["ref"] == ref), None)
        return (bool(found and found["status"] in ("complete", "error")), found,
                (found or {}).get("status", "not listed"))

    scored, found = poll_until(check, params.poll_timeout, params.poll_interval, f"submission {ref}", sleep, clock)
    if scored:
        return found
    _logger.warning("submission %s not scored after %.0fs; `foldwise submissions` shows it later", ref,
                    params.poll_timeout)
    return {**(found or {"ref": ref}), "status": (found or {}).get("status", "pending"), "timed_out": True}


def upload_once(client: Any, params: SubmitParams, competition: str, submission: Path, digest: str, message: str,
                record: dict, receipt: Path, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Upload `submission` unless the competition already holds it (then wait for that one's score);
    a dry run looks and uploads nothing. Fills and returns the receipt `record` (written to
    `receipt` before a scoring failure is raised)."""
    duplicate = find_duplicate(list_submissions(client, competition), digest)
    if duplicate is not None:
        record.update(duplicate_of=duplicate["ref"], reason=f"already submitted as {duplicate['ref']}")
        if duplicate["status"] == "pending" and not params.dry_run:
            duplicate = poll(client, competition, duplicate["ref"], params, sleep)
        record.update({k: duplicate.get(k) for k in ("ref", "status", "public_score", "private_score", "error")})
        print(f"submit: not uploaded: this file was already submitted to '{competition}' as {duplicate['ref']} "
              f"({duplicate['status']}, public score {duplicate.get('public_score')})")
    elif params.dry_run:
        record["reason"] = "dry run"
        print(f"submit: dry run: {submission} is valid and new to '{competition}'; would upload with message "
              f"'{message}'")
    else:
        response = call(lambda: client.competition_submit(str(submission), message, competition, quiet=True),
                        competition, "submitting to")
        ref = getattr(response, "ref", None)
        if not ref or UPLOAD_FAILED in (getattr(response, "message", "") or ""):
            raise UserError(f"kaggle: submitting to '{competition}' failed: the file upload did not complete "
                            f"({getattr(response, 'message', '') or 'no submission ref'}); "
                            "nothing was submitted, run again")
        record.update(uploaded=True, ref=ref)
        print(f"submit: uploaded {submission} to '{competition}' as submission {ref}; waiting for the score")
        result = poll(client, competition, ref, params, sleep)
        record.update({k: result.get(k) for k in ("status", "public_score", "private_score", "error", "timed_out")
                       if k in result})
        if result.get("status") == "error":
            write_json(receipt, record)
            raise UserError(f"kaggle: submission {ref} to '{competition}' failed scoring: "
                            f"{result.get('error') or 'no reason given'}")
    return record
