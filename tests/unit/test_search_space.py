"""params.yaml `tune`: distributions parsed and checked, bad ones refused in one line naming the key."""
from __future__ import annotations

import optuna
import pytest

from pipeline.core.config import build
from pipeline.training.search_space import SearchSpace, TuneParams, apply, seconds
from serve.errors import UserError

TRAIN = {"lr": 0.003, "model_kwargs": {"widths": [8, 16]}}


def _space(space: dict) -> SearchSpace:
    return SearchSpace.parse(space, TRAIN, "params.yaml")


@pytest.mark.parametrize("space, words", [
    ({"prepare.image_size": {"int": [1, 2]}}, ["tune.space.prepare.image_size", "only train params"]),
    ({"train.lrr": {"float": [0.1, 0.2]}}, ["tune.space.train.lrr", "not a train key"]),
    ({"train.folds": {"int": [1, 2]}}, ["tune.space.train.folds: not a train key"]),
    ({"train.lr.x": {"float": [0.1, 0.2]}}, ["only train.model_kwargs.<name>"]),
    ({"train.lr": {"uniform": [0.1, 0.2]}}, ["tune.space.train.lr", "must be one of"]),
    ({"train.lr": {"float": [0.2, 0.1]}}, ["tune.space.train.lr", "low 0.2 > high 0.1"]),
    ({"train.lr": {"log_float": [0.0, 0.1]}}, ["log_float: low must be > 0"]),
    ({"train.epochs": {"int": [1.5, 3]}}, ["tune.space.train.epochs", "integers"]),
    ({"train.lr": {"float": "0.1"}}, ["must be [low, high]"]),
    ({"train.sched": {"categorical": []}}, ["tune.space.train.sched", "non-empty"]),
    ({"train.sched": {"categorical": ["cosine", "cosine"]}}, ["listed twice"]),
    ({"train.augment": {"categorical": [{"a": 1}]}}, ["not a scalar", "mapping label: value"]),
    ({"train.sched": {"categorical": ["cosine", "warp"]}}, ["tune.space.train.sched", "'warp' is rejected",
                                                             "must be one of"]),
    ({"train.label_smoothing": {"float": [0.0, 1.5]}}, ["tune.space.train.label_smoothing", "1.5 is rejected"]),
    ({"train.augment": {"categorical": {"bad": {"transform": {"__class_fullname__": "NoSuchAug"}}}}},
     ["tune.space.train.augment", "'bad' is rejected"]),
])
def test_a_bad_space_is_refused_naming_the_key(space: dict, words: list[str]) -> None:
    with pytest.raises(UserError) as exc:
        _space(space)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("params.yaml: tune.space.")
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("section, words", [
    ({"n_trials": 0}, ["tune.n_trials", "at least 1"]),
    ({"timeout": "0m"}, ["tune.timeout", "positive"]),
    ({"timeout": "soon"}, ["tune.timeout", "not a duration"]),
    ({"n_trials": None, "timeout": None}, ["tune.n_trials", "set n_trials or timeout"]),
    ({"folds": []}, ["tune.folds"]),
    ({"confirm_folds": [0, 1]}, ["tune.confirm_folds", "[0]"]),
    ({"sampler": "cmaes"}, ["tune.sampler", "tpe"]),
    ({"study": "a b"}, ["tune.study"]),
    ({"space": {"train.lr": {"float": [1, 0]}}}, ["tune.space.train.lr", "low 1 > high 0"]),
])
def test_a_bad_tune_section_is_refused_naming_the_key(section: dict, words: list[str]) -> None:
    with pytest.raises(UserError) as exc:
        build(TuneParams, section, "tune")
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_durations() -> None:
    assert [seconds(v) for v in ("30m", "1h30m", "90s", "2h", 600, None)] == [1800, 5400, 90, 7200, 600, None]


def test_suggestions_apply_to_train_keys_model_kwargs_and_whole_pipelines() -> None:
    flip = {"transform": {"__class_fullname__": "Compose", "p": 1.0,
                          "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}
    space = _space({"train.lr": {"log_float": [1e-4, 1e-2]}, "train.epochs": {"int": [2, 6], "step": 2},
                    "train.model_kwargs.widths": {"categorical": {"small": [4, 8], "big": [16, 32]}},
                    "train.augment": {"categorical": {"hflip": flip, "none": {}}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = space.suggest(trial)
    assert 1e-4 <= values["train.lr"] <= 1e-2 and values["train.epochs"] in (2, 4, 6)
    assert trial.params["train.augment"] in ("hflip", "none")          # Optuna sees the labels ...
    assert space.values_of(trial.params) == values                      # ... and they map back to the values
    train = apply(TRAIN, values)
    assert train["model_kwargs"]["widths"] in ([4, 8], [16, 32]) and TRAIN["model_kwargs"]["widths"] == [8, 16]
    assert train["augment"] in (flip, {})


def test_the_grid_sampler_takes_choices_and_int_ranges_only() -> None:
    grid = _space({"train.epochs": {"int": [2, 4]}, "train.sched": {"categorical": ["cosine", "step"]}})
    assert grid.grid("p") == {"train.epochs": [2, 3, 4], "train.sched": ["cosine", "step"]}
    with pytest.raises(UserError, match="tune.space.train.lr: the grid sampler needs"):
        _space({"train.lr": {"float": [0.1, 0.2]}}).grid("p")


def test_the_shipped_space_parses_against_the_shipped_train_section() -> None:
    from helpers.cli import ROOT
    from pipeline.core.config import read_params

    params = read_params(ROOT / "params.yaml")
    space = SearchSpace.parse(build(TuneParams, params["tune"], "tune").space, params["train"], "params.yaml")
    assert {d.path for d in space.dists} >= {"train.lr", "train.augment"}
