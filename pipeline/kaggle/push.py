"""`foldwise kaggle push`: push the notebook, wait for its run, submit that version, record the score.

    foldwise kaggle push                # after `foldwise kaggle package` and `foldwise kaggle notebook`
    foldwise kaggle push --dry-run      # write kaggle-metadata.json and say what would happen

1. kaggle/kernel/kernel-metadata.json: the notebook's owner/slug, private, internet off (Kaggle
   refuses code submissions from notebooks with internet), GPU as `submit.gpu`, the competition
   and the model dataset as sources.
2. Nothing twice: a submission whose message carries the notebook's tag (`sha256:<16 hex>`)
   means done; a current notebook version whose source carries it is not pushed again.
3. `kernels push`, then the session status is polled with backoff (`submit.kernel_timeout`);
   the output files and the log are fetched to kaggle/output/v<version>/ (a failed run ends in
   one line naming the log). The output submission.csv is validated against the sample.
4. The version is submitted to the competition (`competitions submit -k ... -v ...`), then the
   submission list is polled until Kaggle has scored it (Kaggle re-runs the notebook on the
   hidden test set first).
Returns the receipt: kernel slug and version, dataset and version, submission ref, status,
public score, OOF score, and whether anything was pushed or submitted.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.provenance import git_commit
from pipeline.data.prepare import submission_spec
from pipeline.kaggle.client import call, poll_until, sdk_call, status_name
from pipeline.kaggle.package import Refs
from pipeline.kaggle.params import SubmitParams
from pipeline.kaggle.submissions import find_duplicate, list_submissions, poll
from serve.atomic import write_json
from serve.errors import UserError
from serve.submission import validate_submission

_logger = logging.getLogger(__name__)
OUTPUT_FILE = "submission.csv"
KERNEL_VERSION = re.compile(r"\bkernel (\S+) v(\d+)\b.*\bdataset (\S+) v(\d+)\b")
DONE = ("complete", "error", "cancel_acknowledged")


def kernel_metadata(refs_: Refs, code_file: str, gpu: bool) -> dict:
    """kernel-metadata.json as `kaggle kernels push` reads it."""
    slug = refs_.kernel.split("/")[1]
    return {"id": refs_.kernel, "title": slug, "code_file": code_file, "language": "python",
            "kernel_type": "notebook", "is_private": True, "enable_gpu": gpu, "enable_tpu": False,
            "enable_internet": False, "dataset_sources": [refs_.dataset], "competition_sources": [refs_.competition],
            "kernel_sources": [], "model_sources": []}


def get_kernel(client: Any, ref: str) -> Any:
    """Kaggle's current version of notebook `ref` (ApiGetKernelResponse), or None when there is none."""
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug = ref.split("/")
    return sdk_call(client, "kernels.kernels_api_client", "get_kernel", request, missing_ok=True)


def wait_for_run(client: Any, ref: str, params: SubmitParams, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> tuple[str, str]:
    """Poll the notebook's session with backoff until it is complete / error; (status, failure message)."""
    def check() -> tuple[bool, tuple[str, str], str]:
        response = call(lambda: client.kernels_status(ref), ref, "checking notebook", kind="kernel")
        status = status_name(getattr(response, "status", ""))
        return status in DONE, (status, getattr(response, "failure_message", "") or ""), status

    done, (status, failure) = poll_until(check, params.kernel_timeout, params.poll_interval, f"notebook {ref}",
                                         sleep, clock)
    if not done:
        raise UserError(f"kaggle: notebook '{ref}' is still '{status}' after {params.kernel_timeout:.0f}s "
                        "(submit.kernel_timeout); run the same command again later (nothing is pushed twice)")
    return status, failure


def fetch_output(client: Any, ref: str, version: int) -> tuple[Path, Path | None]:
    """The run's output files and log into kaggle/output/v<version>/; (folder, log path or None)."""
    folder = paths.KAGGLE_OUTPUT / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    files, _ = call(lambda: client.kernels_output(ref, str(folder), force=True, quiet=True), ref,
                    "fetching the output of notebook", kind="kernel")
    logs = [Path(f) for f in files if str(f).endswith(".log")]
    return folder, (logs[0] if logs else None)


def _message(params: SubmitParams, rec: dict, phash: str, tag: str) -> str:
    if params.message:
        return f"{params.message} kernel {rec['kernel']} v{rec['kernel_version']} dataset {rec['dataset']} " \
               f"v{rec['dataset_version']} sha256:{tag[:16]}"
    oof = rec.get("oof_score")
    oof_text = f" oof {rec['metric']} {oof:.5f}" if isinstance(oof, (int, float)) else ""
    return (f"foldwise code {git_commit() or 'uncommitted'} params {phash}{oof_text} kernel {rec['kernel']} "
            f"v{rec['kernel_version']} dataset {rec['dataset']} v{rec['dataset_version']} sha256:{tag[:16]}")


def _from_duplicate(record: dict, duplicate: dict) -> None:
    m = KERNEL_VERSION.search(duplicate.get("description", ""))
    if m:
        record.update(kernel_version=int(m.group(2)), dataset_version=int(m.group(4)))
    record.update({k: duplicate.get(k) for k in ("ref", "status", "public_score", "private_score", "error")})


def push_once(client: Any, refs_: Refs, folder: Path, tag: str, record: dict) -> int:
    """Push the notebook unless its current version is this notebook (and did not fail); its version."""
    existing = call(lambda: get_kernel(client, refs_.kernel), refs_.kernel, "looking up notebook", kind="kernel")
    if existing is not None and f"foldwise-notebook sha256:{tag[:16]}" in (getattr(existing.blob, "source", "") or ""):
        version = int(existing.metadata.current_version_number)
        status = status_name(getattr(call(lambda: client.kernels_status(refs_.kernel), refs_.kernel,
                                          "checking notebook", kind="kernel"), "status", ""))
        if status not in ("error", "cancel_acknowledged"):
            print(f"push: notebook '{refs_.kernel}' version {version} is this notebook already ({status}); not pushed")
            return version
        _logger.info("notebook %s version %d failed (%s): pushing it again", refs_.kernel, version, status)
    response = call(lambda: client.kernels_push(str(folder)), refs_.kernel, "pushing notebook", kind="kernel")
    problems = [f"{name} {bad}" for name in ("dataset", "competition", "kernel", "model")
                if (bad := getattr(response, f"invalid_{name}_sources", None))]
    if getattr(response, "error", None) or problems:
        detail = getattr(response, "error", None) or "; ".join(f"unknown {p} source" for p in problems)
        raise UserError(f"kaggle: pushing notebook '{refs_.kernel}' failed: Kaggle says: {str(detail)[:300]}")
    record["pushed"] = True
    version = int(response.version_number)
    print(f"push: pushed notebook '{refs_.kernel}' as version {version} ({getattr(response, 'url', '')})")
    return version


def run(client: Any, refs_: Refs, notebook: Path, tag: str, package: dict, params: SubmitParams, meta: dict,
        sample: Path, oof: dict, phash: str, record: dict, dry_run: bool = False,
        sleep: Callable[[float], None] = time.sleep) -> dict:
    """Steps 1-4 of the module docstring; fills and returns the receipt `record` (filled as it goes, so
    that the caller can keep it when a later step fails)."""
    folder = notebook.parent
    write_json(folder / "kernel-metadata.json", kernel_metadata(refs_, notebook.name, params.gpu))
    record.update({"mode": "code", "competition": refs_.competition, "kernel": refs_.kernel,
                    "notebook": str(notebook), "notebook_sha256": tag, "dataset": package["dataset"],
                    "dataset_version": package.get("version"), "model": package.get("model"),
                    "graph": package.get("graph"), "metric": oof.get("metric"), "oof_score": oof.get("score"),
                    "oof_accuracy": oof.get("accuracy"),
                    "params_hash": phash, "gpu": params.gpu, "pushed": False, "submitted": False})
    duplicate = find_duplicate(list_submissions(client, refs_.competition), tag)
    if duplicate is not None:
        _from_duplicate(record, duplicate)
        record["reason"] = f"already submitted as {duplicate['ref']}"
        if duplicate["status"] == "pending" and not dry_run:
            record.update({k: v for k, v in poll(client, refs_.competition, duplicate["ref"], params, sleep).items()
                           if k in ("status", "public_score", "private_score", "error", "timed_out")})
        print(f"push: not pushed or submitted: this notebook was already submitted to '{refs_.competition}' as "
              f"{duplicate['ref']} ({record['status']}, public score {record.get('public_score')})")
        return record
    if dry_run:
        record["reason"] = "dry run"
        print(f"push: dry run: would push {notebook} as '{refs_.kernel}' (internet off, GPU {params.gpu}, sources "
              f"{refs_.competition} + {package['dataset']}) and submit it to '{refs_.competition}'")
        return record
    version = push_once(client, refs_, folder, tag, record)
    record["kernel_version"] = version
    status, failure = wait_for_run(client, refs_.kernel, params, sleep)
    out_dir, log = fetch_output(client, refs_.kernel, version)
    record.update(kernel_status=status, output=str(out_dir), log=str(log) if log else None)
    if status != "complete":
        raise UserError(f"kaggle: notebook '{refs_.kernel}' version {version} ended '{status}' on Kaggle"
                        f"{': ' + failure.splitlines()[0][:200] if failure.strip() else ''}; "
                        f"its log is {log or 'empty'}")
    produced = out_dir / OUTPUT_FILE
    if not produced.is_file():
        raise UserError(f"kaggle: notebook '{refs_.kernel}' version {version} wrote no {OUTPUT_FILE} "
                        f"(outputs in {out_dir}; log {log})")
    validate_submission(produced, sample, submission_spec(meta), name=str(produced))
    message = _message(params, record, phash, tag)
    response = call(lambda: client.competition_submit_code(OUTPUT_FILE, message, refs_.competition,
                                                           kernel=refs_.kernel, kernel_version=version, quiet=True),
                    refs_.competition, "submitting notebook to")
    ref = getattr(response, "ref", None)
    if not ref:
        raise UserError(f"kaggle: submitting notebook '{refs_.kernel}' v{version} to '{refs_.competition}' failed: "
                        f"{getattr(response, 'message', '') or 'no submission ref'}")
    record.update(submitted=True, ref=ref, message=message)
    print(f"push: submitted notebook '{refs_.kernel}' version {version} to '{refs_.competition}' as {ref}; "
          "waiting for the score")
    result = poll(client, refs_.competition, ref, params, sleep)
    record.update({k: result.get(k) for k in ("status", "public_score", "private_score", "error", "timed_out")
                   if k in result})
    if result.get("status") == "error":
        raise UserError(f"kaggle: code submission {ref} to '{refs_.competition}' failed scoring: "
                        f"{result.get('error') or 'no reason given'}")
    return record
