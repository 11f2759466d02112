"""`foldwise ladder`: the course's ladder, baseline to CNN and each remedy against overfitting, every
rung a DVC experiment trained on the same folds; ladder/summary.json for the report.

    foldwise ladder                                   # every rung on fold 0 (about 20 min on 2 CPU cores)
    foldwise ladder --rungs linear,mlp,cnn,default --folds 0,1 --epochs 3
    foldwise compare                                  # the rungs among the other DVC experiments

Rungs (cumulative from `cnn` on; each keeps the rest of params.yaml `train`, lr, epochs, image size):
linear (logistic regression on the pixels) -> mlp -> cnn (foldwise_cnn with no remedy: no
augmentation, dropout, weight decay, label smoothing, early stopping) -> +weight_decay -> +dropout
-> +augment -> +early_stopping -> default (params.yaml as it is). A remedy takes params.yaml's value
(weight decay 0.05, dropout 0.2, patience 2 where params.yaml has none); `augment` does not apply
where params.yaml has no augmentation, and says so.

Each rung writes params.yaml and runs `dvc exp run -n ladder-<rung> ensemble` (download, prepare,
train@k, ensemble: DVC's run cache makes a second ladder nearly free), then reads the fold models'
own validation scores (the pooled rows of `--folds`, with a 95% interval), their size, FLOPs per
image, training time and curves. params.yaml, dvc.lock and the outputs are put back afterwards
(the workspace is as before; `dvc exp apply ladder-<rung>` brings a rung's back).
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import PARAMS_FILE
from pipeline.core.provenance import machine
from pipeline.core.registry import Registry
from pipeline.distributed.dvcstate import dvc_bin, dvc_env
from pipeline.evaluation.confidence import score_interval
from pipeline.evaluation.metrics import from_meta
from pipeline.tools.preset import merged
from serve.atomic import atomic_path, write_text
from serve.errors import UserError

_logger = logging.getLogger(__name__)
NO_REMEDY = {"augment": {}, "drop_rate": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0, "patience": None,
             "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "ema": False, "drop_path_rate": None}
FALLBACK = {"weight_decay": 0.05, "drop_rate": 0.2, "patience": 2}   # a remedy params.yaml does not use


@dataclass(frozen=True)
class Rung:
    name: str
    adds: str                                   # what this rung changes, for the table
    model: str | None                           # None: params.yaml's
    remedies: tuple[str, ...] = ()              # train keys taken from params.yaml (or FALLBACK)


RUNGS: Registry[Rung] = Registry("ladder rung")
for _rung in (Rung("linear", "baseline: logistic regression on the pixels", "foldwise_linear"),
              Rung("mlp", "two hidden layers (512, 256)", "foldwise_mlp"),
              Rung("cnn", "convolutions, no remedy against overfitting", "foldwise_cnn"),
              Rung("weight_decay", "+ weight decay", "foldwise_cnn", ("weight_decay",)),
              Rung("dropout", "+ dropout", "foldwise_cnn", ("weight_decay", "drop_rate")),
              Rung("augment", "+ augmentation", "foldwise_cnn", ("weight_decay", "drop_rate", "augment")),
              Rung("early_stopping", "+ early stopping", "foldwise_cnn",
                   ("weight_decay", "drop_rate", "augment", "patience")),
              Rung("default", "params.yaml as it is", None)):
    RUNGS.add(_rung.name, _rung)


def overrides(rung: Rung, train: dict, folds: list[int], epochs: int | None) -> dict | str:
    """The `train` keys this rung sets, or why it does not apply."""
    picked = [f for f in train["folds"] if int(f["fold"]) in folds]
    budget = {"folds": picked, **({"epochs": epochs, "steps": None} if epochs else {})}
    if rung.model is None:
        return budget
    if "augment" in rung.remedies and not train.get("augment"):
        return "params.yaml has no augmentation (train.augment is {})"
    out = {**NO_REMEDY, "model": rung.model, "model_kwargs": {}, **budget}
    for key in rung.remedies:
        out[key] = train.get(key) or FALLBACK.get(key, train.get(key))
    return out


def _dvc(*args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """The project's DVC (pipeline/distributed/dvcstate.py finds it), its output shown unless `quiet`."""
    exe = dvc_bin()
    if shutil.which(exe) is None:
        raise UserError("dvc: not found beside this Python or on PATH (make run installs it into .venv)")
    return subprocess.run([exe, *args], text=True, capture_output=quiet, env=dvc_env())


def experiment(rung: str) -> str:
    """The DVC experiment's name of a rung."""
    return f"ladder-{rung.replace('_', '-')}"


def _require_git() -> None:
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError("foldwise ladder: each rung is a DVC experiment, which needs a git repository with a commit "
                        "(git init && git add -A && git commit -m baseline)")


def measure(folds: list[int], rung: str) -> dict[str, Any]:
    """What the rung's fold models scored on their own validation rows, their size, FLOPs and time."""
    from pipeline.modeling.classifier import load_fold_model
    from pipeline.modeling.inference import size_and_flops

    files = paths.Prepared(paths.PREPARED)
    meta = json.loads(files.meta.read_text())
    labels, metric = np.load(files.train_labels), from_meta(meta)
    rows, probs, seconds, fold_metrics = [], [], 0.0, []
    for k in folds:
        f = paths.FoldFiles(paths.fold_dir(k))
        rows.append(np.load(f.oof_rows))
        probs.append(np.load(f.oof_probs))
        fold_metrics.append(json.loads(f.metrics.read_text()))
        seconds += fold_metrics[-1]["train_seconds"]
    y, p = labels[np.concatenate(rows)], np.concatenate(probs)
    lo, hi = score_interval(metric, y, p, meta.get("positive"))
    model, _ = load_fold_model(paths.FoldFiles(paths.fold_dir(folds[0])).model)
    n_params, flops = size_and_flops(model, tuple(meta["image_shape"]))
    curves = pd.read_csv(paths.curves_csv(folds[0]))
    best = curves.loc[curves["epoch"] == fold_metrics[0]["best_epoch"]].iloc[0]
    return {"name": rung, "metric": metric.name, "score": metric.score(y, p, meta.get("positive")),
            "ci": [lo, hi], "accuracy": float((p.argmax(1) == y).mean()), "rows": int(len(y)),
            "params": n_params, "flops_per_image": flops, "train_seconds": round(seconds, 1),
            "epochs_run": fold_metrics[0]["epochs_run"], "best_epoch": fold_metrics[0]["best_epoch"],
            "stopped_early": fold_metrics[0]["stopped_early"],
            "gap": float(best["train_accuracy"] - best["val_accuracy"]),  # train minus validation accuracy
            "curves": curves}


def _workspace_files() -> dict[Path, bytes | None]:
    """params.yaml, dvc.lock and the outputs DVC does not cache (`cache: false`: metrics.json, ...),
    which `dvc checkout` cannot put back: their bytes now (None: absent)."""
    from ruamel.yaml import YAML

    stages = (YAML(typ="safe").load(Path("dvc.yaml").read_text()) or {}).get("stages", {})
    files = {Path(PARAMS_FILE), Path("dvc.lock")}
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                if isinstance(entry, dict):
                    files |= {Path(name) for name, opts in entry.items() if (opts or {}).get("cache") is False}
    return {f: f.read_bytes() if f.is_file() else None for f in sorted(files)}


def _restore(saved: dict[Path, bytes | None]) -> None:
    """The workspace as it was before the ladder: those files, then the outputs dvc.lock records
    (`dvc checkout --force`: the rungs overwrote them; each rung's are kept in its experiment)."""
    for path, data in saved.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
    if saved.get(Path("dvc.lock")) is not None and _dvc("checkout", "--force", "--quiet").returncode != 0:
        _logger.warning("dvc checkout could not restore every output (dvc repro rebuilds them)")


def run_ladder(rungs: list[str], folds: list[int], epochs: int | None, out: Path = paths.LADDER) -> dict:
    """Run the rungs one DVC experiment each; write `out`/summary.json and `out`/curves/<rung>.csv."""
    from ruamel.yaml import YAML

    _require_git()
    chosen = [RUNGS.lookup(name, "--rungs") for name in rungs]
    params_text = Path(PARAMS_FILE).read_text()
    saved = _workspace_files()
    train = YAML(typ="safe").load(params_text)["train"]
    unknown = sorted(set(folds) - {int(f["fold"]) for f in train["folds"]})
    if unknown:
        raise UserError(f"--folds: {', '.join(map(str, unknown))} not in params.yaml train.folds")
    done, skipped = [], []
    try:
        for i, rung in enumerate(chosen, 1):
            sets = overrides(rung, train, folds, epochs)
            if isinstance(sets, str):
                skipped.append({"name": rung.name, "adds": rung.adds, "why": sets})
                _logger.info("rung %d/%d %s: skipped (%s)", i, len(chosen), rung.name, sets)
                continue
            write_text(Path(PARAMS_FILE), merged(params_text, {"train": sets}, f"ladder rung {rung.name}",
                                                 f"{PARAMS_FILE} (ladder rung {rung.name})"))
            _logger.info("rung %d/%d %s (%s): dvc exp run -n %s", i, len(chosen), rung.name, rung.adds,
                         experiment(rung.name))
            _dvc("exp", "remove", experiment(rung.name), quiet=True)  # a rerun replaces the rung's experiment
            proc = _dvc("exp", "run", "-n", experiment(rung.name), "ensemble")
            if proc.returncode != 0:
                raise UserError(f"ladder rung {rung.name}: dvc exp run failed (exit {proc.returncode}; its output "
                                "is above)")
            done.append({**measure(folds, rung.name), "adds": rung.adds,
                         "experiment": experiment(rung.name),
                         "set": {k: v for k, v in sets.items() if k != "folds"}})
    finally:
        _restore(saved)
    return write_summary(done, skipped, folds, out)


def write_summary(done: list[dict], skipped: list[dict], folds: list[int], out: Path) -> dict:
    (out / "curves").mkdir(parents=True, exist_ok=True)
    for r in done:
        r.pop("curves").to_csv(out / "curves" / f"{r['name']}.csv", index=False)
        r["curves"] = f"curves/{r['name']}.csv"
    summary = {"folds": folds, "time": datetime.now().isoformat(timespec="seconds"), "cpu": machine(),
               "rungs": done, "skipped": skipped}
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
