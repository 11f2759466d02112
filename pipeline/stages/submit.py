"""Stage `submit`: validate the submission, score it locally when a solution came with the data,
upload it to Kaggle once, wait for its score. With `submit.mode: code` (a code competition) it
packages the model, writes the notebook, pushes and submits it instead (pipeline/kaggle/code.py).

    python -m pipeline.stages.submit          # what dvc.yaml runs; by hand: foldwise submit [--dry-run]

1. Validates submissions/submission.csv against the sample submission (columns and order, id set
   and count, no empty cell, labels in the class set): nothing invalid is ever uploaded.
2. Scores it on the solution file a local or kaggle-dataset source brought (the embedded
   competition's public part), reported beside the OOF score, never used to choose.
3. Uploads with the real kaggle client only when `submit.enabled` is true, credentials exist and
   the competition holds no submission of this very file (pipeline/kaggle/submissions.py).
Writes submissions/receipt.json (DVC metrics: public score next to the OOF score) and adds the
file to submissions/history.json.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.config import load_section, params_hash, read_params
from pipeline.core.console import run_stage
from pipeline.core.provenance import git_commit
from pipeline.data.prepare import submission_spec
from pipeline.evaluation.metrics import from_meta
from pipeline.evaluation.score import score_submission
from pipeline.kaggle.client import NO_CREDENTIALS, api, credentials_source
from pipeline.kaggle.code import run_code_submission
from pipeline.kaggle.history import update_history
from pipeline.kaggle.params import SubmitParams
from pipeline.kaggle.submissions import build_message, upload_once
from serve.atomic import sha256_file, write_json
from serve.submission import validate_submission


def _why_not(params: SubmitParams, competition: str | None, source: dict) -> str | None:
    """Why nothing is uploaded (None: go ahead)."""
    if not params.enabled and not params.dry_run:
        return "submit.enabled is false in params.yaml"
    if not competition:
        return (f"no competition to submit to: data came from '{source.get('source', '?')}'; "
                "set submit.competition to a Kaggle slug")
    if credentials_source() is None:
        return NO_CREDENTIALS
    return None


def run(params: SubmitParams, submission: Path = paths.SUBMISSION, receipt: Path = paths.RECEIPT,
        prepared: Path = paths.PREPARED, source_json: Path = paths.SOURCE_JSON,
        metrics_json: Path = paths.METRICS_JSON, history: Path = paths.HISTORY,
        sleep: Callable[[float], None] = time.sleep, write_outputs: bool = True) -> dict:
    """Steps 1-3 of the module docstring for a file submission; returns the receipt. `write_outputs`
    False (`foldwise submit --dry-run`) leaves receipt and history as the last stage run wrote them."""
    files = paths.Prepared(prepared)
    meta = json.loads(files.meta.read_text())
    spec = submission_spec(meta)
    validate_submission(submission, files.sample_submission, spec)
    metric = from_meta(meta).name
    digest = sha256_file(submission)
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
        "uploaded": False, "time": datetime.now(UTC).isoformat(timespec="seconds")}
    local = None
    if source.get("solution") and Path(source["solution"]).is_file():
        score = score_submission(submission, source["solution"], metric, spec.positive_class)
        local = round(score.value, 6)
        record["local_score"] = {"solution": source["solution"], "metric": metric, "score": local,
                                 "accuracy": round(score.accuracy, 6), "rows": score.n_scored}
        print(f"submit: local score on {source['solution']}: {metric} {score.value:.4f} ({score.n_scored} rows)")
    if write_outputs:
        update_history(history, digest, {"kind": "file", "file": str(submission), "metric": metric, "oof_score": oof,
                                          "oof_accuracy": oof_accuracy, "params_hash": phash,
                                          "commit": record["commit"], "competition": competition,
                                          "local_score": local, "time": record["time"]})
    reason = _why_not(params, competition, source)
    if reason:
        record["reason"] = reason
        print(f"submit: not uploaded: {reason}" + (" (dry run: the file is valid)" if params.dry_run else ""))
        if write_outputs:
            write_json(receipt, record)
        return record
    upload_once(api(), params, competition, submission, digest, message, record, receipt, sleep)
    if record.get("public_score") is not None:
        print(f"submit: public score {record['public_score']} (OOF {metric} {oof})")
        update_history(history, digest, {"public_score": record["public_score"], "ref": record.get("ref")})
    if write_outputs:
        write_json(receipt, record)
    return record


def main(dry_run: bool = False) -> dict:
    """Submit as params.yaml `submit` says (`dry_run`, from `foldwise submit --dry-run`: validate and look
    for a duplicate; upload nothing, and for a file submission leave the stage's outputs untouched)."""
    params = load_section("submit", SubmitParams)
    if dry_run:
        params = dataclasses.replace(params, dry_run=True)
    if params.mode == "code":  # a code competition: package, notebook, push
        return run_code_submission(params)
    return run(params, write_outputs=not dry_run)


if __name__ == "__main__":
    run_stage(main)
