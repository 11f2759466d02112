"""Stage `ensemble`: score ensembling candidates on out-of-fold (OOF) predictions and pick one.

    foldwise ensemble            # reads params.yaml `ensemble`, models/folds/, data/prepared/

Every training row is predicted by the one fold model that did not train on it, under each
test-time augmentation view (`none` plus `ensemble.tta`). Candidates, each scored by OOF
with the competition's metric (meta.json; accuracy and log-loss beside it), nothing tuned on test labels:
  mean_prob   mean of the views' softmax probabilities
  mean_logit  softmax of the views' mean logits
  weighted    probabilities weighted per view, weights fitted on the OOF log-loss
each with and without the TTA views. The best OOF score (then log-loss) wins; at test time
the same rule combines every fold x view (folds weigh equally: OOF rows each see one fold, so
fold weights are not identifiable from them).

Writes `metrics.json` (DVC metrics: per fold, OOF overall, every candidate, the choice),
`models/ensemble.json` (the recipe the export stage builds) and `models/oof_logits.npy`
([views, rows, classes], for the report).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from pipeline.config import EnsembleParams, load_section
from pipeline.metrics import from_meta, scores
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
MODELS = Path("models/folds")


def fold_dirs(models: Path, n_folds: int) -> dict[int, Path]:
    """{fold: dir} of the trained folds under `models`; stale dirs of folds that no longer exist fail."""
    found = {}
    for d in sorted(models.glob("fold*")):
        m = re.fullmatch(r"fold(\d+)", d.name)
        if not m or not d.is_dir():
            continue
        k = int(m.group(1))
        if k >= n_folds:
            raise UserError(f"{d}: fold {k} is not a fold of data/prepared/folds.csv ({n_folds} folds); remove it")
        found[k] = d
    if not found:
        raise UserError(f"{models}: no trained folds (run the train stages first)")
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)




def fit_view_weights(view_probs: np.ndarray, labels: np.ndarray, steps: int = 300, lr: float = 0.5) -> np.ndarray:
    """Weights on the simplex minimising the log-loss of sum_v w_v p_v (exponentiated gradient)."""
    n_views = len(view_probs)
    w = np.full(n_views, 1.0 / n_views)
    p_true = view_probs[:, np.arange(len(labels)), labels]  # [V, N]
    for _ in range(steps):
        mix = np.clip(w @ p_true, 1e-15, None)
        grad = -(p_true / mix).mean(axis=1)
        w = w * np.exp(-lr * grad)
        w /= w.sum()
    return w


def combine(logits: np.ndarray, method: str, weights: np.ndarray) -> np.ndarray:
    """Probabilities from member logits `[M, N, C]` with per-member weights summing to 1."""
    if method == "mean_logit":
        return softmax(np.tensordot(weights, logits, axes=1))
    return np.tensordot(weights, softmax(logits), axes=1)


def oof_view_logits(dirs: dict[int, Path], images: np.ndarray, views: list[str], n_classes: int,
                    batch_size: int) -> np.ndarray:
    """Logits `[V, N, C]`: each row by its own fold's model, under each view. (torch is imported here:
    the report reuses this module's `combine` without it.)"""
    import torch  # noqa: PLC0415

    from pipeline.models import load_fold_model  # noqa: PLC0415
    from pipeline.tta import VIEWS  # noqa: PLC0415

    out = np.full((len(views), len(images), n_classes), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for k, d in dirs.items():
            model, _ = load_fold_model(d / "model.pt")
            rows = np.load(d / "oof_rows.npy")
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                x = torch.from_numpy(np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2)))
                for v, name in enumerate(views):
                    out[v, idx] = model(VIEWS[name](x)).float().numpy()
            _logger.info("fold %d: OOF logits for %d rows under views %s", k, len(rows), views)
    return out


def run(params: EnsembleParams, prepared: Path = PREPARED, models: Path = MODELS,
        metrics_path: Path = Path("metrics.json"), ensemble_path: Path = Path("models/ensemble.json"),
        logits_path: Path = Path("models/oof_logits.npy")) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    metric, positive = from_meta(meta), meta.get("positive")
    labels = np.load(prepared / "train_labels.npy")
    images = np.load(prepared / "train_images.npy", mmap_mode="r")
    dirs = fold_dirs(models, meta["n_folds"])
    views = ["none", *params.tta]
    logits = oof_view_logits(dirs, images, views, len(meta["classes"]), params.batch_size)
    covered = ~np.isnan(logits[0, :, 0])
    if covered.sum() < len(labels):
        _logger.warning("OOF covers %d of %d rows: folds %s of %d trained", covered.sum(), len(labels),
                        sorted(dirs), meta["n_folds"])
    lg, y = logits[:, covered], labels[covered]

    per_fold = {}
    for k, d in dirs.items():
        rows = np.load(d / "oof_rows.npy")
        per_fold[str(k)] = {**scores(metric, labels[rows], softmax(logits[0, rows]), positive),
                            "best_epoch": json.loads((d / "metrics.json").read_text())["best_epoch"]}
    candidates: dict[str, dict] = {}
    recipes: dict[str, dict] = {}
    view_sets = [["none"]] + ([views] if len(views) > 1 else [])
    for vs in view_sets:
        sub = lg[[views.index(v) for v in vs]]
        suffix = "" if vs == ["none"] else "+tta"
        for method in params.methods:
            if method == "weighted":
                if len(vs) == 1:
                    continue
                w = fit_view_weights(softmax(sub), y)
                combine_as = "mean_prob"
            else:
                w = np.full(len(vs), 1.0 / len(vs))
                combine_as = method
            name = f"{method}{suffix}"
            candidates[name] = scores(metric, y, combine(sub, combine_as, w), positive)
            recipes[name] = {"combine": combine_as, "views": vs, "view_weights": [round(float(x), 6) for x in w]}
    chosen = max(candidates, key=lambda n: (metric.key(candidates[n]["score"]), -candidates[n]["logloss"]))
    accs = np.array([f["accuracy"] for f in per_fold.values()])
    fold_scores = np.array([f["score"] for f in per_fold.values()])
    plain = candidates["mean_prob"] if "mean_prob" in candidates else next(iter(candidates.values()))
    metrics = {
        "metric": metric.name,
        "oof_score": candidates[chosen]["score"],
        "oof_accuracy": candidates[chosen]["accuracy"],
        "oof_logloss": candidates[chosen]["logloss"],
        "oof_score_no_tta": plain["score"],
        "oof_accuracy_no_tta": plain["accuracy"],
        "oof_coverage": round(float(covered.mean()), 6),
        "fold_score_mean": round(float(fold_scores.mean()), 6),
        "fold_score_std": round(float(fold_scores.std()), 6),
        "fold_accuracy_mean": round(float(accs.mean()), 6),
        "fold_accuracy_std": round(float(accs.std()), 6),
        "method": chosen,
        "folds": per_fold,
        "candidates": candidates,
    }
    folds = sorted(dirs)
    write_json(ensemble_path, {"method": chosen, **recipes[chosen], "folds": folds,
                               "fold_weights": [round(1.0 / len(folds), 12)] * len(folds),
                               "fold_dirs": [str(dirs[k]) for k in folds], "all_views": views})
    with atomic_path(logits_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, logits)
    write_json(metrics_path, metrics)
    _logger.info("OOF %s %.4f (accuracy %.4f) with %s (folds %.4f ± %.4f); candidates: %s", metric.name,
                 metrics["oof_score"], metrics["oof_accuracy"], chosen, fold_scores.mean(), fold_scores.std(),
                 ", ".join(f"{n} {c['score']:.4f}" for n, c in candidates.items()))
    return metrics


def main() -> None:
    run(load_section("ensemble", EnsembleParams))
