"""Code competitions through the Kaggle emulator and the real `kaggle` client: package -> push ->
the notebook really runs -> poll -> code submission -> receipt; nothing twice; every failure of
every new endpoint ends in one line naming the fix.

The notebook run is the emulator's (tests/helpers/kaggle_code_emulator.py): nbclient, a fresh kernel, the
internet off inside it (tests/helpers/notebook_runner.py), a /kaggle/input-shaped folder holding the
embedded competition's slice unpacked and the packaged dataset's files as they were uploaded. Its
submission.csv must pass validation and equal `foldwise predict`'s, byte for byte.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import onnx
import pytest

from helpers.cli import assert_one_line_error, run_cli
from helpers.kaggle_emulator import KaggleEmulator
from helpers.kaggle_project import DATASET, KERNEL, SLUG, clean_env, copy_project, no_key, set_params
from helpers.kaggle_project import code_project as build_code_project
from pipeline.evaluation.score import score_submission
from pipeline.export.choice import choose_graph
from serve.predict import predict_file
from serve.submission import SubmissionSpec, validate_submission

WRITES = ("StartBlobUpload", "CreateDataset", "CreateDatasetVersion", "SaveKernel", "CreateCodeSubmission")


@pytest.fixture(scope="module")
def code_project(tmp_path_factory, real_slice, tiny_onnx):
    """(project, competition zip, public solution): prepared, the tiny ensemble as `export` left it."""
    return build_code_project(tmp_path_factory.mktemp("code"), real_slice, tiny_onnx)


def _writes(emulator: KaggleEmulator) -> list[str]:
    return [r["method"] for r in emulator.requests if r["method"] in WRITES]


def _cli(project: Path, emulator: KaggleEmulator, tmp: Path, *args: str):
    r = run_cli(*args, cwd=project, env=clean_env(emulator, tmp))
    no_key(emulator, r.stdout, r.stderr)
    return r


def test_package_push_run_offline_submit_receipt_and_nothing_twice(code_project, kaggle_emulator, tmp_path):
    src, zip_path, solution = code_project
    project = copy_project(src, tmp_path / "project")
    set_params(project, submit={"enabled": True})
    kaggle_emulator.add_competition(SLUG, zip_path, solution, pending_polls=1)

    # dvc repro's submit stage (`foldwise submit`) takes the code path: package, notebook, push, submit
    r = _cli(project, kaggle_emulator, tmp_path, "submit")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    receipt = json.loads((project / "submissions/receipt.json").read_text())
    assert receipt["mode"] == "code" and receipt["kernel"] == KERNEL and receipt["kernel_version"] == 1
    assert receipt["dataset"] == DATASET and receipt["dataset_version"] == 1
    assert receipt["pushed"] and receipt["submitted"] and receipt["status"] == "complete"
    version = kaggle_emulator.kernels[KERNEL]["versions"][0]
    assert version["enable_internet"] is False and version["private"] is True and version["enable_gpu"] is False
    assert version["competitions"] == [SLUG] and version["datasets"] == {DATASET: 1}
    assert version["status"] == "COMPLETE", version["log"]

    # the pushed notebook ran in a fresh kernel (nbclient), the internet off inside it, over /kaggle/input
    # = the competition unpacked + the dataset's files as uploaded; it used serve/ from the dataset's wheel
    log = "".join(entry["data"] for entry in json.loads(version["log"]))
    for needle in ("internet off:", "/serve; onnxruntime", "foldwise-serve-", "images/s on CPUExecutionProvider",
                   "estimate for a hidden test set 10x larger (1,200 images)", "submission.csv: valid, 120 rows"):
        assert needle in log, (needle, log)
    output = project / receipt["output"] / "submission.csv"
    assert {p.name for p in output.parent.iterdir()} == {"submission.csv", f"{KERNEL.split('/')[1]}.log"}
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    sample = project / "data/prepared/sample_submission.csv"
    validate_submission(output, sample, SubmissionSpec.from_dict(meta["submission"]))
    # byte for byte what `foldwise predict` writes for the competition's test file, and the predict stage's file
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "competition")
    expected = tmp_path / "predict.csv"
    r = run_cli("predict", "--model", "models/ensemble.onnx", "--input", str(tmp_path / "competition/test.csv"),
                "--sample", str(tmp_path / "competition/sample_submission.csv"), "--output", str(expected), cwd=project)
    assert r.returncode == 0, r.stderr
    assert output.read_bytes() == expected.read_bytes()
    staged = tmp_path / "stage.csv"
    predict_file(project / "models/ensemble.onnx", project / "data/prepared/test_images.npy", staged,
                 ids_path=project / "data/prepared/test_ids.csv", sample=sample)
    assert output.read_bytes() == staged.read_bytes()

    # the public score is the emulator's accuracy of the file the notebook wrote
    output = project / receipt["output"] / "submission.csv"
    assert receipt["public_score"] == round(score_submission(output, solution, "accuracy").value, 5)
    assert (project / receipt["log"]).is_file()
    sub = kaggle_emulator.submissions[0]
    assert sub["kernel"] == KERNEL and sub["kernel_version"] == 1
    assert f"sha256:{receipt['notebook_sha256'][:16]}" in sub["message"] and f"dataset {DATASET} v1" in sub["message"]
    ds = kaggle_emulator.owned_datasets[DATASET]
    assert ds["private"] and ds["license"] == "CC0-1.0"
    assert sorted(ds["versions"][0]["files"]) == sorted(p.name for p in (project / "kaggle/dataset").iterdir()
                                                        if p.name != "dataset-metadata.json")
    before = _writes(kaggle_emulator)
    assert before.count("SaveKernel") == 1 and before.count("CreateCodeSubmission") == 1

    # a second run (the stage, then the push command alone) uploads, pushes and submits nothing
    again = _cli(project, kaggle_emulator, tmp_path, "submit")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this content" in again.stdout and "already submitted" in again.stdout
    notebook = project / "kaggle/kernel" / f"{KERNEL.split('/')[1]}.ipynb"
    pushed = notebook.read_bytes()
    again = _cli(project, kaggle_emulator, tmp_path, "kaggle", "notebook")
    assert again.returncode == 0 and notebook.read_bytes() == pushed, again.stderr[-2000:]
    again = _cli(project, kaggle_emulator, tmp_path, "kaggle", "push")
    assert again.returncode == 0 and "already submitted" in again.stdout, again.stderr[-2000:]
    assert _writes(kaggle_emulator) == before

    # a new model: a new dataset version whose notes carry params hash, OOF score and file hashes
    model = onnx.load(str(project / "models/ensemble.onnx"))
    model.metadata_props.add(key="retrained", value="yes")
    onnx.save(model, str(project / "models/ensemble.onnx"))
    r = _cli(project, kaggle_emulator, tmp_path, "kaggle", "package")
    assert r.returncode == 0, r.stderr
    assert _writes(kaggle_emulator).count("CreateDatasetVersion") == 1 and len(ds["versions"]) == 2
    manifest = json.loads((project / "kaggle/dataset/foldwise-manifest.json").read_text())
    notes = ds["versions"][1]["notes"]
    for needle in (f"params {manifest['params_hash']}", "oof accuracy 0.10250", manifest["files"]["ensemble.onnx"][:12],
                   manifest["files"][manifest["serve_wheel"]][:12], f"sha256:{manifest['tag'][:16]}"):
        assert needle in notes, (needle, notes)
    assert json.loads((project / "kaggle/package.json").read_text())["version"] == 2


# ------------------------------------------------------------------ failures, in-process


def _canned(submission: bytes):
    """A notebook 'run' that writes the given submission (these tests are about the API, not the notebook)."""
    def run(version: dict, input_dir: Path, working: Path) -> tuple[bool, str, str]:
        working.mkdir(parents=True, exist_ok=True)
        (working / "submission.csv").write_bytes(submission)
        return True, json.dumps([{"stream_name": "stdout", "time": 0.1, "data": "ok\n"}]), ""
    return run


@pytest.fixture(scope="module")
def valid_submission(code_project, tmp_path_factory) -> bytes:
    project, _, _ = code_project
    out = tmp_path_factory.mktemp("sub") / "submission.csv"
    r = run_cli("predict", "--model", "models/ensemble.onnx", "--input", "data/prepared/test_images.npy",
                "--ids", "data/prepared/test_ids.csv", "--sample", "data/prepared/sample_submission.csv",
                "--output", str(out), cwd=project)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


@pytest.fixture
def in_process(code_project, kaggle_emulator, valid_submission, tmp_path, monkeypatch):
    """A copy of the project as the working directory, the emulator's credentials, no retry pauses."""
    from pipeline.kaggle import client

    src, zip_path, solution = code_project
    project = copy_project(src, tmp_path / "project")
    set_params(project, submit={"enabled": True, "poll_interval": 0.01})
    monkeypatch.chdir(project)
    for key, value in clean_env(kaggle_emulator, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(client, "FIRST_WAIT", 0.0)
    kaggle_emulator.add_competition(SLUG, zip_path, solution, pending_polls=1)
    kaggle_emulator.kernel_runner = _canned(valid_submission)
    return project


def _run_stage():
    from pipeline.core.config import load_section
    from pipeline.kaggle.code import run_code_submission
    from pipeline.kaggle.params import SubmitParams

    return run_code_submission(load_section("submit", SubmitParams))


DATASET_FIX = ("submit.dataset",)
KERNEL_FIX = ("submit.kernel",)
NEEDLES = {
    401: lambda m: ("401", "KAGGLE_KEY", "Settings > API"),
    403: lambda m: ("403", *({"CreateCodeSubmission": ("accept its rules", f"competitions/{SLUG}/rules")}.get(m)
                            or (KERNEL_FIX if m in ("SaveKernel", "GetKernel", "GetKernelSessionStatus",
                                                    "ListKernelSessionOutput") else DATASET_FIX))),
    404: lambda m: ("404", *({"CreateCodeSubmission": ("check the slug",)}.get(m)
                            or (KERNEL_FIX if m in ("SaveKernel", "GetKernelSessionStatus", "ListKernelSessionOutput")
                                else DATASET_FIX))),
    429: lambda m: (("daily submission limit", "00:00 UTC") if m == "CreateCodeSubmission"
                    else ("429", "wait a few minutes", "not repeated")),
    503: lambda m: ("503", "kept failing after retries", "try again later"),
}
METHODS = ("StartBlobUpload", "GetDatasetStatus", "GetDataset", "CreateDataset", "CreateDatasetVersion",
           "SaveKernel", "GetKernel", "GetKernelSessionStatus", "ListKernelSessionOutput", "CreateCodeSubmission")
ABSENT_MEANS_NEW = ("GetDataset", "GetKernel")  # 404 there is Kaggle saying "not created yet": create it


@pytest.mark.parametrize("status", sorted(NEEDLES))
@pytest.mark.parametrize("method", METHODS)
def test_each_failure_of_each_endpoint_is_one_line_naming_the_fix(in_process, kaggle_emulator, method, status):
    from serve.errors import UserError

    if method == "CreateDatasetVersion":  # only reached when the dataset exists (with other content)
        kaggle_emulator.owned_datasets[DATASET] = {"title": "old", "license": "CC0-1.0", "private": True,
                                                   "description": "older model sha256:0000000000000000",
                                                   "versions": []}
        kaggle_emulator._new_version(kaggle_emulator.owned_datasets[DATASET], {"old.onnx": b"x"}, "", None)
    if status == 404 and method in ABSENT_MEANS_NEW:  # Kaggle saying "there is none yet": not an error
        kaggle_emulator.fail(method, status, times=1)
        record = _run_stage()  # the dataset is created / the notebook pushed
        assert record["submitted"] and record["status"] == "complete"
        return
    kaggle_emulator.fail(method, status, times=20)
    with pytest.raises(UserError) as err:
        _run_stage()
    message = str(err.value)
    assert "\n" not in message and kaggle_emulator.key not in message
    for needle in NEEDLES[status](method):
        assert needle in message, (method, status, message)
    assert not kaggle_emulator.submissions  # nothing was submitted


def test_one_line_on_the_command_line_and_a_failed_run_names_its_log(code_project, kaggle_emulator, tmp_path):
    src, zip_path, solution = code_project
    project = copy_project(src, tmp_path / "project")
    set_params(project, submit={"enabled": True})
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    kaggle_emulator.fail("SaveKernel", 403, message="You cannot save notebooks for this user")
    r = _cli(project, kaggle_emulator, tmp_path, "submit")
    assert_one_line_error(r, "403", KERNEL, "submit.kernel")

    def broken(version: dict, input_dir: Path, working: Path) -> tuple[bool, str, str]:
        return False, json.dumps([{"stream_name": "stderr", "time": 1.0, "data": "FileNotFoundError: test.csv\n"}]), \
            "FileNotFoundError: test.csv"
    kaggle_emulator.kernel_runner = broken
    r = _cli(project, kaggle_emulator, tmp_path, "kaggle", "push")
    line = assert_one_line_error(r, KERNEL, "ended 'error'", "FileNotFoundError: test.csv", "kaggle/output/v1")
    log = project / line.split("its log is ")[1].strip()
    assert "FileNotFoundError" in log.read_text()
    receipt = json.loads((project / "submissions/receipt.json").read_text())
    assert receipt["kernel_version"] == 1 and receipt["pushed"] and not receipt["submitted"]
    assert not kaggle_emulator.submissions

def test_dry_run_builds_everything_and_changes_nothing_on_kaggle(in_process, kaggle_emulator):
    set_params(in_process, submit={"dry_run": True})
    record = _run_stage()
    assert record["reason"] == "dry run" and not record["pushed"] and not record["submitted"]
    assert (in_process / "kaggle/kernel/kernel-metadata.json").is_file()
    meta = json.loads((in_process / "kaggle/kernel/kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["is_private"] is True
    assert meta["competition_sources"] == [SLUG] and meta["dataset_sources"] == [DATASET]
    assert json.loads((in_process / "submissions/receipt.json").read_text())["reason"] == "dry run"
    assert not _writes(kaggle_emulator) and not kaggle_emulator.owned_datasets


def test_submissions_lists_code_and_file_submissions(in_process, kaggle_emulator, capsys):
    from pipeline.core.config import load_section
    from pipeline.kaggle.params import SubmitParams
    from pipeline.stages.submit import run as submit_file
    from pipeline.tools.submissions import main as table

    code = _run_stage()
    shutil.copyfile(Path(code["output"]) / "submission.csv", "submissions/submission.csv")
    set_params(in_process, submit={"mode": "file"})
    file = submit_file(load_section("submit", SubmitParams), sleep=lambda s: None)
    assert file["uploaded"] and code["submitted"] and file["ref"] != code["ref"]
    capsys.readouterr()
    rows = table(SLUG, Path("submissions/history.json"))
    kinds = {r["ref"]: (r["kind"], r["oof_accuracy"]) for r in rows}
    assert kinds == {code["ref"]: ("code", 0.1025), file["ref"]: ("file", None)}  # no metrics.json here: no OOF
    shown = capsys.readouterr().out
    assert "code" in shown and "file" in shown and "0.10250" in shown


def test_graph_choice_takes_the_fast_graph_only_within_a_tenth_of_a_point():
    export = {"fp32": {"metric": "accuracy", "oof_score": 0.9260},
              "int8": {"checked": True, "oof_score": 0.9252}, "fp16": {"checked": True, "oof_score": 0.9270}}
    assert choose_graph(export, gpu=False)[0] == "int8"                      # -0.08 points: within 0.1
    assert choose_graph(export, gpu=True)[0] == "fp16"
    export["int8"]["oof_score"] = 0.9245                                     # -0.15 points: too much
    graph, why = choose_graph(export, gpu=False)
    assert graph == "fp32" and "0.15 points" in why
    export["fp16"] = {"checked": False, "why_not": "onnxruntime CPU could not run it"}
    graph, why = choose_graph(export, gpu=True)
    assert graph == "fp32" and "could not run it" in why
    loss = {"fp32": {"metric": "log_loss", "oof_score": 0.300}, "int8": {"checked": True, "oof_score": 0.3008}}
    assert choose_graph(loss, gpu=False)[0] == "int8"                        # lower is better: +0.0008 is within
    loss["int8"]["oof_score"] = 0.302
    assert choose_graph(loss, gpu=False)[0] == "fp32"
    assert choose_graph(loss, gpu=False, request="int8")[0] == "int8"        # asked for: taken (with a warning)
