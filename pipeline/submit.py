"""Stage `submit`: validate the submission and, when enabled and possible, upload it to Kaggle.

    foldwise submit              # reads params.yaml `submit`, submissions/submission.csv

Always validates `submissions/submission.csv` against the sample submission first. Uploads
with the real kaggle client only when `submit.enabled` is true and credentials exist; otherwise
it says why it did not upload and succeeds. Writes `submissions/receipt.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

from pipeline.config import SubmitParams, load_section
from pipeline.kaggle_client import NO_CREDENTIALS, api, credentials_source
from serve.atomic import write_json
from serve.errors import UserError
from serve.submission import validate_submission

_logger = logging.getLogger(__name__)
SUBMISSION = Path("submissions/submission.csv")
RECEIPT = Path("submissions/receipt.json")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run(params: SubmitParams, submission: Path = SUBMISSION, receipt: Path = RECEIPT,
        prepared: Path = Path("data/prepared"), source_json: Path = Path("data/raw/source.json"),
        metrics_json: Path = Path("metrics.json")) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    validate_submission(submission, prepared / "sample_submission.csv", meta["classes"])
    digest = hashlib.sha256(submission.read_bytes()).hexdigest()
    source = json.loads(source_json.read_text())
    oof = json.loads(metrics_json.read_text()).get("oof_accuracy") if metrics_json.exists() else None
    competition = params.competition or source.get("competition")
    message = params.message or f"foldwise {_git_commit() or 'uncommitted'} oof_accuracy={oof}"
    record = {"file": str(submission), "sha256": digest, "competition": competition, "message": message,
              "oof_accuracy": oof, "uploaded": False}
    reason = None
    if not params.enabled:
        reason = "submit.enabled is false in params.yaml"
    elif not competition:
        reason = (f"no competition to submit to: data came from '{source['source']}'; "
                  "set submit.competition to a Kaggle slug")
    elif credentials_source() is None:
        reason = NO_CREDENTIALS
    if reason:
        record["reason"] = reason
        _logger.warning("not uploading %s: %s", submission, reason)
        print(f"submit: not uploaded: {reason}")
    else:
        client = api()
        try:
            response = client.competition_submit(str(submission), message, competition, quiet=True)
        except Exception as exc:  # the kaggle client raises requests' HTTPError and others  # noqa: BLE001
            raise UserError(f"kaggle: submitting to '{competition}' failed: {str(exc).splitlines()[0][:200]}") from None
        record.update({"uploaded": True, "response": str(response)})
        print(f"submit: uploaded {submission} to '{competition}'")
    write_json(receipt, record)
    return record


def main() -> None:
    run(load_section("submit", SubmitParams))
