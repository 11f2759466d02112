"""DVC's own views on foldwise runs: `foldwise ladder` runs a rung of the course's ladder as a `dvc exp
run` on tiny settings; `foldwise compare` lists it beside the workspace; the report draws the ladder
(every rung's settings: tests/unit/test_ladder.py)."""
from __future__ import annotations

import json
import subprocess

import pytest

from helpers.cli import run_cli
from helpers.data import write_zip
from helpers.project import make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, real_slice):
    base = tmp_path_factory.mktemp("ladder")
    project = make_project(base / "project", write_zip(base / "slice.zip", real_slice))
    git = lambda *a: subprocess.run(["git", *a], cwd=project, check=True, capture_output=True)  # noqa: E731
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    params = (project / "params.yaml").read_bytes()
    # up to `ensemble` in each rung (export onwards is test_repro's). One `dvc exp run` per rung, not
    # `--queue` + `--run-all`: DVC's celery queue worker died on a half-written broker message
    # (JSONDecodeError) in a CI run and `--run-all` then waited forever.
    result = run_cli("ladder", "--rungs", "linear", "--epochs", "1", cwd=project, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project, params, result


def test_each_rung_is_a_dvc_experiment_and_the_workspace_is_put_back(ladder) -> None:
    project, params, result = ladder
    summary = json.loads((project / "ladder/summary.json").read_text())
    assert [r["name"] for r in summary["rungs"]] == ["linear"]
    (linear,) = summary["rungs"]
    assert linear["params"] == 28 * 28 * 10 + 10                       # logistic regression on the pixels
    assert linear["flops_per_image"] == 2 * 28 * 28 * 10 and linear["set"]["model"] == "foldwise_linear"
    for r in summary["rungs"]:
        assert r["ci"][0] <= r["score"] <= r["ci"][1] and r["rows"] == 200 and r["epochs_run"] == 1
        assert (project / "ladder" / r["curves"]).is_file()
    assert "linear" in result.stdout and "95% CI" in result.stdout    # the table, printed
    assert (project / "params.yaml").read_bytes() == params            # as before the ladder
    assert not (project / "dvc.lock").exists() and not (project / "metrics.json").exists()


def test_compare_lists_the_rungs_with_what_they_changed(ladder) -> None:
    project, _, _ = ladder
    result = run_cli("compare", "--plot", "grid.png", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next((ln for ln in lines if "ladder-linear" in ln), None)
    assert row is not None, result.stdout
    assert "foldwise_linear" in row                                    # the changed param is a column
    assert any(c.strip().startswith("0.") for c in row.split("│")[-5:]), row   # an OOF accuracy
    assert "train.model" in result.stdout and "test_resnet" in result.stdout   # the baseline's model beside it
    assert (project / "grid.png").stat().st_size > 5000


def test_the_report_draws_the_ladder(ladder, tmp_path) -> None:
    from pipeline.report.content import Figure, Table, Text
    from pipeline.report.ladder import ladder_section

    project, _, _ = ladder
    blocks = ladder_section(project / "ladder", tmp_path, 50)
    table = next(b for b in blocks if isinstance(b, Table))
    columns, rows = table.cells()
    assert [r[0] for r in rows] == ["linear"] and "95% CI" in columns and "params" in columns
    assert {b.path.name for b in blocks if isinstance(b, Figure)} == {"ladder_scores.png", "ladder_curves.png"}
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("ladder_scores.png", "ladder_curves.png"))
    assert any(isinstance(b, Text) and "Each rung is a DVC experiment" in b.text for b in blocks)


def test_a_bad_ladder_option_is_one_line_and_exit_2(ladder) -> None:
    project, params, _ = ladder
    result = run_cli("ladder", "--folds", "a,b", cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert result.stderr.strip() == "error: --folds: expected comma-separated fold numbers, got 'a,b'"
    assert (project / "params.yaml").read_bytes() == params
