"""Presets: every shipped preset merges into params.yaml and validates; bad presets change nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT
from pipeline.tools.preset import apply_preset

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_each_shipped_preset_applies_and_validates(preset: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_preset(preset, params)
    merged = yaml.safe_load(params.read_text())
    wanted = yaml.safe_load(preset.read_text())
    for section, values in wanted.items():
        for key, value in values.items():
            assert merged[section][key] == value
    assert "# foldwise params" in params.read_text(), "comments of params.yaml are kept"


