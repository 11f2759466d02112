"""The `foldwise` command on mistakes: one `error:` line naming the file, row or key, exit code 2,
nothing written (the full table of bad inputs is tests/e2e/test_bad_inputs.py). The first test runs
the installed console script; the others its entry point in this process (the same code, without
a torch import per command)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.cli import EMBEDDED, ROOT, assert_one_line_error, run_cli, run_in_process
from helpers.data import BAD_PREPARE_INPUTS, broken, write_zip
from helpers.project import with_train
from pipeline.tools.preset import apply_preset
from serve.errors import UserError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_invalid_param_through_the_cli_is_one_line(tmp_path: Path) -> None:
    with_train(tmp_path, lr=-1.0)
    result = run_cli("train", "--fold", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "params.yaml: train.lr: must be > 0")


def test_a_bad_preset_is_refused_and_params_stay_untouched(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    (tmp_path / "bad.yaml").write_text("train: {lr: -3}\n")
    result = run_in_process(["preset", str(tmp_path / "bad.yaml"), "--params", str(params)], capsys)
    assert_one_line_error(result, "train.lr: must be > 0")
    (tmp_path / "typo.yaml").write_text("train: {epochz: 3}\n")
    with pytest.raises(UserError, match=r"typo\.yaml: train\.epochz: not a key of params\.yaml"):
        apply_preset(tmp_path / "typo.yaml", params)
    assert params.read_text() == before


@pytest.mark.parametrize("case", ["non-numeric pixel", "missing column", "label of 10", "duplicated test id"])
def test_bad_input_through_the_cli_exits_nonzero_without_traceback(case: str, real_slice, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    name, mutate, needles = BAD_PREPARE_INPUTS[case]
    project = tmp_path / "proj"
    (project / "data/raw").mkdir(parents=True)
    write_zip(project / "data/raw/competition.zip", broken(real_slice, name, mutate))
    (project / "params.yaml").write_text(
        "prepare:\n  class_names: [a, b, c, d, e, f, g, h, i, j]\n  classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
        "  n_folds: 2\n")
    monkeypatch.chdir(project)
    result = run_in_process(["prepare"], capsys)
    assert result.returncode == 2
    assert_one_line_error(result, *needles)
    assert not (project / "data/prepared").exists()


def test_score_of_the_embedded_public_solution_against_itself_is_one(capsys) -> None:
    sol = EMBEDDED / "public_solution.csv"
    result = run_in_process(["score", str(sol), str(sol)], capsys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("accuracy 1.0000 (3000/3000 ids")


@pytest.mark.parametrize("text, needles", [
    ("id,label\n0,1\n1,2\n", ["sub.csv", "id '3' of", "sol.csv is missing"]),
    ("id,label,conf\n0,1,1\n1,2,1\n3,0,1\n", ["sub.csv", "extra column 'conf'"]),
    ("id,label\n0,1\n1,2\n1,2\n3,0\n", ["sub.csv", "row 3 (line 4)", "appears twice"]),
])
def test_score_errors_are_one_line_with_nonzero_exit(tmp_path: Path, text: str, needles: list[str], capsys) -> None:
    sub = write(tmp_path / "sub.csv", text)
    sol = write(tmp_path / "sol.csv", "id,label\n1,2\n3,0\n")
    result = run_in_process(["score", str(sub), str(sol)], capsys)
    assert result.returncode == 2
    assert_one_line_error(result, *needles)


def test_score_of_a_missing_file_names_it(tmp_path: Path, capsys) -> None:
    result = run_in_process(["score", str(tmp_path / "nope.csv"), str(EMBEDDED / "public_solution.csv")], capsys)
    assert_one_line_error(result, "nope.csv: file not found")
