"""params.yaml `tune`: the search space as param paths with distributions, the sampler, the budget,
the pruner and the folds a trial trains on; typed and validated.

    tune = load_section("tune", TuneParams)
    space = SearchSpace.parse(tune.space, train_section, "params.yaml")   # every bound and choice checked
    values = space.suggest(trial)                                          # {"train.lr": 0.002, ...}
    train = space.apply(train_section, values)                             # the trial's train section

Distributions (one key each): `float: [low, high]`, `log_float: [low, high]`, `int: [low, high]`
(optionally `step`), `categorical: [a, b, ...]` (scalars) or `categorical: {label: value, ...}`
(any values, e.g. whole `augment` pipelines; Optuna sees the labels). Paths are `train.<key>` or
`train.model_kwargs.<name>`; every bound and choice is built into TrainParams before a trial runs,
so a value the config rejects fails at once, naming the key.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.core.config import build
from pipeline.training.params import TrainParams
from serve.errors import UserError

KINDS = ("float", "log_float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
SCALARS = (type(None), bool, int, float, str)
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")
_HFLIP = {"transform": {"__class_fullname__": "Compose", "p": 1.0,
                        "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}


def seconds(value: str | int | float | None, key: str = "timeout") -> float | None:
    """`30m`, `1h30m`, `90s`, `90` (seconds) -> seconds; None stays None."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value is None else float(value)
    m = _DURATION.match(str(value))
    if not m or not any(m.groups()):
        raise UserError(f"{key}: not a duration, got {value!r} (e.g. 30m, 1h30m, 90s, 600)")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


@dataclass
class TuneParams:
    """`foldwise tune`: what to search, how, for how long, on which folds (docs/training.md, Tuning)."""
    space: dict = field(default_factory=lambda: {
        "train.lr": {"log_float": [0.001, 0.01]},
        "train.weight_decay": {"log_float": [0.005, 0.2]},
        "train.label_smoothing": {"float": [0.0, 0.2]},
        "train.epochs": {"int": [4, 8]},
        "train.augment": {"categorical": {"hflip": _HFLIP, "none": {}}}})
    sampler: Literal["tpe", "random", "grid"] = "tpe"   # Optuna's TPESampler, RandomSampler, GridSampler
    n_trials: int | None = 20        # finished trials the study ends with (a rerun continues up to it)
    timeout: str | None = None       # this run's wall-clock budget: 30m, 2h, 600 (seconds)
    pruner: Literal["median", "hyperband", "none"] = "median"  # on each epoch's validation score
    folds: list[int] = field(default_factory=lambda: [0])      # the folds a trial trains and is judged on
    confirm_folds: list[int] | None = None  # null: every other fold of train.folds (no trial saw them)
    study: str = "foldwise"          # the study's name in tune/study.db
    seed: int = 0                    # the sampler's seed

    def validate(self, err) -> None:
        if not isinstance(self.space, dict) or not self.space:
            raise err("must map at least one param path to a distribution", "space")
        if self.n_trials is not None and self.n_trials < 1:
            raise err(f"must be at least 1 (or null), got {self.n_trials}", "n_trials")
        if self.timeout is not None:
            try:
                budget = seconds(self.timeout)
            except UserError as exc:
                raise err(str(exc).split(": ", 1)[1], "timeout") from None
            if not budget or budget <= 0:
                raise err(f"must be a positive duration, got {self.timeout!r}", "timeout")
        if self.n_trials is None and self.timeout is None:
            raise err("set n_trials or timeout (a budget of none would never end)", "n_trials")
        if not self.folds or len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
            raise err(f"must list distinct folds >= 0, got {self.folds}", "folds")
        if self.confirm_folds is not None and set(self.confirm_folds) & set(self.folds):
            raise err(f"must not include a fold trials train on ({sorted(set(self.confirm_folds) & set(self.folds))})",
                      "confirm_folds")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.study):
            raise err(f"letters, digits, '_', '.', '-' only, got {self.study!r}", "study")
        for path, dist in self.space.items():
            Dist.parse(path, dist, lambda msg, p=path: err(msg, f"space.{p}"))


@dataclass(frozen=True)
class Dist:
    """One param path's distribution."""
    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: dict[str, Any] | None = None   # label -> value (labels of a scalar list are the values' str)
    labels_are_values: bool = False

    @classmethod
    def parse(cls, path: str, spec: Any, err) -> Dist:
        parts = path.split(".")
        if parts[0] != "train" or len(parts) < 2:
            raise err("only train params are tuned: the path is train.<key> or train.model_kwargs.<name>")
        names = [f.name for f in dataclasses.fields(TrainParams) if f.name != "folds"]
        if parts[1] not in names:
            raise err(f"not a train key (known: {', '.join(names)})")
        if len(parts) > 2 and (parts[1] != "model_kwargs" or len(parts) > 3):
            raise err("only train.model_kwargs.<name> goes deeper than train.<key>")
        if not isinstance(spec, dict) or len([k for k in spec if k in KINDS]) != 1 \
                or set(spec) - {*KINDS, "step"}:
            raise err(f"must be one of {{{': ..., '.join(KINDS)}: ...}} (int/float may add step), got {spec!r}")
        kind = next(k for k in spec if k in KINDS)
        value, step = spec[kind], spec.get("step")
        if kind == "categorical":
            if step is not None:
                raise err("step applies to int and float ranges")
            if isinstance(value, dict) and value:
                return cls(path, kind, choices={str(k): v for k, v in value.items()})
            if not isinstance(value, list) or not value:
                raise err(f"categorical: must be a non-empty list or a mapping label: value, got {value!r}")
            odd = [v for v in value if not isinstance(v, SCALARS)]
            if odd:
                raise err(f"categorical: {odd[0]!r} is not a scalar: give such choices as a mapping label: value")
            if len({repr(v) for v in value}) != len(value):
                raise err(f"categorical: a choice is listed twice in {value!r}")
            return cls(path, kind, choices={repr(v): v for v in value}, labels_are_values=True)
        number = int if kind == "int" else (int, float)
        if not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, number) and not isinstance(v, bool) for v in value):
            raise err(f"{kind}: must be [low, high] ({'integers' if kind == 'int' else 'numbers'}), got {value!r}")
        low, high = value
        if low > high:
            raise err(f"{kind}: low {low} > high {high}")
        if kind == "log_float" and low <= 0:
            raise err(f"log_float: low must be > 0, got {low}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0
                                 or kind == "log_float"):
            raise err(f"step: must be a positive {'integer' if kind == 'int' else 'number'} "
                      f"(not with log_float), got {step!r}")
        return cls(path, kind, low, high, step)

    def values(self) -> list[Any]:
        """The values this distribution can take that are checked before a trial: bounds, or every choice."""
        return list(self.choices.values()) if self.choices is not None else [self.low, self.high]

    def grid(self, err) -> list[Any]:
        """The grid sampler's values: the choices' labels, or every int of the range (at most 100)."""
        if self.choices is not None:
            return list(self.choices) if not self.labels_are_values else list(self.choices.values())
        if self.kind == "int":
            values = list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
            if len(values) <= 100:
                return values
        raise err("the grid sampler needs categorical choices or an int range of at most 100 values")

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            if self.labels_are_values:
                return trial.suggest_categorical(self.path, list(self.choices.values()))
            return self.choices[trial.suggest_categorical(self.path, list(self.choices))]
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step,
                                   log=self.kind == "log_float")

    def value_of(self, raw: Any) -> Any:
        """A stored trial's param (a categorical label) as the value it stands for."""
        return self.choices[raw] if self.choices is not None and not self.labels_are_values else raw


def apply(train: dict, values: dict[str, Any]) -> dict:
    """A copy of the `train` section with each `train.<key>[.<name>]` set to its value."""
    out = copy.deepcopy(train)
    for path, value in values.items():
        parts = path.split(".")[1:]
        if len(parts) == 2:
            out[parts[0]] = {**(out.get(parts[0]) or {}), parts[1]: copy.deepcopy(value)}
        else:
            out[parts[0]] = copy.deepcopy(value)
    return out


@dataclass
class SearchSpace:
    dists: list[Dist]

    @classmethod
    def parse(cls, space: dict, train: dict, src: str) -> SearchSpace:
        """Parse and check every bound and choice against TrainParams (with the rest of `train` as it is)."""
        dists = []
        for path, spec in space.items():
            key = f"tune.space.{path}"
            dist = Dist.parse(path, spec, lambda msg, k=key: UserError(f"{src}: {k}: {msg}"))
            for value in dist.values():
                try:
                    build(TrainParams, apply(train, {path: value}), "train", src)
                except UserError as exc:
                    shown = value if dist.choices is None or dist.labels_are_values else \
                        next(label for label, v in dist.choices.items() if v is value)
                    raise UserError(f"{src}: {key}: {shown!r} is rejected ({str(exc).split(': ', 1)[-1]})") from None
            dists.append(dist)
        return cls(dists)

    def suggest(self, trial) -> dict[str, Any]:
        return {d.path: d.suggest(trial) for d in self.dists}

    def values_of(self, params: dict[str, Any]) -> dict[str, Any]:
        """A finished trial's stored params as the values they stand for."""
        return {d.path: d.value_of(params[d.path]) for d in self.dists if d.path in params}

    def grid(self, src: str) -> dict[str, list]:
        return {d.path: d.grid(lambda msg, p=d.path: UserError(f"{src}: tune.space.{p}: {msg}")) for d in self.dists}
