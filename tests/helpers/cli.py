"""Running the installed `foldwise` command as a user would, and checking its one-line errors.

    result = run_cli("prepare", cwd=project)
    assert_one_line_error(result, "train.csv", "row 7")
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ROOT / "data/embedded/fashion-mnist"
BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `foldwise` console script."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None unsets a variable
    return subprocess.run([str(BIN / "foldwise"), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, one `error:` line on stderr containing every needle."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@dataclass
class Result:
    """What a command did: as subprocess.CompletedProcess names it."""
    returncode: int
    stdout: str
    stderr: str


def run_in_process(argv: list[str], capsys) -> Result:
    """The real console entry point (`pipeline.cli.main`, what the `foldwise` script runs) in this
    process: seconds faster than a subprocess, which pays torch's import on every call."""
    from pipeline.cli import main

    saved, sys.argv = sys.argv, ["foldwise", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return Result(code, out.out, out.err)
