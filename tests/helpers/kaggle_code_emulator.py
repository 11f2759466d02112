"""The code-competition half of the Kaggle emulator (mixed into KaggleEmulator): datasets, notebooks
(kernels) and code submissions, for the REAL `kaggle` client. Request and response fields are
kagglesdk's (camelCase in JSON); enums travel as their names, as kagglesdk writes and reads them.

  blobs.BlobApiService/StartBlobUpload        {type, name, contentLength, ...} -> {token, createUrl}; PUT the bytes
                                              (a resume probe `Content-Range: bytes */N` -> 200 done / 308 / 404)
  datasets.DatasetApiService/GetDatasetStatus {ownerSlug, datasetSlug} -> {status: BLOBS_RECEIVED | READY}
  datasets.DatasetApiService/GetDataset       -> ApiDataset {ref, title, description, currentVersionNumber,
                                              versions: [{versionNumber, versionNotes, creationDate}], ...}
  datasets.DatasetApiService/CreateDataset    {ownerSlug, slug, title, licenseName, isPrivate, files: [{token}],
                                              description} -> {ref, url, status: "ok", error: ""}
  datasets.DatasetApiService/CreateDatasetVersion {ownerSlug, datasetSlug, body: {versionNotes, files,
                                              description}} -> {ref, url, status, error}
  kernels.KernelsApiService/SaveKernel        {slug, newTitle, text, language, kernelType, isPrivate, enableGpu,
                                              enableInternet, datasetDataSources, competitionDataSources, ...}
                                              -> {ref, url, versionNumber, error, invalidDatasetSources, ...}
  kernels.KernelsApiService/GetKernel         {userName, kernelSlug} -> {metadata: {ref, currentVersionNumber,
                                              enableInternet, ...}, blob: {source, language, kernelType, slug}}
  kernels.KernelsApiService/GetKernelSessionStatus {userName, kernelSlug} -> {status: QUEUED | RUNNING |
                                              COMPLETE | ERROR, failureMessage}
  kernels.KernelsApiService/ListKernelSessionOutput {userName, kernelSlug} -> {files: [{url, fileName}], log}
  competitions.CompetitionApiService/CreateCodeSubmission {competitionName, kernelOwner, kernelSlug,
                                              kernelVersion, fileName, submissionDescription} -> {message, ref}

A pushed notebook really runs (tests/helpers/notebook_runner.py: nbclient, a fresh kernel, internet off
unless the metadata turns it on) in a background thread against /kaggle/input-shaped folders:
the competition's files unpacked under <competition slug>/, the dataset's current version under
<dataset slug>/. Its working folder becomes the output; its streams become the log. Kaggle would
re-run a submitted notebook on the hidden test set; the emulator scores the output file of the
submitted version (the same notebook on the public test), and refuses versions that had the
internet on, did not finish, or wrote no such file. `kernel_runner` replaces the notebook run
(e.g. by a canned output) where a test is about the API calls, not the notebook.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CODE_METHODS = ("StartBlobUpload", "GetDatasetStatus", "GetDataset", "CreateDataset", "CreateDatasetVersion",
                "SaveKernel", "GetKernel", "GetKernelSessionStatus", "ListKernelSessionOutput")
KernelRunner = Callable[[dict, Path, Path], tuple[bool, str, str]]  # (version, input, working) -> ok, log, failure


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def nbclient_runner(version: dict, input_dir: Path, working_dir: Path) -> tuple[bool, str, str]:
    """Run the pushed notebook as Kaggle would (tests/helpers/notebook_runner.py)."""
    from nbclient.exceptions import CellExecutionError

    from helpers.notebook_runner import execute

    try:
        _, log = execute(version["text"], input_dir, working_dir, offline=not version["enable_internet"])
        return True, log, ""
    except CellExecutionError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        return False, getattr(exc, "kaggle_log", "[]"), (lines[-1] if lines else "the notebook failed")


class CodeCompetitionEndpoints:
    """Datasets, kernels and code submissions; state lives on the emulator."""

    def _init_code(self) -> None:
        self.blobs: dict[str, dict] = {}            # token -> {name, bytes}
        self.owned_datasets: dict[str, dict] = {}   # owner/slug -> {title, description, versions: [...]}
        self.kernels: dict[str, dict] = {}          # owner/slug -> {versions: [...]}
        self.dataset_pending_polls = 1
        self.kernel_runner: KernelRunner = nbclient_runner
        self.runs: list[threading.Thread] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="kaggle-emulator-"))

    def _stop_code(self) -> None:
        for thread in self.runs:
            thread.join(timeout=600)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------ datasets
    def _files_of(self, entries: list[dict]) -> tuple[dict[str, bytes] | None, str]:
        files = {}
        for entry in entries or []:
            blob = self.blobs.get(entry.get("token", ""))
            if blob is None or blob["bytes"] is None:
                return None, f"Invalid blob token {entry.get('token')!r}"
            files[blob["name"]] = blob["bytes"]
        return files, ""

    def _new_version(self, ds: dict, files: dict, notes: str, description: str | None) -> int:
        number = len(ds["versions"]) + 1
        ds["versions"].append({"number": number, "notes": notes, "files": files, "date": _now(),
                               "polls_left": self.dataset_pending_polls})
        if description is not None:
            ds["description"] = description
        return number

    def _dataset_api(self, method: str, body: dict, user: str) -> tuple[int, Any]:
        if method == "StartBlobUpload":
            token = hashlib.sha256(f"blob/{len(self.blobs)}/{body.get('name')}".encode()).hexdigest()[:24]
            self.blobs[token] = {"name": body.get("name"), "bytes": None, "type": body.get("type")}
            return 200, {"token": token, "createUrl": f"http://localhost:{self.port}/upload/{token}"}
        if method == "CreateDataset":
            ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
            if body.get("ownerSlug") != user:
                return 403, {"code": 403, "message": f"You cannot create datasets for '{body.get('ownerSlug')}'"}
            if ref in self.owned_datasets:
                return 200, {"ref": ref, "status": "error", "error": f"The slug '{body.get('slug')}' is in use"}
            files, why = self._files_of(body.get("files"))
            if files is None:
                return 400, {"code": 400, "message": why}
            ds = {"title": body.get("title"), "license": body.get("licenseName"), "private": body.get("isPrivate"),
                  "description": "", "versions": []}
            self.owned_datasets[ref] = ds
            self._new_version(ds, files, "", body.get("description") or "")
            return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok", "error": ""}
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        ds = self.owned_datasets.get(ref)
        if ds is None:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}
        if method == "CreateDatasetVersion":
            if body.get("ownerSlug") != user:
                return 403, {"code": 403, "message": f"You cannot version '{ref}'"}
            payload = body.get("body") or {}
            files, why = self._files_of(payload.get("files"))
            if files is None:
                return 400, {"code": 400, "message": why}
            self._new_version(ds, files, payload.get("versionNotes") or "", payload.get("description"))
            return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok", "error": ""}
        current = ds["versions"][-1]
        if method == "GetDatasetStatus":
            if current["polls_left"] > 0:
                current["polls_left"] -= 1
                return 200, {"status": "BLOBS_RECEIVED"}
            return 200, {"status": "READY"}
        return 200, {"ref": ref, "title": ds["title"], "description": ds["description"], "isPrivate": ds["private"],
                     "licenseName": ds["license"], "currentVersionNumber": current["number"],
                     "url": f"https://www.kaggle.com/datasets/{ref}",
                     "versions": [{"versionNumber": v["number"], "versionNotes": v["notes"],
                                   "creationDate": v["date"]} for v in reversed(ds["versions"])]}

    # ------------------------------------------------------------ kernels
    def _save_kernel(self, body: dict, user: str) -> tuple[int, Any]:
        ref = body.get("slug") or ""
        if ref.split("/")[0] != user:
            return 403, {"code": 403, "message": f"You cannot save notebooks for '{ref.split('/')[0]}'"}
        bad_comp = [c for c in body.get("competitionDataSources") or [] if c not in self.competitions]
        bad_data = [d for d in body.get("datasetDataSources") or [] if d not in self.owned_datasets]
        if bad_comp or bad_data:
            return 200, {"ref": "", "error": "", "invalidCompetitionSources": bad_comp,
                         "invalidDatasetSources": bad_data}
        kernel = self.kernels.setdefault(ref, {"versions": [], "title": body.get("newTitle")})
        version = {"number": len(kernel["versions"]) + 1, "text": body.get("text") or "", "status": "QUEUED",
                   "enable_internet": bool(body.get("enableInternet")), "enable_gpu": bool(body.get("enableGpu")),
                   "private": body.get("isPrivate"), "competitions": list(body.get("competitionDataSources") or []),
                   "datasets": {d: len(self.owned_datasets[d]["versions"])
                                for d in body.get("datasetDataSources") or []},
                   "outputs": {}, "log": "", "failure": ""}
        kernel["versions"].append(version)
        thread = threading.Thread(target=self._run_kernel, args=(ref, version), daemon=True)
        self.runs.append(thread)
        thread.start()
        return 200, {"ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}",
                     "versionNumber": version["number"], "error": "", "kernelId": abs(hash(ref)) % 10**6}

    def _run_kernel(self, ref: str, version: dict) -> None:
        run_dir = self._workdir / ref.replace("/", "__") / f"v{version['number']}"
        input_dir, working = run_dir / "input", run_dir / "working"
        for slug in version["competitions"]:
            with zipfile.ZipFile(self.competitions[slug]["zip"]) as zf:
                zf.extractall(input_dir / slug)
        for ds_ref, number in version["datasets"].items():
            folder = input_dir / ds_ref.split("/")[1]
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in self.owned_datasets[ds_ref]["versions"][number - 1]["files"].items():
                (folder / name).write_bytes(data)
        version["status"] = "RUNNING"
        ok, log, failure = self.kernel_runner(version, input_dir, working)
        outputs = {p.name: p.read_bytes() for p in sorted(working.glob("*")) if p.is_file()} if working.exists() else {}
        with self._lock:
            version.update(outputs=outputs, log=log, failure=failure, status="COMPLETE" if ok else "ERROR")

    def _kernel_api(self, method: str, body: dict, user: str) -> tuple[int, Any]:
        if method == "SaveKernel":
            return self._save_kernel(body, user)
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        kernel = self.kernels.get(ref)
        if kernel is None:
            return 404, {"code": 404, "message": f"Notebook {ref} not found"}
        version = kernel["versions"][-1]
        if method == "GetKernel":
            return 200, {"metadata": {"ref": ref, "slug": ref.split("/")[1], "title": kernel["title"],
                                      "currentVersionNumber": version["number"], "language": "python",
                                      "kernelType": "notebook", "isPrivate": version["private"],
                                      "enableGpu": version["enable_gpu"], "enableInternet": version["enable_internet"],
                                      "datasetDataSources": list(version["datasets"]),
                                      "competitionDataSources": version["competitions"]},
                         "blob": {"source": version["text"], "language": "python", "kernelType": "notebook",
                                  "slug": ref.split("/")[1]}}
        if method == "GetKernelSessionStatus":
            return 200, {"status": version["status"], "failureMessage": version["failure"]}
        files = [{"fileName": name, "url": f"http://localhost:{self.port}/files/kernel/{ref}/{version['number']}/{name}"}
                 for name in version["outputs"]]
        return 200, {"files": files, "log": version["log"], "nextPageToken": ""}

    def kernel_file(self, parts: list[str]) -> bytes | None:
        """GET /files/kernel/<owner>/<slug>/<version>/<name>."""
        if len(parts) != 6:
            return None
        kernel = self.kernels.get(f"{parts[2]}/{parts[3]}")
        if kernel is None or not parts[4].isdigit() or not 1 <= int(parts[4]) <= len(kernel["versions"]):
            return None
        return kernel["versions"][int(parts[4]) - 1]["outputs"].get(parts[5])

    # ------------------------------------------------------------ code submissions
    def _code_submission(self, body: dict, comp: dict, slug: str) -> tuple[int, Any]:
        ref = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
        kernel = self.kernels.get(ref)
        number = int(body.get("kernelVersion") or (len(kernel["versions"]) if kernel else 0))
        if kernel is None or not 1 <= number <= len(kernel["versions"]):
            return 404, {"code": 404, "message": f"Notebook {ref} version {number} not found"}
        version = kernel["versions"][number - 1]
        if slug not in version["competitions"]:
            return 400, {"code": 400, "message": f"Notebook {ref} does not use the competition '{slug}' as a source"}
        if version["enable_internet"]:
            return 400, {"code": 400, "message": "Notebooks with internet access enabled cannot be submitted"}
        if version["status"] != "COMPLETE":
            return 400, {"code": 400, "message": f"Notebook version {number} has not completed ({version['status']})"}
        data = version["outputs"].get(body.get("fileName") or "")
        if data is None:
            return 400, {"code": 400,
                         "message": f"Notebook version {number} has no output file {body.get('fileName')!r}"}
        score, error = self._score(comp, data)
        sub_ref = 1000 + len(self.submissions)
        self.submissions.append({
            "ref": sub_ref, "competition": slug, "message": body.get("submissionDescription", ""),
            "file_name": body.get("fileName"), "sha256": hashlib.sha256(data).hexdigest(), "score": score,
            "error": error, "polls_left": comp["pending_polls"], "kernel": ref, "kernel_version": number,
            "date": datetime.now(UTC).replace(tzinfo=None)})
        return 200, {"message": "Successfully submitted", "ref": sub_ref}

    def handle_code(self, method: str, body: dict, user: str) -> tuple[int, Any]:
        if method in ("SaveKernel", "GetKernel", "GetKernelSessionStatus", "ListKernelSessionOutput"):
            return self._kernel_api(method, body, user)
        return self._dataset_api(method, body, user)

    def put_blob(self, token: str, data: bytes, content_range: str) -> int:
        """A blob PUT (or resume probe); the HTTP status."""
        blob = self.blobs.get(token)
        if blob is None:
            return 404
        if content_range.startswith("bytes */"):  # "how much do you have?"
            return 200 if blob["bytes"] is not None else 308
        blob["bytes"] = data
        return 200
