"""End to end: `dvc repro` in a copy of the project on a small slice of the real data (CPU, tiny model).

Checks the submission, the metrics, the ONNX parity record and the receipt, then that a second
`dvc repro` runs nothing and that `foldwise predict` on the raw pixel CSV agrees with the stage.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.cli import EMBEDDED, run_cli
from helpers.data import write_zip
from helpers.imports import module_file, stage_modules
from helpers.kaggle_emulator import KaggleEmulator
from helpers.kaggle_project import clean_env, no_key, set_params, solution
from helpers.project import dvc, make_project
from helpers.report_files import check_pdf, html_figures, run_notebook
from pipeline.evaluation.confidence import wilson

pytestmark = pytest.mark.e2e
@pytest.fixture(scope="module")
def repro(tmp_path_factory, real_slice):
    base = tmp_path_factory.mktemp("e2e")
    zip_path = write_zip(base / "slice.zip", real_slice)
    project = make_project(base / "project", zip_path)
    result = dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project, result, real_slice


def test_repro_writes_a_valid_submission(repro) -> None:
    project, result, frames = repro
    sub = pd.read_csv(project / "submissions/submission.csv", dtype=str)
    assert list(sub.columns) == ["id", "label"]
    assert sub["id"].tolist() == frames["sample_submission.csv"]["id"].tolist()
    assert set(sub["label"]) <= {str(i) for i in range(10)}
    chosen = json.loads((project / "models/export.json").read_text())["predict_graph"]
    assert f"with models/{chosen['file']} ({chosen['graph']} graph: " in result.stdout  # predict says which


def test_repro_writes_metrics_and_a_parity_checked_onnx(repro) -> None:
    project, _, _ = repro
    metrics = json.loads((project / "metrics.json").read_text())
    assert set(metrics["folds"]) == {"0", "1"}
    assert 0.0 <= metrics["oof_accuracy"] <= 1.0 and metrics["oof_coverage"] == 1.0
    assert metrics["fold_accuracy_std"] >= 0.0
    export = json.loads((project / "models/export.json").read_text())
    assert export["parity"]["passed"] and export["parity"]["rows"] == 64
    assert export["parity"]["max_abs_diff"] <= 1e-3
    # predict runs the fastest graph within the OOF tolerance of fp32, timed side by side at export
    choice, speed = export["predict_graph"], export["speed"]
    assert {"fp32", "int8"} <= set(speed["images_per_second"]) and choice["graph"] in speed["images_per_second"]
    assert choice["graph"] == "fp32" or export[choice["graph"]]["oof_accuracy_delta"] >= -choice["tolerance"]
    assert all(speed["images_per_second"][choice["graph"]] >= v for g, v in speed["images_per_second"].items()
               if g == "fp32" or export[g]["oof_accuracy_delta"] >= -choice["tolerance"])
    for k in (0, 1):
        fold = project / f"models/folds/fold{k}"
        assert {"model.pt", "oof_probs.npy", "oof_rows.npy", "metrics.json", "config.json"} <= {
            p.name for p in fold.iterdir()}
        curves = pd.read_csv(project / f"models/curves/fold{k}.csv")
        assert list(curves["epoch"]) == [1] and 0 <= curves["val_accuracy"].iloc[0] <= 1
    shown = dvc(project, "metrics", "show")
    assert shown.returncode == 0 and "oof_accuracy" in shown.stdout


def test_dvc_plots_render(repro) -> None:
    project, _, _ = repro
    result = dvc(project, "plots", "show", "--json")
    assert result.returncode == 0, result.stderr
    assert "validation accuracy per epoch" in result.stdout and "val_accuracy" in result.stdout


def test_submit_says_why_it_did_not_upload(repro) -> None:
    project, result, _ = repro
    receipt = json.loads((project / "submissions/receipt.json").read_text())
    assert receipt["uploaded"] is False and "submit.enabled is false" in receipt["reason"]
    assert "not uploaded: submit.enabled is false" in result.stdout


def test_second_repro_runs_nothing(repro) -> None:
    project, _, _ = repro
    status = dvc(project, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, status.stdout
    again = dvc(project, "repro")
    assert again.returncode == 0
    assert "Running stage" not in again.stdout, again.stdout


STAGES = ("download", "prepare", "train@0", "train@1", "pseudo@0", "pseudo@1", "ensemble", "distill", "export",
          "predict", "submit", "report")


@pytest.mark.parametrize("module", ["pipeline/core/config.py", "pipeline/training/loop.py",
                                    "pipeline/evaluation/confidence.py", "serve/http/app.py"])
def test_touching_a_module_stales_exactly_the_stages_that_import_it(repro, module: str) -> None:
    """A comment appended to a module shows in `dvc status` for every stage importing it (the code deps
    tests/unit/test_dvc_yaml.py keeps exact) and no other: serve/http/ retrains no fold (only submit,
    whose code-competition wheel packs all of serve/, sees it)."""
    project, _, _ = repro
    dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    expected = {s for s in STAGES if any(
        module_file(m) == Path(module) for m in stage_modules(dvc_yaml[s.split("@")[0]].get("do", dvc_yaml[
            s.split("@")[0]])["cmd"]))} | ({"submit"} if module.startswith("serve/") else set())
    path = project / module
    before = path.read_bytes()
    try:
        path.write_bytes(before + b"\n# touched\n")
        assert _stale_stages(project) == expected
    finally:
        path.write_bytes(before)
    assert _stale_stages(project) == set()
    if module == "serve/http/app.py":
        assert expected == {"submit"}


SLUG = "fashion-mnist-slice"
UPLOADS = ("StartSubmissionUpload", "CreateSubmission")


def _uploads(emulator: KaggleEmulator) -> list:
    return [r for r in emulator.requests if r["method"] in UPLOADS]


def test_from_kaggle_it_downloads_submits_once_and_records_the_public_score(repro, kaggle_emulator,
                                                                            tmp_path) -> None:
    """The same project with `download.source: kaggle` and `submit.enabled: true`: the real client
    downloads the competition from the emulator, and since those are the same bytes DVC rebuilds
    nothing they feed; submit uploads once and records the public score the emulator computed; a
    second repro, a forced submit and the dry run upload nothing. (Later tests run on it as it is.)"""
    project, _, frames = repro
    solution_path = solution(frames, tmp_path / "solution.csv")
    kaggle_emulator.add_competition(SLUG, project / "data/slice.zip", solution_path, pending_polls=2)
    set_params(project, download={"source": "kaggle", "competition": SLUG},
               submit={"enabled": True, "poll_interval": 0.2, "poll_timeout": 60, "public_rows": 45})
    env = clean_env(kaggle_emulator, tmp_path)
    r = dvc(project, "repro", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = [ln for ln in r.stdout.splitlines() if ln.startswith("Running stage")]
    assert ran == ["Running stage 'download':", "Running stage 'submit':", "Running stage 'report':"], r.stdout
    no_key(kaggle_emulator, r.stdout, r.stderr)
    receipt = json.loads((project / "submissions/receipt.json").read_text())
    assert receipt["uploaded"] is True and receipt["status"] == "complete"
    assert len(kaggle_emulator.submissions) == 1
    assert receipt["ref"] == kaggle_emulator.submissions[0]["ref"]
    assert f"sha256:{receipt['sha256'][:16]}" in receipt["message"] and "oof" in receipt["message"]
    scored = run_cli("score", "submissions/submission.csv", str(solution_path), cwd=project)
    assert scored.returncode == 0, scored.stderr
    correct, total = scored.stdout.split("(")[1].split()[0].split("/")      # "accuracy 0.0889 (4/45 ids of ...)"
    assert receipt["public_score"] == round(int(correct) / int(total), 5)
    assert f"{receipt['public_score']:.4f}" in scored.stdout
    shown = json.dumps(json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout))
    assert "public_score" in shown and "oof_accuracy" in shown

    # a second repro uploads nothing; forcing the submit stage finds the file already on Kaggle
    before = len(_uploads(kaggle_emulator))
    again = dvc(project, "repro", env=env)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout + again.stderr[-2000:]
    forced = dvc(project, "repro", "-f", "-s", "submit", env=env)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "already submitted" in forced.stdout
    assert len(_uploads(kaggle_emulator)) == before
    kept = [(project / f).read_bytes() for f in ("submissions/receipt.json", "submissions/history.json")]
    dry = run_cli("submit", "--dry-run", cwd=project, env=env)  # validates, uploads and writes nothing
    assert dry.returncode == 0, dry.stderr
    assert "already submitted" in dry.stdout and len(_uploads(kaggle_emulator)) == before
    assert kept == [(project / f).read_bytes() for f in ("submissions/receipt.json", "submissions/history.json")]
    # the CV-vs-LB table matches the submission to its OOF score by file hash
    table = run_cli("submissions", "--competition", SLUG, cwd=project, env=env)
    assert table.returncode == 0, table.stderr
    assert str(receipt["ref"]) in table.stdout and f"{receipt['oof_accuracy']:.5f}" in table.stdout
    lo, hi = wilson(receipt["public_score"], 45)  # the public score's binomial 95% interval beside it
    assert f"{lo:.4f}-{hi:.4f}" in table.stdout and "public 95% CI on 45 rows" in table.stdout
    page = (project / "reports/index.html").read_text()
    assert 'id="oof-vs-public"' in page and f"{lo:.4f}-{hi:.4f}" in page
    no_key(kaggle_emulator, dry.stdout, dry.stderr, table.stdout, table.stderr)


def test_predict_cli_on_the_raw_csv_matches_the_stage(repro, tmp_path: Path) -> None:
    project, _, frames = repro
    test_csv = tmp_path / "test.csv"
    frames["test.csv"].to_csv(test_csv, index=False)
    out = tmp_path / "preds.csv"
    result = run_cli("predict", "--model", str(project / "models/ensemble.onnx"), "--input", str(test_csv),
                     "--output", str(out), "--probs", str(tmp_path / "probs.csv"))
    assert result.returncode == 0, result.stderr
    assert "images/s on CPUExecutionProvider" in result.stdout
    preds = pd.read_csv(out, dtype=str)
    stage = pd.read_csv(project / "submissions/submission.csv", dtype=str)
    assert preds.equals(stage)
    probs = pd.read_csv(tmp_path / "probs.csv")
    assert list(probs.columns) == ["id"] + [str(i) for i in range(10)]
    assert (probs.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-4


def test_score_on_the_public_ids_of_the_slice(repro, tmp_path: Path) -> None:
    project, _, frames = repro
    public = pd.read_csv(EMBEDDED / "public_solution.csv", dtype=str)
    sol = public[public["id"].isin(set(frames["test.csv"]["id"]))]
    sol.to_csv(tmp_path / "sol.csv", index=False)
    sub = pd.read_csv(project / "submissions/submission.csv", dtype=str)
    expected = (sol.merge(sub, on="id", suffixes=("", "_pred")).eval("label == label_pred")).mean()
    result = run_cli("score", str(project / "submissions/submission.csv"), str(tmp_path / "sol.csv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"accuracy {expected:.4f} (")


def test_report_opens_in_headless_chromium(repro, tmp_path_factory) -> None:
    """reports/index.html in Debian's headless Chromium: every image loaded, the fold table and the
    confusion matrix present, no console errors; a screenshot is saved (its path is printed)."""
    import shutil as sh

    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException

    project, _, _ = repro
    page = project / "reports/index.html"
    assert page.is_file()
    chromium = sh.which("chromium") or sh.which("chromium-browser")
    driver_bin = sh.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,2400"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    except WebDriverException as exc:
        pytest.fail(f"could not start headless Chromium: {exc.msg}")
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
        has = browser.execute_script(
            "return [!!document.getElementById('fold-table'), !!document.getElementById('confusion'),"
            " document.querySelectorAll('#fold-table tbody tr').length]")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        shot = tmp_path_factory.mktemp("report") / "report.png"
        browser.save_screenshot(str(shot))
        print(f"report screenshot: {shot}")
    finally:
        browser.quit()
    assert len(images) >= 4, images
    assert all(done and width > 0 for _, done, width in images), images
    assert {"curves", "confusion", "misclassified", "least_confident_correct", "filters", "activations",
            "embedding"} <= {i for i, _, _ in images}
    assert has[0] and has[1] and has[2] == 2, has
    assert not errors, errors
    assert shot.stat().st_size > 10_000


def test_the_pdf_holds_every_figure_of_the_page_and_the_key_numbers(repro, tmp_path: Path) -> None:
    """reports/report.pdf: every page parsed and rendered, as many images as index.html, the OOF
    score, each fold's row of the fold table and every section's heading in its contents."""
    project, _, _ = repro
    text = check_pdf(project / "reports", tmp_path)
    metrics = json.loads((project / "metrics.json").read_text())
    assert f"OOF accuracy {metrics['oof_accuracy']:.4f}" in text
    for k, fold in metrics["folds"].items():
        assert re.search(rf"^{k} {k} \d+ {fold['accuracy']:.4f} {fold['logloss']:.4f}", text, re.M), text[:3000]
    for heading in ("Training curves", "Folds", "What the network learned", "Confusion matrix (OOF)", "Export",
                    "The ladder: baseline to CNN", "Environment"):
        assert heading in text
    assert "No ladder yet: `foldwise ladder`" in text          # a section that does not apply says so


def test_the_notebook_redraws_every_figure_in_a_fresh_kernel(repro) -> None:
    project, _, _ = repro
    assert run_notebook(project / "reports") >= len(html_figures(project / "reports"))


def test_report_params_rebuild_only_the_report(repro) -> None:
    """Next to last in this module: it changes the project's params (report only)."""
    project, _, _ = repro
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["report"]["grid_images"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert ("report:" in status.stdout and "train@" not in status.stdout
            and "export:" not in status.stdout), status.stdout
    r = dvc(project, "repro")
    assert r.returncode == 0, r.stderr[-2000:]
    ran = [ln for ln in r.stdout.splitlines() if ln.startswith("Running stage")]
    assert ran == ["Running stage 'report':"], r.stdout


def _stale_stages(project: Path) -> set[str]:
    result = dvc(project, "status", "--json")
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout or "{}"))


def test_changing_one_folds_seed_or_an_augmentation_param_reruns_only_its_dependents(repro) -> None:
    """Last in this module (after the report test, on the same project): an augmentation param stales
    every fold and what trains with the same recipe (the pseudo-label rounds, the student), nothing
    upstream; an export param only export; a fold's seed retrains that fold (and its rounds, which
    run with that seed) only, and its new outputs stale the stages that read the folds."""
    project, _, _ = repro
    params_path = project / "params.yaml"
    assert _stale_stages(project) == set()
    baseline = params_path.read_text()

    params = yaml.safe_load(baseline)
    params["train"]["augment"] = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 0.25}]}}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"train@0", "train@1", "pseudo@0", "pseudo@1", "distill"}

    params = yaml.safe_load(baseline)
    params["export"]["parity_rows"] = 32
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"export", "distill"}  # the student's graphs pass export's gate

    params = yaml.safe_load(baseline)
    params["train"]["folds"][1]["seed"] = 7
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale_stages(project) == {"train@1", "pseudo@1"}
    rerun = dvc(project, "repro", "train@1")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert [ln for ln in rerun.stdout.splitlines() if ln.startswith("Running stage")] == ["Running stage 'train@1':"]
    assert _stale_stages(project) == {"pseudo@1", "ensemble", "distill", "export", "report"}  # each reads the folds


def test_pseudo_label_rounds_and_the_student_run_as_dvc_stages(repro) -> None:
    """After the seed test (the very last, on the same project): one pseudo-label round per fold and a
    distilled student through `dvc repro export` (round 1 of fold k from fold k's own round 0, the
    ensemble of the last round, the student scored out of fold with its graphs in export's choice),
    `foldwise predict` on the student's graph, and `dvc status` knows what the rounds and the student
    depend on: their params stale them, and not round 0 (the honesty itself: tests/e2e/test_honesty.py)."""
    project, _, _ = repro
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["pseudo_labels"].update(rounds=1, threshold=0.0)
    params["distill"].update(enabled=True, model="test_resnet", epochs=1, test_images=False)  # with them: test_honesty
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro", "export")  # predict on the student's graph: the CLI below
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = [ln for ln in result.stdout.splitlines() if ln.startswith("Running stage")]
    assert not any("'train@" in ln for ln in ran), ran  # round 0 is not retrained
    assert {"Running stage 'pseudo@0':", "Running stage 'distill':", "Running stage 'export':"} <= set(ran), ran
    for k in (0, 1):
        rounds = json.loads((project / f"models/pseudo/fold{k}/rounds.json").read_text())
        assert rounds["rounds"] == 1 and [h["round"] for h in rounds["history"]] == [0, 1]
        assert rounds["history"][1]["pseudo_labelled"] == 120  # every test image of the slice (threshold 0)
    assert json.loads((project / "models/ensemble.json").read_text())["fold_dirs"] == [
        "models/pseudo/fold0", "models/pseudo/fold1"]
    assert json.loads((project / "metrics.json").read_text())["pseudo_labels"]["rounds"] == 1

    student = json.loads((project / "models/student/student.json").read_text())
    assert student["enabled"] and student["oof"]["rows"] == 400 and set(student["folds"]) == {"0", "1"}
    assert student["graphs"]["student"]["parity"]["passed"]
    export = json.loads((project / "models/export.json").read_text())
    assert {"student", "student_int8"} <= set(export["speed"]["images_per_second"])
    assert export["student"]["oof_score"] == student["oof"]["oof_score"]  # the same rows: all 400 here
    out, probs = project / "student_preds.csv", project / "student_probs.csv"
    res = run_cli("predict", "--model", "models/student/student.onnx", "--input", "data/prepared/test_images.npy",
                  "--ids", "data/prepared/test_ids.csv", "--output", str(out), "--probs", str(probs), cwd=project)
    assert res.returncode == 0, res.stderr
    assert pd.read_csv(out, dtype=str)["id"].tolist() == pd.read_csv(project / "submissions/submission.csv",
                                                                      dtype=str)["id"].tolist()
    assert (pd.read_csv(probs).iloc[:, 1:].sum(axis=1) - 1.0).abs().max() < 1e-4

    params["train"]["pseudo_labels"]["weight"] = 0.5
    params["distill"]["temperature"] = 3.0
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    stale = _stale_stages(project)
    assert {"pseudo@0", "pseudo@1", "distill"} <= stale and not {"train@0", "train@1"} & stale, stale
