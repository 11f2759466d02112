"""foldwise against a local Kaggle emulator through the real `kaggle` client (port 80, no mocks):
each failure Kaggle gives, and each invalid submission, on a prepared project (no training). The
end-to-end run (download from Kaggle, submit once, the public score recorded) is
tests/e2e/test_repro.py's, on its project.
"""
from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.cli import ROOT, assert_one_line_error, run_cli
from helpers.data import write_zip
from helpers.kaggle_emulator import KaggleEmulator
from helpers.kaggle_project import clean_env, no_key, set_params, solution
from helpers.project import make_project

SLUG = "fashion-mnist-slice"
UPLOADS = ("StartSubmissionUpload", "CreateSubmission")


def _uploads(emulator: KaggleEmulator) -> list:
    return [r for r in emulator.requests if r["method"] in UPLOADS]


# ------------------------------------------------------------------ failures, on a prepared project


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, real_slice):
    """A project with data/prepared and a valid submission (no training: submit needs neither)."""
    base = tmp_path_factory.mktemp("prepared")
    zip_path = write_zip(base / "competition.zip", real_slice)
    project = make_project(base / "project", zip_path)
    for cmd in (["download"], ["prepare"]):
        r = run_cli(*cmd, cwd=project)
        assert r.returncode == 0, r.stderr
    sub = real_slice["sample_submission.csv"].copy()
    sub["label"] = [str(i % 10) for i in range(len(sub))]
    (project / "submissions").mkdir(exist_ok=True)
    sub.to_csv(project / "submissions/submission.csv", index=False)
    return project, zip_path, solution(real_slice, base / "solution.csv")


@pytest.fixture
def project(prepared, tmp_path):
    """A fresh copy of the prepared project per test, with submitting enabled."""
    src, zip_path, solution = prepared
    dst = tmp_path / "project"
    shutil.copytree(src, dst, symlinks=True)
    set_params(dst, submit={"enabled": True, "competition": SLUG, "poll_interval": 0.1, "poll_timeout": 30})
    return dst, zip_path, solution


def _submit(project: Path, emulator: KaggleEmulator, tmp: Path, **env: str):
    r = run_cli("submit", cwd=project, env=clean_env(emulator, tmp, **env))
    no_key(emulator, r.stdout, r.stderr)
    return r


def test_no_credentials(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    env = {k: None for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
    r = run_cli("submit", cwd=p, env={**clean_env(kaggle_emulator, tmp_path), **env})
    # no credentials is not an error for the stage: it says why and uploads nothing
    assert r.returncode == 0, r.stderr
    assert "no Kaggle credentials" in r.stdout and "kaggle.json" in r.stdout
    assert not kaggle_emulator.requests
    receipt = json.loads((p / "submissions/receipt.json").read_text())
    assert receipt["uploaded"] is False and "no Kaggle credentials" in receipt["reason"]


def test_download_without_credentials_says_what_to_do(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    set_params(p, download={"source": "kaggle", "competition": SLUG})
    env = {**clean_env(kaggle_emulator, tmp_path), "KAGGLE_USERNAME": None, "KAGGLE_KEY": None}
    assert_one_line_error(run_cli("download", cwd=p, env=env), "no Kaggle credentials", "KAGGLE_KEY")


def test_bad_credentials_401(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    r = _submit(p, kaggle_emulator, tmp_path, KAGGLE_KEY="wrong-key-0000")
    assert_one_line_error(r, "401", "credentials", "Settings > API")
    assert "wrong-key-0000" not in r.stderr + r.stdout
    assert not _uploads(kaggle_emulator)


def test_rules_not_accepted_403(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    kaggle_emulator.fail("ListSubmissions", 403, message="You must accept this competition's rules")
    r = _submit(p, kaggle_emulator, tmp_path)
    assert_one_line_error(r, "403", "accept its rules", f"kaggle.com/competitions/{SLUG}/rules")
    assert not _uploads(kaggle_emulator)


def test_unknown_competition_404(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    set_params(p, submit={"competition": "no-such-competition"})
    r = _submit(p, kaggle_emulator, tmp_path)
    assert_one_line_error(r, "404", "no-such-competition", "check the slug")
    set_params(p, download={"source": "kaggle", "competition": "no-such-competition"})
    d = run_cli("download", cwd=p, env=clean_env(kaggle_emulator, tmp_path))
    assert_one_line_error(d, "404", "no-such-competition")
    assert not (p / "data/raw/.download-tmp").exists()


def test_daily_limit(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    kaggle_emulator.fail("CreateSubmission", 429,
                         message="Your team has used its daily Submission allowance (5) today")
    r = _submit(p, kaggle_emulator, tmp_path)
    assert_one_line_error(r, "daily submission limit", "nothing was uploaded", "00:00 UTC")
    assert not kaggle_emulator.submissions


def test_one_server_error_is_retried(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    kaggle_emulator.fail("CreateSubmission", 500, times=1)
    r = _submit(p, kaggle_emulator, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "retry 1/3" in r.stderr
    receipt = json.loads((p / "submissions/receipt.json").read_text())
    assert receipt["uploaded"] and receipt["public_score"] is not None
    assert len(kaggle_emulator.submissions) == 1


def test_server_errors_that_persist_fail_clearly(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    kaggle_emulator.fail("ListSubmissions", 503, times=10)
    r = _submit(p, kaggle_emulator, tmp_path)
    assert_one_line_error(r, "503", "kept failing after retries", "try again later")
    assert sum(1 for q in kaggle_emulator.requests if q["method"] == "ListSubmissions") == 4


def test_world_readable_kaggle_json_warns_and_never_prints_the_key(project, kaggle_emulator, tmp_path):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    token = cfg / "kaggle.json"
    token.write_text(json.dumps({"username": kaggle_emulator.username, "key": kaggle_emulator.key}))
    token.chmod(0o644)
    env = {**clean_env(kaggle_emulator, tmp_path), "KAGGLE_CONFIG_DIR": str(cfg), "KAGGLE_USERNAME": None,
           "KAGGLE_KEY": None}
    r = run_cli("submit", cwd=p, env=env)
    assert r.returncode == 0, r.stderr
    assert "readable by other users" in r.stderr and "chmod 600" in r.stderr
    no_key(kaggle_emulator, r.stdout, r.stderr)
    assert stat.S_IMODE(token.stat().st_mode) == 0o644  # warned, not changed behind the user's back


@pytest.mark.parametrize("mutate, needle", [
    (lambda df: df.iloc[:-1], "rows"),
    (lambda df: df.assign(id=df["id"].where(df.index != 3, "999999")),
     "id '3' of data/prepared/sample_submission.csv is missing"),
    (lambda df: df.assign(extra="x"), "extra"),
    (lambda df: df.assign(label=df["label"].where(df.index != 5, "10")), "'10'"),
], ids=["wrong-row-count", "missing-id", "extra-column", "label-outside-classes"])
def test_invalid_submission_is_refused_before_any_upload(project, kaggle_emulator, tmp_path, mutate, needle):
    p, zip_path, solution = project
    kaggle_emulator.add_competition(SLUG, zip_path, solution)
    path = p / "submissions/submission.csv"
    mutate(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
    r = _submit(p, kaggle_emulator, tmp_path)
    assert_one_line_error(r, "submission.csv", needle)
    assert not kaggle_emulator.requests  # refused before Kaggle was even asked


def test_kaggle_dataset_source_becomes_a_local_competition(project, kaggle_emulator, tmp_path, real_slice):
    p, _, _ = project
    train = real_slice["train.csv"]
    ds = write_zip(tmp_path / "fashionmnist.zip", {"fashion-mnist_train.csv": train.iloc[:300],
                                                    "fashion-mnist_test.csv": train.iloc[300:]})
    kaggle_emulator.add_dataset("zalando-research/fashionmnist", ds)
    set_params(p, download={"source": "kaggle-dataset", "dataset": "zalando-research/fashionmnist"})
    env = clean_env(kaggle_emulator, tmp_path)
    for cmd in ("download", "prepare"):
        r = run_cli(cmd, cwd=p, env=env)
        assert r.returncode == 0, r.stderr
    source = json.loads((p / "data/raw/source.json").read_text())
    assert source["dataset"] == "zalando-research/fashionmnist" and source["solution"] == "data/raw/solution.csv"
    solution = pd.read_csv(p / "data/raw/solution.csv")
    assert list(solution.columns) == ["id", "label"] and len(solution) == 100
    assert solution["label"].tolist() == train.iloc[300:]["label"].tolist()
    meta = json.loads((p / "data/prepared/meta.json").read_text())
    assert meta["n_train"] == 300 and meta["n_test"] == 100


def test_init_with_a_kaggle_slug_downloads_inspects_and_points_download_at_it(kaggle_emulator, tmp_path):
    """`foldwise init <slug>`: the real client downloads the competition (Digit Recognizer's shape),
    the layout is detected, and params.yaml's download section names the slug."""
    from helpers.competitions import build

    zip_path, solution = build("digits", tmp_path / "zips", n_train=120, n_test=20)
    kaggle_emulator.add_competition("digit-recognizer", zip_path, solution, id_column="ImageId", target_column="Label")
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")
    r = run_cli("init", "digit-recognizer", cwd=proj, env=clean_env(kaggle_emulator, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "layout        pixel_csv" in r.stdout and "id column 'ImageId'" in r.stdout
    params = yaml.safe_load((proj / "params.yaml").read_text())
    assert params["download"]["source"] == "kaggle" and params["download"]["competition"] == "digit-recognizer"
    assert params["prepare"]["id_column"] == "ImageId" and params["prepare"]["target_column"] == "label"
    assert [q["method"] for q in kaggle_emulator.requests] == ["DownloadDataFiles"]
    assert not list(proj.glob(".foldwise-init-*")), "the download is not left behind"
