"""The benches' timed command (pipeline/bench/project_copy.run_timed): progress lines shown as they
come, the failure as one line with the command's last words."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from pipeline.bench.export_cost import PROGRESS
from pipeline.bench.project_copy import run_timed
from serve.errors import UserError

SCRIPT = ("import sys\n"
          "print(\"Running stage 'train@0':\", flush=True)\n"
          "print('noise', flush=True)\n"
          "print('12:00:00 INFO pipeline.training.fold: fold 0 epoch 3/20: train loss 1.2', file=sys.stderr)\n"
          "print('last words', file=sys.stderr)\n"
          "sys.exit(int(sys.argv[1]))\n")


def _command(folder: Path, exit_code: int) -> list[str]:
    (folder / "stage.py").write_text(SCRIPT)
    return [sys.executable, str(folder / "stage.py"), str(exit_code)]


def test_matching_lines_are_logged_as_the_command_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.bench.project_copy"):
        seconds = run_timed(_command(tmp_path, 0), tmp_path, threads=1, show=PROGRESS)
    assert seconds > 0
    shown = [r.getMessage() for r in caplog.records]
    assert len(shown) == 2 and shown[0].startswith("  Running stage 'train@0':")
    assert "fold 0 epoch 3/20: train loss 1.2" in shown[1]


def test_a_failure_is_one_line_with_its_last_output(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        run_timed(_command(tmp_path, 3), tmp_path, threads=1)
    message = str(err.value)
    assert "\n" not in message and "stage.py 3` failed in" in message and message.endswith("last words")
