"""Stage `submit`: validate the submission, upload it to Kaggle once, wait for its score.

    foldwise submit               # reads params.yaml `submit`, submissions/submission.csv
    foldwise submit --dry-run     # validate (and look for a duplicate); upload nothing

With `submit.mode: code` (a code competition) the stage instead packages the model as a Kaggle
dataset, writes the inference notebook and pushes and submits it: pipeline/kaggle/code.py.

1. Validates `submissions/submission.csv` against the sample submission (columns and order,
   id set and count, no empty cell, labels in the class set): nothing invalid is ever uploaded.
2. Scores it locally when the data came with a solution file (the embedded competition's public
   part, or a `kaggle-dataset`'s labelled test set).
3. Uploads with the real kaggle client only when `submit.enabled` is true, credentials exist and
   the competition's submission list holds no submission of this very file (each message ends
   with `sha256:<first 16 hex digits>` of the file, so a re-run never wastes a submission).
   The message says what produced the file: git commit, params hash, OOF accuracy.
4. Polls the submission list with backoff until Kaggle has scored it (or `poll_timeout`).

Writes `submissions/receipt.json` (a DVC metrics file: public score next to OOF accuracy) and
adds the file to `submissions/history.json` (file hash -> OOF accuracy, for `foldwise submissions`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pipeline.config import SubmitParams, load_section, params_hash, read_params
from pipeline.kaggle.client import NO_CREDENTIALS, api, call, credentials_source, poll_until
from serve.atomic import sha256_file, write_json
from serve.errors import UserError
from pipeline.metrics import from_meta
from pipeline.scoring import score_submission
from serve.submission import SubmissionSpec, validate_submission

_logger = logging.getLogger(__name__)
SUBMISSION = Path("submissions/submission.csv")
RECEIPT = Path("submissions/receipt.json")
HISTORY = Path("submissions/history.json")
TAG = re.compile(r"sha256:([0-9a-f]{16})")
UPLOAD_FAILED = "Could not submit to competition"  # the kaggle client's message when the blob upload fails


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def file_sha256(path: Path) -> str:
    return sha256_file(path)


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
        return bool(found and found["status"] in ("complete", "error")), found, (found or {}).get("status", "not listed")

    scored, found = poll_until(check, params.poll_timeout, params.poll_interval, f"submission {ref}", sleep, clock)
    if scored:
        return found
    _logger.warning("submission %s not scored after %.0fs; `foldwise submissions` shows it later", ref, params.poll_timeout)
    return {**(found or {"ref": ref}), "status": (found or {}).get("status", "pending"), "timed_out": True}


def update_history(path: Path, digest: str, entry: dict) -> None:
    history = {}
    if path.exists():
        try:
            history = json.loads(path.read_text())
        except json.JSONDecodeError:
            _logger.warning("%s: unreadable; starting a new history", path)
    history[digest] = {**history.get(digest, {}), **{k: v for k, v in entry.items() if v is not None}}
    write_json(path, history)


def run(params: SubmitParams, submission: Path = SUBMISSION, receipt: Path = RECEIPT,
        prepared: Path = Path("data/prepared"), source_json: Path = Path("data/raw/source.json"),
        metrics_json: Path = Path("metrics.json"), history: Path = HISTORY,
        sleep: Callable[[float], None] = time.sleep) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    spec = (SubmissionSpec.from_dict(meta["submission"]) if "submission" in meta
            else SubmissionSpec.labels(meta["classes"], meta["id_column"], meta["target_column"]))
    validate_submission(submission, prepared / "sample_submission.csv", spec)
    metric = from_meta(meta).name
    digest = file_sha256(submission)
    source = json.loads(source_json.read_text()) if source_json.exists() else {}
    ens = json.loads(metrics_json.read_text()) if metrics_json.exists() else {}
    oof, oof_accuracy = ens.get("oof_score", ens.get("oof_accuracy")), ens.get("oof_accuracy")
    phash = params_hash(read_params())
    competition = params.competition or source.get("competition")
    message = build_message(params, digest, oof, phash, metric)
    record: dict[str, Any] = {
        "file": str(submission), "sha256": digest, "competition": competition, "message": message,
        "metric": metric, "oof_score": oof, "oof_accuracy": oof_accuracy, "params_hash": phash,
        "commit": git_commit(), "dry_run": params.dry_run, "public_rows": params.public_rows,
        "uploaded": False, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    local = None
    if source.get("solution") and Path(source["solution"]).is_file():
        score = score_submission(submission, source["solution"], metric, spec.positive_class)
        local = round(score.value, 6)
        record["local_score"] = {"solution": source["solution"], "metric": metric, "score": local,
                                 "accuracy": round(score.accuracy, 6), "rows": score.n_scored}
        print(f"submit: local score on {source['solution']}: {metric} {score.value:.4f} ({score.n_scored} rows)")
    update_history(history, digest, {"kind": "file", "file": str(submission), "metric": metric, "oof_score": oof,
                                      "oof_accuracy": oof_accuracy, "params_hash": phash,
                                      "commit": record["commit"], "competition": competition,
                                      "local_score": local, "time": record["time"]})

    reason = None
    if not params.enabled and not params.dry_run:
        reason = "submit.enabled is false in params.yaml"
    elif not competition:
        reason = (f"no competition to submit to: data came from '{source.get('source', '?')}'; "
                  "set submit.competition to a Kaggle slug")
    elif credentials_source() is None:
        reason = NO_CREDENTIALS
    if reason:
        record["reason"] = reason
        print(f"submit: not uploaded: {reason}" + (" (dry run: the file is valid)" if params.dry_run else ""))
        write_json(receipt, record)
        return record

    client = api()
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
                            f"({getattr(response, 'message', '') or 'no submission ref'}); nothing was submitted, run again")
        record.update(uploaded=True, ref=ref)
        print(f"submit: uploaded {submission} to '{competition}' as submission {ref}; waiting for the score")
        result = poll(client, competition, ref, params, sleep)
        record.update({k: result.get(k) for k in ("status", "public_score", "private_score", "error", "timed_out")
                       if k in result})
        if result.get("status") == "error":
            write_json(receipt, record)
            raise UserError(f"kaggle: submission {ref} to '{competition}' failed scoring: "
                            f"{result.get('error') or 'no reason given'}")
    if record.get("public_score") is not None:
        print(f"submit: public score {record['public_score']} (OOF {metric} {oof})")
        update_history(history, digest, {"public_score": record["public_score"], "ref": record.get("ref")})
    write_json(receipt, record)
    return record


def main(dry_run: bool = False) -> None:
    params = load_section("submit", SubmitParams)
    if dry_run:
        params = dataclasses.replace(params, dry_run=True)
    if params.mode == "code":  # a code competition: package, notebook, push (pipeline/kaggle/code.py)
        from pipeline.kaggle.code import run_stage  # noqa: PLC0415
        run_stage(params)
        return
    run(params)
