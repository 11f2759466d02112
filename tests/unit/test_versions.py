"""pipeline/core/versions.py: the ranges foldwise supports (pyproject.toml, one place) against what is
installed, and the warning a process starts with when a package is outside its range."""
from __future__ import annotations

import logging
import tomllib

import pytest

from helpers.cli import ROOT
from pipeline.core import versions


def test_the_ranges_are_pyproject_tomls() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {versions._name(r): r for r in project["dependencies"]}
    assert set(versions.supported("torch").split(",")) == set(deps["torch"].removeprefix("torch").split(","))
    assert versions.python_range().replace(" ", "") == project["requires-python"].replace(" ", "")
    assert "==" not in deps["torch"] and "==" not in deps["torchvision"]      # ranges: beside a user's own torch


def test_this_machines_torch_is_inside_the_range_and_nothing_is_warned(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert versions.check_installed() == []
    assert versions.problem("torch") is None and versions.python_problem() is None


def test_a_torch_outside_the_range_is_named_with_the_range_and_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog) -> None:
    monkeypatch.setattr(versions, "requirements", lambda: {"torch": "torch<3,>=2.4"})
    monkeypatch.setattr(versions, "installed", lambda name: "3.1.0+cu130")
    line = versions.problem("torch")
    assert line.startswith("torch 3.1.0+cu130 is outside the range foldwise supports (torch<3,>=2.4)")
    assert "pip install 'torch<3,>=2.4'" in line
    monkeypatch.setattr(versions, "installed", lambda name: "2.4.1+cu121")
    assert versions.problem("torch") is None                                  # a local build tag is fine
    monkeypatch.setattr(versions, "installed", lambda name: None)
    assert versions.problem("torch") is None                                  # not installed: doctor says so


def test_names_are_read_from_requirement_strings() -> None:
    assert [versions._name(r) for r in ("torch>=2.4,<3", "onnxruntime-gpu>=1.20; platform_system == 'Linux'",
                                        "uvicorn[standard]>=0.30", "ruamel.yaml>=0.17")] == [
        "torch", "onnxruntime-gpu", "uvicorn", "ruamel.yaml"]
