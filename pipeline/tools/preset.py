"""Param presets: partial params files merged into params.yaml, validated before anything is written.

    foldwise preset presets/full.yaml             # then: dvc repro (or git diff params.yaml)

A preset names sections and keys; each key's value replaces params.yaml's (whole, for mappings
such as `augment` or `model_kwargs`). Comments and order of
params.yaml are kept (ruamel round trip). The merged file must load: every section is validated.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.tools.sections import validate_all
from serve.atomic import write_text
from serve.errors import UserError, first_line
from serve.paths import refuse_overwrite

_logger = logging.getLogger(__name__)


def _merge(base, overlay, src: str) -> None:
    for section, values in overlay.items():
        if section not in base or not isinstance(values, dict):
            raise UserError(f"{src}: {section}: not a section of params.yaml (or not a mapping)")
        for key, value in values.items():
            if key not in base[section]:
                raise UserError(f"{src}: {section}.{key}: not a key of params.yaml")
            base[section][key] = value


def apply_preset(preset: Path, params: Path = Path("params.yaml")) -> list[str]:
    """Merge `preset` into `params`; return the top-level keys it set, per section."""
    refuse_overwrite({"--params": params}, {"PRESET": preset})
    yaml = YAML()
    yaml.preserve_quotes = True
    try:
        base = yaml.load(params.read_text())
        overlay = yaml.load(preset.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found") from None
    except YAMLError as exc:
        raise UserError(f"{preset}: not valid YAML ({first_line(exc, 10_000)})") from None
    if not isinstance(overlay, dict):
        raise UserError(f"{preset}: expected a mapping of params sections")
    write_text(params, merged(base, overlay, str(preset), f"{params} + {preset}", yaml))
    return [f"{s}.{k}" for s, keys in overlay.items() for k in (keys or {})]


def merged(base, overlay: dict, src: str, what: str, yaml: YAML | None = None) -> str:
    """params.yaml's text with `overlay`'s keys set (comments and order kept), validated as `what`."""
    if yaml is None:
        yaml = YAML()
        yaml.preserve_quotes = True
    if isinstance(base, str):
        base = yaml.load(base)
    _merge(base, overlay, src)
    buf = io.StringIO()
    yaml.dump(base, buf)
    validate_all(buf.getvalue(), what)
    return buf.getvalue()
