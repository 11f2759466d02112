"""DVC's own views on foldwise runs: a two-point `dvc exp run` grid on tiny settings,
compared by `foldwise compare`."""
from __future__ import annotations

import subprocess

import pytest

from helpers.cli import run_cli
from helpers.data import write_zip
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def grid(tmp_path_factory, real_slice):
    base = tmp_path_factory.mktemp("grid")
    project = make_project(base / "project", write_zip(base / "slice.zip", real_slice))
    git = lambda *a: subprocess.run(["git", *a], cwd=project, check=True, capture_output=True)  # noqa: E731
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    for name, drop in (("drop0", "0.0"), ("drop3", "0.3")):
        # up to `ensemble`: the OOF score is what compare shows (export onwards is test_e2e's). One
        # `dvc exp run` per point, not `--queue` + `--run-all`: DVC's celery queue worker died on a
        # half-written broker message (JSONDecodeError) in a CI run and `--run-all` then waited forever.
        r = dvc(project, "exp", "run", "-n", name, "-S", f"train.drop_rate={drop}", "ensemble", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return project


def test_queued_grid_runs_and_compare_lists_both(grid) -> None:
    shown = dvc(grid, "exp", "show", "--csv")
    assert shown.returncode == 0, shown.stderr
    assert "drop0" in shown.stdout and "drop3" in shown.stdout
    result = run_cli("compare", "--plot", "grid.png", cwd=grid)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, drop in (("drop0", "0.0"), ("drop3", "0.3")):
        row = next((ln for ln in lines if name in ln), None)
        assert row is not None, result.stdout
        assert drop in row                      # the changed param is a column
        assert any(c.strip().startswith("0.") for c in row.split("│")[-5:]), row   # an OOF accuracy
    assert "train.drop_rate" in result.stdout
    assert (grid / "grid.png").stat().st_size > 5000
