"""Typed params (pipeline/core/config.py): `build` on small dataclasses (unknown and missing keys, type
checks and conversions, Optional, Literal, nested lists and dataclasses, the validate hook), read_params,
load_section on a real section (PredictParams), params_hash and check_choice."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from pipeline.core.config import build, check_choice, load_section, params_hash, read_params
from pipeline.export.params import PredictParams
from serve.errors import UserError


@dataclass
class Inner:
    depth: int = 1
    scale: float = 1.0


@dataclass
class Section:
    name: str
    rate: float = 0.5
    count: int = 3
    flag: bool = False
    limit: int | None = None
    ratio: Optional[float] = None  # noqa: UP045 (the typing spelling must work too)
    mode: Literal["fast", "slow", 3] = "fast"
    grid: list[list[int]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    anything: Any = None
    inner: Inner = field(default_factory=Inner)


def _error(data: Any, prefix: str = "sec", src: str = "conf.yaml") -> str:
    with pytest.raises(UserError) as exc:
        build(Section, data, prefix, src)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_build_fills_defaults_and_keeps_given_values() -> None:
    s = build(Section, {"name": "a", "count": 7, "flag": True, "extra": {"k": [1]}, "anything": [None, "x"]}, "sec")
    assert s == Section(name="a", count=7, flag=True, extra={"k": [1]}, anything=[None, "x"])


def test_unknown_key_names_the_first_one_and_every_known_key() -> None:
    assert _error({"name": "a", "rates": 1, "zzz": 2}) == (
        "conf.yaml: sec.rates: unknown key (known: name, rate, count, flag, limit, ratio, mode, grid, weights, "
        "extra, anything, inner)")


def test_a_missing_required_key_is_named() -> None:
    assert _error({"rate": 0.1}) == "conf.yaml: sec.name: required key is missing"
    assert _error(None) == "conf.yaml: sec.name: required key is missing"  # an empty section: no data at all


def test_a_section_that_is_not_a_mapping_is_refused() -> None:
    assert _error(["name", "a"]) == "conf.yaml: sec: must be a mapping, got ['name', 'a']"


def test_an_int_is_accepted_for_a_float_and_becomes_a_float() -> None:
    s = build(Section, {"name": "a", "rate": 2, "ratio": 1, "weights": [1, 0.5]}, "sec")
    assert s.rate == 2.0 and type(s.rate) is float
    assert s.ratio == 1.0 and type(s.ratio) is float
    assert s.weights == [1.0, 0.5] and all(type(w) is float for w in s.weights)


@pytest.mark.parametrize("data, message", [
    ({"rate": "fast"}, "sec.rate: must be a number, got 'fast'"),
    ({"rate": True}, "sec.rate: must be a number, got True"),        # a bool is not a number here
    ({"count": 2.5}, "sec.count: must be an integer, got 2.5"),      # no silent float -> int
    ({"count": False}, "sec.count: must be an integer, got False"),
    ({"flag": 1}, "sec.flag: must be true or false, got 1"),
    ({"flag": "yes"}, "sec.flag: must be true or false, got 'yes'"),
    ({"name": 5}, "sec.name: must be a string, got 5"),
    ({"extra": [1]}, "sec.extra: must be a mapping, got [1]"),
])
def test_wrong_types_are_refused_naming_the_key_and_the_value(data: dict, message: str) -> None:
    assert _error({"name": "a", **data}) == f"conf.yaml: {message}"


def test_optional_takes_null_or_a_value_of_its_type() -> None:
    assert build(Section, {"name": "a", "limit": None, "ratio": None}, "sec").limit is None
    assert build(Section, {"name": "a", "limit": 4}, "sec").limit == 4
    assert _error({"name": "a", "limit": "4"}) == "conf.yaml: sec.limit: must be an integer, got '4'"
    assert _error({"name": "a", "ratio": "half"}) == "conf.yaml: sec.ratio: must be a number, got 'half'"


def test_literal_accepts_only_its_values() -> None:
    assert build(Section, {"name": "a", "mode": "slow"}, "sec").mode == "slow"
    assert build(Section, {"name": "a", "mode": 3}, "sec").mode == 3
    assert _error({"name": "a", "mode": "medium"}) == "conf.yaml: sec.mode: must be one of fast, slow, 3, got 'medium'"


def test_nested_lists_are_checked_element_by_element_with_the_index_in_the_key() -> None:
    assert build(Section, {"name": "a", "grid": [[1, 2], [], [3]]}, "sec").grid == [[1, 2], [], [3]]
    assert _error({"name": "a", "grid": [[1], ["x"]]}) == "conf.yaml: sec.grid[1][0]: must be an integer, got 'x'"
    assert _error({"name": "a", "grid": [1]}) == "conf.yaml: sec.grid[0]: must be a list, got 1"
    assert _error({"name": "a", "grid": "1,2"}) == "conf.yaml: sec.grid: must be a list, got '1,2'"


def test_a_nested_dataclass_is_built_with_its_own_keys_under_the_prefix() -> None:
    s = build(Section, {"name": "a", "inner": {"depth": 4, "scale": 2}}, "sec")
    assert s.inner == Inner(depth=4, scale=2.0) and type(s.inner.scale) is float
    assert _error({"name": "a", "inner": {"width": 1}}) == (
        "conf.yaml: sec.inner.width: unknown key (known: depth, scale)")
    assert _error({"name": "a", "inner": {"depth": "deep"}}) == (
        "conf.yaml: sec.inner.depth: must be an integer, got 'deep'")


@dataclass
class Checked:
    low: float = 0.0
    high: float = 1.0

    def validate(self, err) -> None:
        assert type(self.low) is float  # validate sees the converted values
        if self.low < 0:
            raise err(f"must be >= 0, got {self.low}", "low")
        if self.low >= self.high:
            raise err(f"low ({self.low}) must be below high ({self.high})")


def test_validate_errors_name_the_source_the_section_and_the_key_given() -> None:
    assert build(Checked, {"low": 0, "high": 2}, "range") == Checked(0.0, 2.0)
    with pytest.raises(UserError) as exc:
        build(Checked, {"low": -1}, "range", "my.yaml")
    assert str(exc.value) == "my.yaml: range.low: must be >= 0, got -1.0"
    with pytest.raises(UserError) as exc:
        build(Checked, {"low": 3}, "range")
    assert str(exc.value) == "params.yaml: range: low (3.0) must be below high (1.0)"  # no key: the section


def test_an_annotation_build_cannot_check_is_our_bug_not_the_users() -> None:
    @dataclass
    class Odd:
        pair: set[int] = field(default_factory=set)

    with pytest.raises(TypeError, match="unsupported annotation .* for odd.pair"):
        build(Odd, {"pair": [1, 2]}, "odd")


def test_read_params_reads_yaml_1_2_as_dvc_does(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  min_lr: 1e-05\n  lr: 3.0e-3\n  big: 1E3\n  word: yes\n  off: off\n  n: 010\n")
    train = read_params(path)["train"]
    assert train["min_lr"] == 1e-05 and isinstance(train["min_lr"], float)  # PyYAML would read the string '1e-05'
    assert train["lr"] == 3e-3 and train["big"] == 1000.0
    assert train["word"] == "yes" and train["off"] == "off"  # YAML 1.1 booleans are strings in 1.2
    assert train["n"] == 10  # no octal in YAML 1.2


def test_read_params_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match=r"nope\.yaml: params file not found \(run from the project root\)$"):
        read_params(missing)
    listed = tmp_path / "list.yaml"
    listed.write_text("- train\n- prepare\n")
    with pytest.raises(UserError, match=r"list\.yaml: expected a mapping of sections at the top level$"):
        read_params(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: 1\n")
    with pytest.raises(UserError) as exc:
        read_params(broken)
    assert str(exc.value).startswith(f"{broken}: not valid YAML (") and "\n" not in str(exc.value)


def test_load_section_builds_a_real_section_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("predict:\n  batch_size: 64\n  provider: cpu\n  threads: 4\ntrain:\n  whatever: 1\n")
    assert load_section("predict", PredictParams, path) == PredictParams(batch_size=64, provider="cpu", threads=4)
    path.write_text("predict:\n  threads: null\n")
    assert load_section("predict", PredictParams, path) == PredictParams()


def test_load_section_of_an_absent_or_empty_section_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: {}\n")
    assert load_section("predict", PredictParams, path) == PredictParams()
    path.write_text("predict:\n")
    assert load_section("predict", PredictParams, path) == PredictParams()


def test_load_section_errors_start_with_the_file_and_the_section_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("predict:\n  provider: tpu\n")
    with pytest.raises(UserError) as exc:
        load_section("predict", PredictParams, path)
    assert str(exc.value) == f"{path}: predict.provider: must be one of auto, cpu, cuda, got 'tpu'"
    path.write_text("predict:\n  batch_size: 0\n")
    with pytest.raises(UserError, match=r"params\.yaml: predict\.batch_size: must be at least 1, got 0$"):
        load_section("predict", PredictParams, path)
    path.write_text("predict:\n  threads: many\n")
    with pytest.raises(UserError, match=r"params\.yaml: predict\.threads: must be an integer, got 'many'$"):
        load_section("predict", PredictParams, path)


def test_params_hash_is_short_stable_and_changes_with_a_value() -> None:
    h = params_hash(PredictParams())
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert params_hash(PredictParams()) == h
    assert params_hash(PredictParams(batch_size=128)) != h
    assert params_hash({"batch_size": 256, "provider": "auto", "threads": None}) == h  # a dataclass = its fields


def test_params_hash_ignores_key_order() -> None:
    assert params_hash({"a": 1, "b": {"x": [1, 2], "y": None}}) == params_hash({"b": {"y": None, "x": [1, 2]}, "a": 1})
    assert params_hash({"b": {"x": [1, 2]}}) != params_hash({"b": {"x": [2, 1]}})  # list order does count


def test_check_choice_raises_the_err_of_its_key_listing_the_allowed_values() -> None:
    calls = []

    def err(msg: str, key: str | None = None) -> UserError:
        calls.append(key)
        return UserError(f"sec.{key}: {msg}")

    check_choice("pad", ("stretch", "crop", "pad"), err, "resize")
    check_choice(3, [1, 3], err, "channels")
    assert calls == []
    with pytest.raises(UserError) as exc:
        check_choice(2, [1, 3], err, "channels")
    assert str(exc.value) == "sec.channels: must be one of 1, 3, got 2"
    assert calls == ["channels"]
