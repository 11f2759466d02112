"""The confirmation that decides: the search's best params against the current ones, both trained
on folds no trial touched (same folds, seeds and data), scored out of fold; then presets/tuned.yaml.

    result = confirm(best_train, current_train, folds=[1, 2, 3, 4])   # tune/confirm/{tuned,current}/
    write_preset(result, ...)                                        # presets/tuned.yaml, validated

The search's best value was chosen on the trial folds' validation rows, so it is biased upward;
the confirmation's scores are pooled over the confirmation folds' OOF rows, which neither the
trials nor the choice of the winner saw. That pooled score, not the search's, is what tune
reports and what decides which params win.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML

from pipeline.core import paths
from pipeline.core.config import build, params_hash
from pipeline.evaluation.metrics import from_meta, scores
from pipeline.tools.sections import validate_all
from pipeline.training.fold import fold_seed, run_fold
from pipeline.training.params import TrainParams
from serve.atomic import write_text

_logger = logging.getLogger(__name__)


def train_arm(name: str, params: TrainParams, folds: list[int], root: Path = paths.TUNE,
              prepared: Path = paths.PREPARED) -> dict:
    """Train `params` on each of `folds` (resumable: tune/checkpoints/<hash>/); pooled OOF scores."""
    meta = json.loads(paths.Prepared(prepared).meta.read_text())
    labels = np.load(paths.Prepared(prepared).train_labels)
    metric = from_meta(meta)
    phash = params_hash({k: v for k, v in params.__dict__.items() if k != "folds"})
    out = root / "confirm" / name
    per_fold, probs, rows = {}, [], []
    for fold in folds:
        _logger.info("confirmation: %s params on fold %d", name, fold)
        m = run_fold(params, fold, fold_seed(params, fold, None), prepared=prepared, folds=out / "folds",
                     checkpoints=root / "checkpoints" / phash, curves=out / "curves")
        files = paths.FoldFiles(paths.fold_dir(fold, out / "folds"))
        per_fold[str(fold)] = m["val_score"]
        probs.append(np.load(files.oof_probs))
        rows.append(np.load(files.oof_rows))
        files.model.unlink(missing_ok=True)
    idx = np.concatenate(rows)
    pooled = scores(metric, labels[idx], np.concatenate(probs), meta.get("positive"))
    return {"params_hash": phash, "folds": per_fold, "oof": pooled, "rows": int(len(idx))}


def confirm(best: TrainParams, current: TrainParams, folds: list[int], root: Path = paths.TUNE,
            prepared: Path = paths.PREPARED) -> dict:
    """Both arms on `folds`; `winner` is `tuned` only where its pooled OOF score beats the current params'."""
    meta = json.loads(paths.Prepared(prepared).meta.read_text())
    metric = from_meta(meta)
    tuned = train_arm("tuned", best, folds, root, prepared)
    now = train_arm("current", current, folds, root, prepared)
    wins = metric.better(tuned["oof"]["score"], now["oof"]["score"])
    return {"metric": metric.name, "higher_is_better": metric.higher_is_better, "folds": folds,
            "tuned": tuned, "current": now, "winner": "tuned" if wins else "current"}


def preset_text(values: dict, summary: dict, current_train: dict) -> str:
    """presets/tuned.yaml: the tuned train keys, headed by the search's and the confirmation's scores."""
    train = {}
    for path, value in values.items():
        parts = path.split(".")[1:]
        if len(parts) == 2:
            train.setdefault(parts[0], dict(current_train.get(parts[0]) or {}))[parts[1]] = value
        else:
            train[parts[0]] = value
    s, c = summary["search"], summary.get("confirmation")
    lines = [f"# foldwise tune: study '{s['study']}' ({s['storage']}), {s['finished']} finished trials "
             f"({s['pruned']} pruned); best {s['metric']} {s['best_value']:.4f} on fold(s) "
             f"{', '.join(map(str, s['folds']))} (trial {s['best_trial']}: chosen on these rows, biased upward)."]
    if c:
        lines.append(f"# Confirmation on fold(s) {', '.join(map(str, c['folds']))} (no trial trained or was judged "
                     f"on them), pooled OOF {c['metric']}: tuned {c['tuned']['oof']['score']:.4f}, current "
                     f"{c['current']['oof']['score']:.4f} -> {c['winner']} params win.")
        if c["winner"] != "tuned":
            lines.append("# The current params won: keep params.yaml as it is (this preset is for reference).")
    else:
        lines.append("# Not confirmed (foldwise tune --no-confirm): the score above was chosen on its own folds.")
    lines.append("# Apply: foldwise preset presets/tuned.yaml && dvc repro")
    buf = io.StringIO()
    YAML().dump({"train": train}, buf)
    return "\n".join(lines) + "\n" + buf.getvalue()


def write_preset(path: Path, text: str, params_text: str, params_name: str) -> None:
    """Write the preset after checking that params.yaml with it applied validates."""
    yaml = YAML(typ="safe", pure=True)
    merged = yaml.load(params_text)
    for section, keys in yaml.load(text).items():
        merged[section].update(keys)
    buf = io.StringIO()
    YAML().dump(merged, buf)
    validate_all(buf.getvalue(), f"{params_name} + {path}")
    build(TrainParams, merged["train"], "train", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
