"""The Optuna study behind `foldwise tune`: storage, sampler, pruner and the objective (one trial =
the `tune.folds` of one params point, each trained by the train@k code and judged on its own
validation rows).

    study = open_study(tune, space, "maximize", "params.yaml")   # tune/study.db: SQLite, shared, resumable
    search(study, tune, space, train_section, src, budget)        # until n_trials are finished or time is up

The study lives in SQLite (Optuna's RDBStorage) with heartbeats: a `foldwise tune` killed at any
point (SIGKILL included) leaves a trial whose heartbeat stops; the next run fails it and enqueues
its params again (Optuna's RetryHeartbeatStaleTrialCallback), and that retry resumes the killed
fold from its checkpoint (tune/checkpoints/<params hash>/, the train@k resume). Several processes
may run on one study at once. Each epoch's validation score is reported to the pruner, which may
stop the trial; its step is the percent of the trial's schedule done (trials of 4 and 8 epochs
meet at 50%). Each trial keeps its params (params.json), per-epoch curves (curves/fold<k>.csv, as
train@k writes them) and fold metrics in tune/trials/<study>/<n>/; its weights are not kept.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import optuna
from tqdm import tqdm

from pipeline.core import paths
from pipeline.core.config import build
from pipeline.core.console import quiet
from pipeline.training.fold import fold_seed, run_fold
from pipeline.training.params import TrainParams
from pipeline.training.search_space import SearchSpace, TuneParams, apply
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
TUNE = paths.TUNE
# a trial without a heartbeat for GRACE_SECONDS is failed (and retried); FOLDWISE_TUNE_GRACE sets it
# (e.g. longer on a slow shared filesystem; the tests shorten it)
_GRACE = os.environ.get("FOLDWISE_TUNE_GRACE", "")
GRACE_SECONDS = int(_GRACE) if _GRACE.isdigit() and int(_GRACE) >= 4 else 20
HEARTBEAT_SECONDS = max(1, GRACE_SECONDS // 4)
WARMUP_PERCENT = 30  # no trial is pruned before 30% of its first fold's schedule
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def storage(root: Path = TUNE) -> optuna.storages.RDBStorage:
    root.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable for us
    return optuna.storages.RDBStorage(
        f"sqlite:///{(root / 'study.db').resolve()}", engine_kwargs={"connect_args": {"timeout": 120}},
        heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))


def sampler(tune: TuneParams, space: SearchSpace, src: str, seed: int) -> optuna.samplers.BaseSampler:
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(src), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, (tune.n_trials or 20) // 3)))


def run_seed(tune: TuneParams, store: optuna.storages.RDBStorage) -> int:
    """`tune.seed` for a new study; a process joining or continuing one draws from its own stream
    (a second process with the same seed would propose the same points)."""
    try:
        existing = len(store.get_all_trials(store.get_study_id_from_name(tune.study), deepcopy=False))
    except KeyError:
        return tune.seed
    return tune.seed if existing == 0 else tune.seed + 1000 * existing + os.getpid() % 1000


def pruner(tune: TuneParams) -> optuna.pruners.BasePruner:
    """Steps are percent of a trial's schedule (fold i: 100 i + percent), so that trials of different
    lengths are compared at the same point of their learning-rate schedules, never before 30% of it."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=WARMUP_PERCENT)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=WARMUP_PERCENT, max_resource=100 * len(tune.folds))
    return optuna.pruners.NopPruner()


def open_study(tune: TuneParams, space: SearchSpace, direction: str, src: str, root: Path = TUNE) -> optuna.Study:
    """The study `tune.study` in root/study.db, created or continued."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(root)
    study = optuna.create_study(storage=store, study_name=tune.study, direction=direction,
                                sampler=sampler(tune, space, src, run_seed(tune, store)), pruner=pruner(tune),
                                load_if_exists=True)
    if study.direction.name.lower() != direction:  # Optuna keeps an existing study's direction silently
        raise UserError(f"{root / 'study.db'}: study '{tune.study}' was created to {study.direction.name.lower()} "
                        f"its metric, this competition's metric needs {direction}: set tune.study to a new name")
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def objective(tune: TuneParams, space: SearchSpace, train: dict, src: str, root: Path = TUNE):
    """The function Optuna calls per trial: the mean best validation score over `tune.folds`."""

    def run(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        params = build(TrainParams, apply(train, values), "train", f"{src} (trial {trial.number})")
        phash = params.recipe_hash()
        folder = root / "trials" / tune.study / str(trial.number)
        trial.set_user_attr("params_hash", phash)
        write_json(folder / "params.json", {"trial": trial.number, "values": values, "params_hash": phash})
        scores: list[float] = []

        def report(row: dict, epochs: int, index: int) -> None:
            step = 100 * index + round(100 * row["epoch"] / epochs)  # percent of the schedule (pruner())
            trial.report(row["val_score"], step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", f"fold {tune.folds[index]} epoch {row['epoch']}/{epochs}")
                raise optuna.TrialPruned(f"epoch {row['epoch']}/{epochs}: {row['val_score']:.4f}")

        try:
            for index, fold in enumerate(tune.folds):
                metrics = run_fold(params, fold, fold_seed(params, fold, None), folds=folder / "folds",
                                   checkpoints=root / "checkpoints" / phash, curves=folder / "curves",
                                   on_epoch=lambda row, epochs, i=index: report(row, epochs, i))
                scores.append(metrics["val_score"])
                trial.set_user_attr(f"fold{fold}", metrics["val_score"])
                trial.set_user_attr(f"fold{fold}_accuracy", metrics["val_accuracy"])
                (folder / "folds" / f"fold{fold}" / "model.pt").unlink(missing_ok=True)  # scores kept, weights not
        except optuna.TrialPruned:
            shutil.rmtree(root / "checkpoints" / phash, ignore_errors=True)
            raise
        shutil.rmtree(root / "checkpoints" / phash, ignore_errors=True)  # kept only while a trial may resume
        return float(sum(scores) / len(scores))

    return run


def best_text(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        return "none yet"


def search(study: optuna.Study, tune: TuneParams, space: SearchSpace, train: dict, src: str,
           budget_seconds: float | None, root: Path = TUNE) -> None:
    """Trials until the study holds `tune.n_trials` finished ones or `budget_seconds` have passed."""
    target = tune.n_trials
    done = len(finished(study))
    if target is not None and done >= target:
        _logger.info("study %s already has %d finished trials (n_trials %d)", tune.study, done, target)
        return
    bar = tqdm(total=target, initial=done, desc=f"tune {tune.study}", unit="trial", file=sys.stderr,
               disable=quiet(), dynamic_ncols=True)
    started = time.monotonic()

    def after(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = finished(st)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        bar.n = len(trials)
        bar.set_postfix_str(f"best {best_text(st)}, pruned {pruned}")
        bar.refresh()
        _logger.info("trial %d %s%s; best %s", trial.number, trial.state.name.lower(),
                     f" {trial.value:.4f}" if trial.value is not None else "", best_text(st))
        if target is not None and len(trials) >= target:
            st.stop()

    logging.getLogger("pipeline.training").setLevel(logging.WARNING)  # one line per trial, not per epoch
    try:
        study.optimize(objective(tune, space, train, src, root), timeout=budget_seconds, callbacks=[after],
                       catch=(), gc_after_trial=True)
    finally:
        logging.getLogger("pipeline.training").setLevel(logging.NOTSET)
        bar.close()
    _logger.info("study %s: %d finished trials in %.0f s this run; best %s", tune.study, len(finished(study)),
                 time.monotonic() - started, best_text(study))

