"""Presets: every shipped preset merges into params.yaml and validates; bad presets change nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, assert_one_line_error, run_cli
from pipeline.tools.preset import apply_preset
from serve.errors import UserError

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


def test_a_bad_preset_is_refused_and_params_stay_untouched(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    (tmp_path / "bad.yaml").write_text("train: {lr: -3}\n")
    result = run_cli("preset", str(tmp_path / "bad.yaml"), "--params", str(params))
    assert_one_line_error(result, "train.lr: must be > 0")
    (tmp_path / "typo.yaml").write_text("train: {epochz: 3}\n")
    with pytest.raises(UserError, match=r"typo\.yaml: train\.epochz: not a key of params\.yaml"):
        apply_preset(tmp_path / "typo.yaml", params)
    assert params.read_text() == before
