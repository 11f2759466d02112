"""Typed params: each DVC stage reads its own section of params.yaml into a dataclass.

    params = load_section("train", TrainParams)      # params.yaml -> TrainParams, validated

Each section's dataclass lives beside the library it configures (DownloadParams and PrepareParams
in pipeline/data/, TrainParams in pipeline/training/params.py, EnsembleParams in
pipeline/modeling/ensemble.py, ExportParams and PredictParams in pipeline/export/params.py,
SubmitParams in pipeline/kaggle/params.py, ReportParams in pipeline/report/params.py;
pipeline/tools/sections.py lists them all). Its field defaults are the shipped params.yaml's values
(a test keeps them equal). Unknown keys, wrong types, out-of-range values and names that no
registry holds fail at load with one line naming the key (`params.yaml: train.lr: must be > 0, got -1`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from serve.errors import UserError, first_line

PARAMS_FILE = "params.yaml"
T = TypeVar("T")


def _convert(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check `value` against the annotation `tp` (converting int to float where a float is wanted)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, src)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{src}: {key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, src)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{src}: {key}: must be a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]", src) for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{src}: {key}: must be a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{src}: {key}: must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{src}: {key}: must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{src}: {key}: must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{src}: {key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def build(cls: type[T], data: Any, prefix: str, src: str = PARAMS_FILE) -> T:
    """Make a `cls` dataclass from a mapping, rejecting unknown keys; then run its `validate`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{src}: {prefix}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UserError(f"{src}: {prefix}.{unknown[0]}: unknown key (known: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{prefix}.{f.name}", src)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{src}: {prefix}.{f.name}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(lambda msg, k=None: UserError(f"{src}: {prefix}{'.' + k if k else ''}: {msg}"))
    return obj


def read_params(path: str | Path = PARAMS_FILE) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: params file not found (run from the project root)")
    try:  # YAML 1.2 as DVC reads it (PyYAML would take `1e-05` for a string)
        data = YAML(typ="safe", pure=True).load(p.read_text())
    except YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({first_line(exc, 10_000)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of sections at the top level")
    return data


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Read and validate one section of params.yaml."""
    return build(cls, read_params(path).get(section), section, str(path))


def params_hash(obj: Any) -> str:
    """Short stable hash of a params dataclass (or any JSON-able value)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def check_choice(value: Any, allowed: tuple | list, err, key: str) -> None:
    """For a section's `validate`: `value` must be one of `allowed` (a family's names, from its registry)."""
    if value not in allowed:
        raise err(f"must be one of {', '.join(map(str, allowed))}, got {value!r}", key)
