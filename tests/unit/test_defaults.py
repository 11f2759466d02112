"""One source for every default: the shipped params.yaml holds exactly each section's dataclass
defaults (every key, in the dataclass's order), except `prepare`, which holds what `foldwise init`
found in the embedded competition."""
from __future__ import annotations

import dataclasses

import pytest

from helpers.cli import ROOT
from pipeline.core.config import build, read_params
from pipeline.tools.init import RESET
from pipeline.tools.sections import SECTIONS

SHIPPED = read_params(ROOT / "params.yaml")


def test_params_yaml_has_every_section_and_nothing_else() -> None:
    assert list(SHIPPED) == list(SECTIONS)


@pytest.mark.parametrize("section", [s for s in SECTIONS if s != "prepare"])
def test_the_shipped_section_is_the_dataclass_defaults(section: str) -> None:
    cls = SECTIONS[section]
    assert list(SHIPPED[section]) == [f.name for f in dataclasses.fields(cls)]
    assert SHIPPED[section] == dataclasses.asdict(build(cls, {}, section))


def test_the_shipped_prepare_differs_from_the_defaults_only_where_init_decides() -> None:
    cls = SECTIONS["prepare"]
    assert list(SHIPPED["prepare"]) == [f.name for f in dataclasses.fields(cls)]
    defaults = dataclasses.asdict(build(cls, {}, "prepare"))
    differing = {k for k, v in SHIPPED["prepare"].items() if v != defaults[k]}
    assert differing and differing <= set(RESET), sorted(differing - set(RESET))
