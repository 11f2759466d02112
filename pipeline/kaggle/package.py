"""`foldwise kaggle package`: the model as a Kaggle dataset, created or versioned once per content.

    foldwise kaggle package              # build kaggle/dataset/, then create or version the dataset on Kaggle
    foldwise kaggle package --dry-run    # build kaggle/dataset/ only

kaggle/dataset/ (flat, as the kaggle client uploads it):
  ensemble_int8.onnx (or the graph graph.py chose)   foldwise_serve-<version>+<src hash>-py3-none-any.whl
  the dependency wheels of `submit.wheels`            foldwise-manifest.json (what the notebook checks)
  dataset-metadata.json (title, owner/slug, licence, a description ending in the content tag)
The content tag is the sha256 over every file's sha256; Kaggle's copy is looked up first (its
description carries the tag of its current version), so the same content is never uploaded
twice. A new version's notes carry the commit, params hash, OOF score and each file's hash.
Then waits (with backoff) until Kaggle has processed the version, and writes kaggle/package.json
(dataset, version number, tag, whether anything was uploaded).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.config import params_hash, read_params
from pipeline.core.provenance import git_commit
from pipeline.export.choice import choose_graph
from pipeline.kaggle.client import api, call, poll_until, sdk_call, status_name, username
from pipeline.kaggle.params import SubmitParams
from pipeline.kaggle.wheels import build_serve_wheel, default_requirements, download_wheels, serve_sources, source_hash
from serve.atomic import replace_dir, sha256_file, write_json
from serve.errors import UserError, first_line

_logger = logging.getLogger(__name__)
DATASET_DIR = paths.KAGGLE_DATASET
RECORD = paths.KAGGLE_PACKAGE
MANIFEST = "foldwise-manifest.json"
METADATA = "dataset-metadata.json"
LICENSE = "CC0-1.0"  # the kaggle CLI's own default (`kaggle datasets init`); the dataset stays private


@dataclass(frozen=True)
class Refs:
    """Where things go on Kaggle."""
    competition: str
    dataset: str  # owner/slug
    kernel: str   # owner/slug


def _slug(text: str, limit: int = 50) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:limit].strip("-")


def refs(params: SubmitParams, source_json: Path = paths.SOURCE_JSON) -> Refs:
    """The competition, dataset and kernel of params.yaml's `submit` (defaults named after the competition)."""
    source = json.loads(source_json.read_text()) if source_json.exists() else {}
    competition = params.competition or source.get("competition")
    if not competition:
        raise UserError(f"no competition: the data came from '{source.get('source', '?')}'; set submit.competition "
                        "to the Kaggle slug of the code competition")
    owner = username()
    if owner is None and (params.dataset is None or params.kernel is None):
        raise UserError("no Kaggle username in the credentials (KAGGLE_USERNAME or ~/.kaggle/kaggle.json): set "
                        "submit.dataset and submit.kernel to <your username>/<slug> in params.yaml")
    dataset = params.dataset or f"{owner}/{_slug(competition, 41)}-foldwise"
    kernel = params.kernel or f"{owner}/{_slug(competition, 35)}-foldwise-infer"  # titles: at most 50 characters
    slug, kslug = dataset.split("/")[1], kernel.split("/")[1]
    if not 6 <= len(slug) <= 50:
        raise UserError(f"submit.dataset: Kaggle wants a dataset slug of 6-50 characters, got '{slug}' ({len(slug)})")
    if not 5 <= len(kslug) <= 50:
        raise UserError(f"submit.kernel: Kaggle wants a notebook slug of 5-50 characters, got '{kslug}' ({len(kslug)})")
    return Refs(competition, dataset, kernel)


MODEL_SECTIONS = ("download", "prepare", "train", "ensemble", "distill", "export")


def model_params_hash() -> str:
    """The params hash of the sections that produce the model (not `submit`: how it is sent changes nothing)."""
    params = read_params()
    return params_hash({k: params.get(k) for k in MODEL_SECTIONS})


def _inputs(params: SubmitParams, refs_: Refs, model_sha: str) -> dict:
    requirements = params.wheels if params.wheels is not None else default_requirements(params.gpu)
    return {"model_sha256": model_sha, "serve_sha256": source_hash(serve_sources()), "requirements": requirements,
            "wheels_python": params.wheels_python, "dataset": refs_.dataset, "competition": refs_.competition}


def _intact(folder: Path, manifest: dict | None, names: list[str]) -> bool:
    """True when each of `names` lies in `folder` with the hash `manifest` recorded for it."""
    files = (manifest or {}).get("files", {})
    return all(n in files and (folder / n).is_file() and sha256_file(folder / n) == files[n] for n in names)


def _previous(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _serve_wheel(old: dict | None, folder: Path, stage: Path, inputs: dict) -> Path:
    """The serve wheel: the previous build's when the sources did not change, else a new build."""
    if old and old.get("serve_sha256") == inputs["serve_sha256"] and _intact(folder, old, [old["serve_wheel"]]):
        shutil.copyfile(folder / old["serve_wheel"], stage / old["serve_wheel"])
        return stage / old["serve_wheel"]
    return build_serve_wheel(stage)


def _dependency_wheels(old: dict | None, folder: Path, stage: Path, inputs: dict) -> list[Path]:
    """The dependency wheels: the previous download's when the requirements are the same, else pip download."""
    same = old and all(old.get("inputs", {}).get(k) == inputs[k] for k in ("requirements", "wheels_python"))
    if same and _intact(folder, old, old.get("wheels", [])):
        for name in old["wheels"]:
            shutil.copyfile(folder / name, stage / name)
        return [stage / n for n in old["wheels"]]
    return download_wheels(inputs["requirements"], stage, inputs["wheels_python"])


def version_notes(manifest: dict) -> str:
    """Commit, params hash, OOF score, file hashes and the content tag, for the dataset version."""
    files = manifest["files"]
    shown = [n for n in files if n == manifest["model"] or n == manifest["serve_wheel"]]
    listed = ", ".join(f"{n} {files[n][:12]}" for n in shown)
    more = len(files) - len(shown)
    if more:
        listed += f", {more} dependency wheels (hashes in {MANIFEST})"
    score = manifest.get("oof_score")
    oof = f"oof {manifest['metric']} {score:.5f}" if isinstance(score, (int, float)) else "oof n/a"
    return (f"foldwise {manifest.get('commit') or 'uncommitted'} params {manifest['params_hash']} {oof} "
            f"graph {manifest['graph']}; files: {listed} sha256:{manifest['tag'][:16]}")


def build(params: SubmitParams, refs_: Refs, models: Path = paths.MODELS, out: Path = DATASET_DIR) -> dict:
    """Build (or reuse) the dataset folder and return its manifest."""
    export_json = models / paths.EXPORT_JSON.name
    if not export_json.is_file():
        raise UserError(f"{export_json}: not found; run the pipeline up to `export` first (dvc repro)")
    export = json.loads(export_json.read_text())
    graph, why = choose_graph(export, params.gpu, params.graph)
    model = paths.graph(graph, models)
    if not model.is_file():
        raise UserError(f"{model}: not found (submit.graph chose {graph}); run `foldwise export` first")
    inputs = _inputs(params, refs_, sha256_file(model))
    old = _previous(out)
    if old and old.get("inputs") == inputs and _intact(out, old, list(old.get("files", {}))):
        _logger.info("%s is up to date (%s, tag %s)", out, old["model"], old["tag"][:16])
        return old
    _logger.info("building %s: %s (%s)", out, model.name, why)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        stage = Path(tmp) / out.name
        stage.mkdir()
        shutil.copyfile(model, stage / model.name)
        wheel = _serve_wheel(old, out, stage, inputs)
        deps = _dependency_wheels(old, out, stage, inputs)
        files = {p.name: sha256_file(p) for p in sorted(stage.iterdir())}
        tag = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        fp32 = export.get("fp32") or {}
        manifest = {
            "format": 1, "generator": "foldwise", "competition": refs_.competition, "dataset": refs_.dataset,
            "model": model.name, "graph": graph, "graph_why": why, "model_sha256": files[model.name],
            "serve_wheel": wheel.name, "serve_sha256": inputs["serve_sha256"],
            "requirements": inputs["requirements"], "wheels": [p.name for p in deps],
            "wheels_python": params.wheels_python, "metric": fp32.get("metric", "accuracy"),
            "oof_score": (export.get(graph) or {}).get("oof_score"), "fp32_oof_score": fp32.get("oof_score"),
            "oof_accuracy": (export.get(graph) or {}).get("oof_accuracy"),
            "params_hash": model_params_hash(), "commit": git_commit(), "files": files, "inputs": inputs,
            "tag": tag}
        write_json(stage / MANIFEST, manifest)
        title = f"{refs_.competition[:34]} foldwise model"
        write_json(stage / METADATA, {
            "title": title, "id": refs_.dataset, "licenses": [{"name": LICENSE}], "keywords": [],
            "description": (f"foldwise model for the code competition {refs_.competition}: {model.name} ({graph}), "
                            f"the serve/ wheel and {len(deps)} dependency wheels; see {MANIFEST}. "
                            f"sha256:{tag[:16]}")})
        replace_dir(stage, out)
    return manifest


def get_dataset(client: Any, ref: str) -> Any:
    """Kaggle's record of dataset `ref` (ApiDataset), or None when it does not exist."""
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    request = ApiGetDatasetRequest()
    request.owner_slug, request.dataset_slug = ref.split("/")
    return sdk_call(client, "datasets.dataset_api_client", "get_dataset", request, missing_ok=True)


def current_holds(dataset: Any, tag: str) -> bool:
    """True when the dataset's current version is the content tagged `tag` (its description or notes say so)."""
    if f"sha256:{tag[:16]}" in (getattr(dataset, "description", "") or ""):
        return True
    current = getattr(dataset, "current_version_number", None)
    return any(getattr(v, "version_number", None) == current and f"sha256:{tag[:16]}" in (v.version_notes or "")
               for v in getattr(dataset, "versions", None) or [])


def wait_ready(client: Any, ref: str, params: SubmitParams, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> str:
    """Poll the dataset's status with backoff until Kaggle has processed it ('ready')."""
    def check() -> tuple[bool, str, str]:
        status = status_name(call(lambda: client.dataset_status(ref), ref, "checking dataset", kind="dataset"))
        if status in ("failed", "deleted"):
            raise UserError(f"kaggle: dataset '{ref}' is {status} on Kaggle: see https://www.kaggle.com/datasets/{ref}")
        return status == "ready", status, status

    ready, status = poll_until(check, params.poll_timeout, params.poll_interval, f"dataset {ref}", sleep, clock)
    if not ready:
        raise UserError(f"kaggle: dataset '{ref}' is still '{status}' after {params.poll_timeout:.0f}s; run the "
                        "same command again later (nothing is uploaded twice)")
    return status


def _check(response: Any, ref: str, action: str) -> None:
    error = getattr(response, "error", None)
    if error:
        raise UserError(f"kaggle: {action} '{ref}' failed: Kaggle says: {first_line(error, 300)}")


def upload(client: Any, manifest: dict, params: SubmitParams, folder: Path = DATASET_DIR,
           sleep: Callable[[float], None] = time.sleep) -> dict:
    """Create or version the dataset unless its current version already holds this content."""
    ref, tag = manifest["dataset"], manifest["tag"]
    existing = call(lambda: get_dataset(client, ref), ref, "looking up dataset", kind="dataset")
    record = {"dataset": ref, "tag": tag, "model": manifest["model"], "graph": manifest["graph"],
              "uploaded": False, "time": datetime.now(UTC).isoformat(timespec="seconds")}
    if existing is not None and current_holds(existing, tag):
        print(f"package: dataset '{ref}' version {existing.current_version_number} already holds this content "
              f"(sha256:{tag[:16]}); nothing uploaded")
    else:
        size = sum(p.stat().st_size for p in folder.iterdir())
        what = "creating" if existing is None else "versioning"
        print(f"package: {what} dataset '{ref}' ({len(manifest['files']) + 1} files, {size / 2**20:.1f} MiB)")
        if existing is None:
            response = call(lambda: client.dataset_create_new(str(folder), public=False, quiet=True), ref,
                            "creating dataset", kind="dataset")
        else:
            notes = version_notes(manifest)
            response = call(lambda: client.dataset_create_version(str(folder), notes, quiet=True), ref,
                            "versioning dataset", kind="dataset")
        _check(response, ref, f"{what} dataset")
        record["uploaded"] = True
    wait_ready(client, ref, params, sleep)
    current = call(lambda: get_dataset(client, ref), ref, "looking up dataset", kind="dataset")
    if current is None:
        raise UserError(f"kaggle: looking up dataset '{ref}' failed: Kaggle does not list it (404) although it "
                        "is ready; run the same command again in a minute (nothing is uploaded twice)")
    record["version"] = getattr(current, "current_version_number", None)
    record["url"] = f"https://www.kaggle.com/datasets/{ref}"
    print(f"package: dataset '{ref}' version {record['version']} is ready ({manifest['model']}, {manifest['graph']})")
    write_json(RECORD, record)
    return record


def run(params: SubmitParams, dry_run: bool = False) -> dict:
    """`foldwise kaggle package`: build, then (unless `dry_run`) upload."""
    refs_ = refs(params)
    manifest = build(params, refs_)
    print(f"package: {DATASET_DIR}/ holds {manifest['model']} ({manifest['graph_why']}), {manifest['serve_wheel']}"
          f"{', ' + str(len(manifest['wheels'])) + ' dependency wheels' if manifest['wheels'] else ''}; "
          f"sha256:{manifest['tag'][:16]}")
    if dry_run:
        return {"dataset": refs_.dataset, "tag": manifest["tag"], "uploaded": False, "dry_run": True}
    return upload(api(), manifest, params)
