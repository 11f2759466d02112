"""Provenance (pipeline/core/provenance.py): package versions, the machine line, the CPU's model and
flags, and the git commit inside and outside a checkout."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.provenance import SIMD_FLAGS, cpu_info, git_commit, machine, versions


def test_versions_give_python_and_each_installed_distribution() -> None:
    found = versions(["numpy", "ruamel.yaml"])
    assert found["python"] == platform.python_version()
    assert found["numpy"] == np.__version__
    assert found["ruamel.yaml"][0].isdigit()
    assert list(found) == ["python", "numpy", "ruamel.yaml"]


def test_versions_of_a_missing_distribution_say_not_installed() -> None:
    assert versions(("numpy", "foldwise-no-such-distribution")) == {
        "python": platform.python_version(), "numpy": np.__version__, "foldwise-no-such-distribution": "not installed"}
    assert versions([]) == {"python": platform.python_version()}


def test_cpu_info_reads_the_model_and_flags_of_proc_cpuinfo() -> None:
    model, flags = cpu_info()
    assert isinstance(flags, frozenset)
    text = Path("/proc/cpuinfo").read_text()  # the tests run on Linux
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.lower().startswith("model name")]
    if names:  # x86: `model name`
        assert model == names[0] and model
    keys = ("flags", "features")  # features: ARM
    first_flags = next(line for line in text.splitlines() if line.lower().split(":")[0].strip() in keys)
    assert flags == frozenset(first_flags.split(":", 1)[1].split())
    assert flags


def test_machine_names_the_cpu_the_core_count_and_its_simd_flags() -> None:
    model, flags = cpu_info()
    line = machine()
    assert line.startswith(f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores; ")
    assert line.endswith(")") and "\n" not in line
    simd = line.rsplit("cores; ", 1)[1][:-1]
    expected = [f for f in SIMD_FLAGS if f in flags]
    assert simd == (" ".join(expected) or "no AVX2")  # in SIMD_FLAGS' order, only the ones this CPU has


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_is_the_short_head_of_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.chdir(repo)
    commit = git_commit()
    assert commit == _git(repo, "rev-parse", "--short", "HEAD")
    assert commit and all(c in "0123456789abcdef" for c in commit)


def test_git_commit_is_none_outside_a_checkout_or_before_the_first_commit(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above tmp_path counts
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert git_commit() is None
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    monkeypatch.chdir(empty)
    assert git_commit() is None
