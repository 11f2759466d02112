"""The confirmation that decides: the search's best params against the current ones, both trained
on folds no trial touched (same folds, seeds and data), scored out of fold; then presets/tuned.yaml.

    result = confirm(best, current, [1, 2, 3, 4], ensemble)    # TrainParams x2, EnsembleParams; tune/confirm/
    write_preset(paths.TUNED_PRESET, preset_text(values, summary, train), params_text, "params.yaml")

The search's best value was chosen on the trial folds' validation rows, so it is biased upward;
the confirmation's scores are pooled over the confirmation folds' OOF rows, which neither the
trials nor the choice of the winner saw, and scored as the ensemble stage would (its methods and
TTA views, `ensemble` params: a recipe without flips loses what hflip TTA gave one with flips).
That pooled score, not the search's, is what tune reports and what decides which params win.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML

from pipeline.core import paths
from pipeline.core.config import build
from pipeline.evaluation.ensemble import choose
from pipeline.evaluation.metrics import from_meta, scores
from pipeline.modeling.ensemble import EnsembleParams, oof_view_logits
from pipeline.tools.sections import validate_all
from pipeline.training.fold import fold_seed, run_fold
from pipeline.training.params import TrainParams
from serve.atomic import write_text

_logger = logging.getLogger(__name__)


def train_arm(name: str, params: TrainParams, folds: list[int], ensemble: EnsembleParams, root: Path = paths.TUNE,
              prepared: Path = paths.PREPARED) -> dict:
    """Train `params` on each of `folds` (resumable: tune/checkpoints/<hash>/); their pooled OOF rows
    scored as the ensemble stage scores them (`oof`: the best of its methods, with and without its
    TTA views) and plain (`oof_plain`: each fold's best epoch, no TTA)."""
    files = paths.Prepared(prepared)
    meta, labels = json.loads(files.meta.read_text()), np.load(files.train_labels)
    metric = from_meta(meta)
    phash = params.recipe_hash()
    out = root / "confirm" / name
    per_fold, dirs = {}, {}
    for fold in folds:
        _logger.info("confirmation: %s params on fold %d", name, fold)
        m = run_fold(params, fold, fold_seed(params, fold, None), prepared=prepared, folds=out / "folds",
                     checkpoints=root / "checkpoints" / phash, curves=out / "curves")
        per_fold[str(fold)] = m["val_score"]
        dirs[fold] = paths.fold_dir(fold, out / "folds")
    views = ["none", *ensemble.tta]
    logits = oof_view_logits(dirs, np.load(files.train_images, mmap_mode="r"), views, len(meta["classes"]),
                             ensemble.batch_size)
    idx = np.concatenate([np.load(paths.FoldFiles(d).oof_rows) for d in dirs.values()])
    plain = np.concatenate([np.load(paths.FoldFiles(d).oof_probs) for d in dirs.values()])
    candidates, _, chosen = choose(logits[:, idx], labels[idx], views, ensemble.methods, metric, meta.get("positive"))
    for d in dirs.values():
        paths.FoldFiles(d).model.unlink(missing_ok=True)
    return {"params_hash": phash, "folds": per_fold, "oof": {**candidates[chosen], "method": chosen},
            "oof_plain": scores(metric, labels[idx], plain, meta.get("positive")), "rows": int(len(idx))}


def confirm(best: TrainParams, current: TrainParams, folds: list[int], ensemble: EnsembleParams,
            root: Path = paths.TUNE, prepared: Path = paths.PREPARED) -> dict:
    """Both arms on `folds`; `winner` is `tuned` only where its pooled OOF score, as the ensemble stage
    would choose it, beats the current params'."""
    meta = json.loads(paths.Prepared(prepared).meta.read_text())
    metric = from_meta(meta)
    tuned = train_arm("tuned", best, folds, ensemble, root, prepared)
    now = train_arm("current", current, folds, ensemble, root, prepared)
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
