"""Every artifact path of a foldwise project, relative to its root: the files dvc.yaml names.

    from pipeline.core import paths
    paths.ARCHIVE                          # data/raw/competition.zip
    paths.Prepared().meta                  # data/prepared/meta.json (Prepared(root) for another folder)
    paths.FoldFiles(paths.fold_dir(0)).model   # models/folds/fold0/model.pt

Stages talk only through these files; `tests/unit/test_dvc_yaml.py` checks that dvc.yaml names
no data path that is not defined here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from serve.errors import UserError

# download
RAW = Path("data/raw")
ARCHIVE = RAW / "competition.zip"      # the competition, in Kaggle's own layout
SOURCE_JSON = RAW / "source.json"      # where it came from, its sha256, a solution file if any
SOLUTION = RAW / "solution.csv"        # a kaggle-dataset's labelled test set

# prepare
PREPARED = Path("data/prepared")

# foldwise tune (a tool, not a stage): the study and its trials; tune/report/ is the report stage's input
TUNE = Path("tune")
TUNE_REPORT = TUNE / "report"          # summary.json and the tuning plots (README.md kept in git)
TUNED_PRESET = Path("presets/tuned.yaml")

# foldwise ladder (a tool, not a stage): the course's rungs, each a DVC experiment; the report stage's input
LADDER = Path("ladder")                # summary.json and each rung's curves (README.md kept in git)


@dataclass(frozen=True)
class Prepared:
    """data/prepared/: what `prepare` writes and every later stage reads."""
    root: Path = PREPARED

    @property
    def train_images(self) -> Path:     # uint8 [N, H, W, C]
        return self.root / "train_images.npy"

    @property
    def train_labels(self) -> Path:     # int64 [N], class index
        return self.root / "train_labels.npy"

    @property
    def test_images(self) -> Path:      # uint8 [M, H, W, C]
        return self.root / "test_images.npy"

    @property
    def test_ids(self) -> Path:         # the test ids, as the sample submission spells them
        return self.root / "test_ids.csv"

    @property
    def folds(self) -> Path:            # row,label,fold
        return self.root / "folds.csv"

    @property
    def sample_submission(self) -> Path:
        return self.root / "sample_submission.csv"

    @property
    def meta(self) -> Path:             # classes, submission, metric, image spec, statistics
        return self.root / "meta.json"


# train@k
MODELS = Path("models")
FOLDS = MODELS / "folds"               # fold<k>/ per fold (FoldFiles)
CHECKPOINTS = MODELS / "checkpoints"   # fold<k>/last.pt: resume state (git-ignored, not a DVC out)
CURVES = MODELS / "curves"             # fold<k>.csv: DVC plots


def fold_dir(fold: int, folds: Path = FOLDS) -> Path:
    return folds / f"fold{fold}"


def checkpoint(fold: int, checkpoints: Path = CHECKPOINTS) -> Path:
    return checkpoints / f"fold{fold}" / "last.pt"


def curves_csv(fold: int, curves: Path = CURVES) -> Path:
    return curves / f"fold{fold}.csv"


@dataclass(frozen=True)
class FoldFiles:
    """models/folds/fold<k>/: one trained fold."""
    dir: Path

    @property
    def model(self) -> Path:            # best epoch's weights + how to rebuild the model
        return self.dir / "model.pt"

    @property
    def oof_probs(self) -> Path:        # float32 [n_val, classes]
        return self.dir / "oof_probs.npy"

    @property
    def oof_rows(self) -> Path:         # int64 [n_val]: rows of train_images.npy
        return self.dir / "oof_rows.npy"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def config(self) -> Path:           # resolved params, device, precision, versions
        return self.dir / "config.json"


def trained_folds(folds: Path, n_folds: int) -> dict[int, Path]:
    """{fold: folder} of the trained folds under `folds`; a folder of a fold that no longer exists fails."""
    found = {}
    for d in sorted(folds.glob("fold*")):
        m = re.fullmatch(r"fold(\d+)", d.name)
        if not m or not d.is_dir():
            continue
        k = int(m.group(1))
        if k >= n_folds:
            raise UserError(f"{d}: fold {k} is not a fold of data/prepared/folds.csv ({n_folds} folds); remove it")
        found[k] = d
    if not found:
        raise UserError(f"{folds}: no trained folds (run the train stages first)")
    return found


# pseudo@k: pseudo-label rounds (pipeline/training/pseudo.py)
PSEUDO = MODELS / "pseudo"             # fold<k>/: the last round's FoldFiles + rounds.json (README.md kept in git)


def final_fold_dirs(n_folds: int, folds: Path = FOLDS, pseudo: Path = PSEUDO) -> dict[int, Path]:
    """{fold: folder} of each trained fold's final model: its last pseudo-label round where the
    pseudo@k stage trained one (models/pseudo/fold<k>/model.pt), else models/folds/fold<k>/."""
    import json

    from serve.atomic import sha256_file

    out = {}
    for k, d in trained_folds(folds, n_folds).items():
        p = fold_dir(k, pseudo)
        if FoldFiles(p).model.is_file():
            rounds = json.loads((p / "rounds.json").read_text())
            if rounds.get("round0_model_sha256") != sha256_file(FoldFiles(d).model):
                raise UserError(f"{p}: its pseudo-label rounds started from another {FoldFiles(d).model} "
                                f"(run dvc repro to retrain pseudo@{k})")
            d = p
        out[k] = d
    return out


# distill: the student (pipeline/training/distill.py)
STUDENT = MODELS / "student"           # student.json, student*.onnx, oof_probs.npy (README.md kept in git)
STUDENT_FILES = {"student": "student.onnx", "student_int8": "student_int8.onnx", "student_fp16": "student_fp16.onnx"}

# ensemble
ENSEMBLE_JSON = MODELS / "ensemble.json"   # the chosen recipe (views, weights, folds)
OOF_LOGITS = MODELS / "oof_logits.npy"     # [views, rows, classes]
METRICS_JSON = Path("metrics.json")        # DVC metrics: OOF scores, every candidate

# export
EXPORT_JSON = MODELS / "export.json"       # parity, OOF score and speed of each graph, predict's choice
GRAPH_FILES = {"fp32": "ensemble.onnx", "int8": "ensemble_int8.onnx", "fp16": "ensemble_fp16.onnx"}


def graph(variant: str, models: Path = MODELS) -> Path:
    """models/ensemble.onnx (fp32), ensemble_int8.onnx, ensemble_fp16.onnx; the distilled student's
    models/student/student.onnx, student_int8.onnx, student_fp16.onnx."""
    if variant in STUDENT_FILES:
        return models / STUDENT.name / STUDENT_FILES[variant]
    return models / GRAPH_FILES[variant]


# predict, submit
SUBMISSIONS = Path("submissions")
SUBMISSION = SUBMISSIONS / "submission.csv"
RECEIPT = SUBMISSIONS / "receipt.json"     # DVC metrics: public score beside the OOF score
HISTORY = SUBMISSIONS / "history.json"     # file sha256 -> OOF and public scores, kept across runs

# report
REPORTS = Path("reports")                  # index.html, report.pdf, report.ipynb, oof_predictions.csv, the PNGs

# benchmarks (`foldwise bench ...`; not DVC outputs)
BENCH = Path("bench")
BENCH_INFER = BENCH / "infer.json"
BENCH_SERVE = BENCH / "serve.json"
BENCH_PARALLEL = BENCH / "parallel.json"

# code competitions (`foldwise kaggle ...`)
KAGGLE = Path("kaggle")
KAGGLE_DATASET = KAGGLE / "dataset"        # the model dataset as uploaded
KAGGLE_PACKAGE = KAGGLE / "package.json"   # what was uploaded: dataset, version, tag
KAGGLE_KERNEL = KAGGLE / "kernel"          # the notebook and kernel-metadata.json
KAGGLE_OUTPUT = KAGGLE / "output"          # v<version>/: a run's output files and log
