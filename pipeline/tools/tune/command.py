"""`foldwise tune`: search, confirm, write presets/tuned.yaml and the report's tuning section.

    foldwise tune --timeout 30m && foldwise preset presets/tuned.yaml && dvc repro

1. `dvc repro prepare` (the trials train on data/prepared/ as the pipeline does);
2. the search (search.py) until `tune.n_trials` trials are finished or the timeout is spent;
3. the confirmation (confirm.py) of the best params against the current ones on the other folds;
4. tune/report/summary.json and plots (figures.py), presets/tuned.yaml (validated).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import optuna

from pipeline.core import paths
from pipeline.core.config import build, load_section, read_params
from pipeline.evaluation.metrics import from_meta
from pipeline.modeling.ensemble import EnsembleParams
from pipeline.tools.tune import confirm as confirmation
from pipeline.tools.tune.figures import draw
from pipeline.tools.tune.search import finished, open_study, search
from pipeline.training.params import TrainParams
from pipeline.training.search_space import SearchSpace, TuneParams, apply, seconds
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def _prepare() -> None:
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or "failed").splitlines()[-1]
        raise UserError(f"dvc repro prepare (tune trains on data/prepared/): {last}")


def _search_summary(study: optuna.Study, best: optuna.trial.FrozenTrial, tune: TuneParams, metric: str) -> dict:
    trials = finished(study)
    return {"study": tune.study, "storage": str(paths.TUNE / "study.db"), "sampler": tune.sampler,
            "pruner": tune.pruner, "metric": metric, "direction": study.direction.name.lower(),
            "folds": tune.folds, "finished": len(trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
            "failed": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))),
            "best_trial": best.number, "best_value": best.value, "best_params": best.params,
            "space": tune.space}


def run(params_path: Path = Path("params.yaml"), n_trials: int | None = None, timeout: str | None = None,
        study_name: str | None = None, do_confirm: bool = True) -> dict:
    src = str(params_path)
    given = (("n_trials", n_trials), ("timeout", timeout), ("study", study_name))
    overrides = {k: v for k, v in given if v is not None}
    raw = read_params(params_path)
    tune = build(TuneParams, {**(raw.get("tune") or {}), **overrides}, "tune", src)
    current = load_section("train", TrainParams, params_path)
    space = SearchSpace.parse(tune.space, raw.get("train") or {}, src)
    listed = [spec["fold"] for spec in current.folds]
    for key, folds in (("folds", tune.folds), ("confirm_folds", tune.confirm_folds or [])):
        missing = [f for f in folds if f not in listed]
        if missing:
            raise UserError(f"{src}: tune.{key}: fold {missing[0]} is not in train.folds ({listed})")
    confirm_folds = tune.confirm_folds or [f for f in listed if f not in tune.folds]
    if do_confirm and not confirm_folds:
        raise UserError(f"{src}: tune.folds: every fold of train.folds is a trial fold; none is left to confirm on")
    _prepare()
    meta = json.loads(paths.Prepared().meta.read_text())
    metric = from_meta(meta)
    study = open_study(tune, space, "maximize" if metric.higher_is_better else "minimize", src)
    search(study, tune, space, raw.get("train") or {}, src, seconds(tune.timeout))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise UserError(f"study {tune.study}: no trial finished within the budget; raise tune.timeout")
    best_trial = study.best_trial  # one snapshot: another process sharing the study may finish a better one meanwhile
    summary = {"search": _search_summary(study, best_trial, tune, metric.name), "confirmation": None}
    best_values = space.values_of(best_trial.params)
    best = build(TrainParams, apply(raw["train"], best_values), "train", f"{src} (best trial)")
    if do_confirm:
        summary["confirmation"] = confirmation.confirm(best, current, confirm_folds,
                                                       load_section("ensemble", EnsembleParams, params_path))
    summary["best_train"] = best_values
    summary["figures"] = draw(study, summary, paths.TUNE_REPORT)
    write_json(paths.TUNE_REPORT / "summary.json", summary)
    text = confirmation.preset_text(best_values, summary, raw["train"])
    confirmation.write_preset(paths.TUNED_PRESET, text, params_path.read_text(), src)
    summary["preset"] = str(paths.TUNED_PRESET)
    return summary


def lines(summary: dict) -> list[str]:
    """What `foldwise tune` prints at the end."""
    s, c = summary["search"], summary["confirmation"]
    out = [f"search        {s['finished']} finished trials ({s['pruned']} pruned, {s['failed']} failed) in "
           f"{s['storage']} study '{s['study']}'",
           f"best          {s['metric']} {s['best_value']:.4f} on fold(s) {', '.join(map(str, s['folds']))} "
           f"(trial {s['best_trial']}; chosen on these rows, so biased upward)",
           "params        " + ", ".join(f"{k}={v}" for k, v in s["best_params"].items())]
    if c:
        out.append(f"confirmation  fold(s) {', '.join(map(str, c['folds']))}, pooled OOF {c['metric']}: tuned "
                   f"{c['tuned']['oof']['score']:.4f}, current {c['current']['oof']['score']:.4f} -> "
                   f"{c['winner']} params win")
    verdict = ("apply it: foldwise preset presets/tuned.yaml && dvc repro" if c and c["winner"] == "tuned"
               else "keep params.yaml (the current params won the confirmation)" if c
               else "unconfirmed: rerun without --no-confirm before applying it")
    out.append(f"preset        {summary['preset']}: {verdict}")
    return out

