"""The code-competition path: `foldwise kaggle package | notebook | push`, and `submit.mode: code`.

    foldwise kaggle package && foldwise kaggle notebook && foldwise kaggle push
    dvc repro          # with submit.mode: code and submit.enabled: true, the submit stage runs all three

Each command reads params.yaml's `submit` section. The receipt (submissions/receipt.json, the
submit stage's DVC metrics file) records the kernel slug and version, the dataset and its
version, the submission ref, its status and public score next to the OOF score; the notebook's
tag goes into submissions/history.json, so `foldwise submissions` shows code submissions beside
file ones.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core import paths
from pipeline.kaggle import notebook as nb
from pipeline.kaggle import package, push
from pipeline.kaggle.client import NO_CREDENTIALS, api, credentials_source
from pipeline.kaggle.history import update_history
from pipeline.kaggle.params import SubmitParams
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def _manifest() -> dict:
    path = package.DATASET_DIR / package.MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: not found; run `foldwise kaggle package` first")
    return json.loads(path.read_text())


def _uploaded(manifest: dict) -> dict:
    """kaggle/package.json, when it records the upload of this very package."""
    try:
        record = json.loads(package.RECORD.read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    if record.get("tag") != manifest["tag"] or record.get("version") is None:
        raise UserError(f"{package.DATASET_DIR}/ (sha256:{manifest['tag'][:16]}) is not on Kaggle yet: run "
                        "`foldwise kaggle package` first")
    return record


def push_receipt(params: SubmitParams, notebook: Path | None = None, dry_run: bool = False,
                 receipt: Path = paths.RECEIPT, history: Path = paths.HISTORY,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """`foldwise kaggle push`: push, run, submit; write the receipt and the history entry."""
    refs = package.refs(params)
    manifest = _manifest()
    path = notebook or nb.default_path(refs)
    tag = nb.read_tag(path)
    written_for = json.loads(path.read_text())["metadata"]["foldwise"]
    if written_for.get("dataset_tag") != manifest["tag"] or written_for.get("dataset") != refs.dataset:
        raise UserError(f"{path}: written for another package than {package.DATASET_DIR}/; run "
                        "`foldwise kaggle notebook` again")
    uploaded = ({"dataset": refs.dataset, "model": manifest["model"], "graph": manifest["graph"]} if dry_run
                else _uploaded(manifest))
    prepared = paths.Prepared()
    meta = json.loads(prepared.meta.read_text())
    oof = {"metric": manifest.get("metric"), "score": manifest.get("oof_score"),
           "accuracy": manifest.get("oof_accuracy")}
    record: dict = {"time": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        push.run(api(), refs, path, tag, uploaded, params, meta, prepared.sample_submission, oof,
                 manifest["params_hash"], record, dry_run=dry_run, sleep=sleep)
    finally:  # kept whenever Kaggle holds something of this notebook (a version, a submission), failed or not
        if not dry_run and (record.get("kernel_version") or record.get("ref")):
            write_json(receipt, record)
            update_history(history, tag, {
                "kind": "code", "file": str(path), "metric": oof["metric"], "oof_score": oof["score"],
                "oof_accuracy": oof["accuracy"],
                "params_hash": record.get("params_hash"), "competition": refs.competition, "kernel": refs.kernel,
                "kernel_version": record.get("kernel_version"), "dataset": refs.dataset,
                "dataset_version": record.get("dataset_version"), "ref": record.get("ref"),
                "public_score": record.get("public_score"), "time": record["time"]})
    if record.get("public_score") is not None:
        print(f"push: public score {record['public_score']} (OOF {oof['metric']} {oof['score']}); receipt {receipt}")
    return record


def run_code_submission(params: SubmitParams, receipt: Path = paths.RECEIPT,
              sleep: Callable[[float], None] = time.sleep) -> dict:
    """The submit stage with `submit.mode: code`: package, notebook and push as params.yaml says."""
    reason = None
    if not params.enabled and not params.dry_run:
        reason = "submit.enabled is false in params.yaml"
    elif credentials_source() is None:
        reason = NO_CREDENTIALS
    if reason:
        record = {"mode": "code", "uploaded": False, "reason": reason,
                  "time": datetime.now(UTC).isoformat(timespec="seconds")}
        print(f"submit (code): nothing pushed: {reason}")
        write_json(receipt, record)
        return record
    package.run(params, dry_run=params.dry_run)
    refs = package.refs(params)
    path, _ = nb.write(refs, params)
    record = push_receipt(params, path, dry_run=params.dry_run, receipt=receipt, sleep=sleep)
    if params.dry_run:
        write_json(receipt, record)
    return record
