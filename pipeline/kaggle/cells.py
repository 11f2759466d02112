"""The cells of the Kaggle inference notebook (notebook.py puts them together).

Each code cell is plain Python that runs in Kaggle's image with the internet off. The notebook
uses nothing of foldwise but `serve/`, installed from the dataset's wheel, so its
`submission.csv` is what `foldwise predict` writes for the same files, byte for byte.
"""
from __future__ import annotations

SETTINGS = '''\
# Settings written by `foldwise kaggle notebook` (regenerate rather than edit: the tag above covers them)
import os
from pathlib import Path

COMPETITION = {competition!r}
DATASET = {dataset!r}
MODEL = {model!r}
MODEL_SHA256 = {model_sha256!r}
SERVE_WHEEL = {serve_wheel!r}
TEST = {test!r}              # in the competition's folder: a pixel CSV or a folder of images
SAMPLE = {sample!r}
HIDDEN_SCALE = {hidden_scale!r}     # the estimate below is for a hidden test set this many times larger
BATCH_SIZE = {batch_size!r}
INPUT = Path(os.environ.get("FOLDWISE_KAGGLE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("FOLDWISE_KAGGLE_WORKING", "/kaggle/working"))
SUBMISSION = WORKING / "submission.csv"
'''

LOCATE = '''\
# Find the attached dataset and the competition's files (Kaggle's mount paths have changed over
# time: look at /kaggle/input/<slug> first, then search a few levels down).
import hashlib
import json


def find_dir(marker, prefer):
    if (INPUT / prefer / marker).exists():
        return INPUT / prefer
    for depth in range(1, 5):
        hits = sorted(p.parent for p in INPUT.glob("*/" * depth + marker))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no {marker} under {INPUT}: attach {prefer!r} to this notebook (Add Input)")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DATA_DIR = find_dir("foldwise-manifest.json", DATASET.split("/")[1])
COMP_DIR = find_dir(SAMPLE, COMPETITION)
manifest = json.loads((DATA_DIR / "foldwise-manifest.json").read_text())
if sha256(DATA_DIR / MODEL) != MODEL_SHA256:
    raise RuntimeError(f"{DATA_DIR / MODEL} is not the model this notebook was written for: attach the dataset "
                       f"version tagged sha256:{manifest['tag'][:16]} or regenerate the notebook")
print(f"dataset {DATA_DIR} (sha256:{manifest['tag'][:16]}), competition files {COMP_DIR}")
'''

INSTALL = '''\
# Offline install: serve/ from the dataset's wheel (always, into a private folder), and any
# missing dependency from the dataset's wheels (pip --no-index: nothing is downloaded).
import importlib.util
import subprocess
import sys
import tempfile


def pip_install(*args):
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet", "--disable-pip-version-check",
                    *args], check=True)


SERVE_DIR = Path(tempfile.mkdtemp(prefix="foldwise-serve-"))  # this session's own
pip_install("--no-deps", "--upgrade", "--target", str(SERVE_DIR), str(DATA_DIR / SERVE_WHEEL))
sys.path.insert(0, str(SERVE_DIR))
NEEDED = {"onnxruntime": "onnxruntime", "numpy": "numpy", "pandas": "pandas", "PIL": "pillow", "tqdm": "tqdm"}
missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
if missing:
    if not manifest["wheels"]:
        raise RuntimeError(f"{missing} not installed in this image and the dataset holds no wheels: package it with "
                           "submit.wheels (e.g. [onnxruntime]) and push again")
    names = [dist for dist in missing if dist != "onnxruntime"]
    if "onnxruntime" in missing:  # the build the dataset holds: onnxruntime, or onnxruntime-gpu
        names += [r for r in manifest["requirements"] if r.startswith("onnxruntime")] or ["onnxruntime"]
    print(f"installing {names} from {DATA_DIR} (offline)")
    pip_install("--find-links", str(DATA_DIR), *names)
    importlib.invalidate_caches()

import onnxruntime
import serve

assert Path(serve.__file__).resolve().is_relative_to(SERVE_DIR.resolve()), serve.__file__
print(f"serve from {Path(serve.__file__).parent}; onnxruntime {onnxruntime.__version__} "
      f"({', '.join(onnxruntime.get_available_providers())})")
'''

PREDICT = '''\
# The ensemble over the test files: the readers, decoding and resize of `foldwise prepare` and
# `foldwise predict` (serve/), CUDA when this session has a GPU, rows in the sample's order.
from serve.engine import gpu_present
from serve.predict import predict_file

test_input = COMP_DIR / TEST
if not test_input.exists():
    raise FileNotFoundError(f"{test_input} not found; "
                            f"{COMP_DIR} holds {sorted(p.name for p in COMP_DIR.iterdir())[:20]}")
WORKING.mkdir(parents=True, exist_ok=True)
result = predict_file(DATA_DIR / MODEL, test_input, SUBMISSION, sample=COMP_DIR / SAMPLE, batch_size=BATCH_SIZE,
                      provider="auto")
print(f"predicted {result.rows} images in {result.seconds:.2f} s: {result.images_per_second:.0f} images/s on "
      f"{result.provider} (GPU present: {gpu_present()})")
hidden = result.rows * HIDDEN_SCALE
seconds = hidden / max(result.images_per_second, 1e-9)
took = (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200
        else f"{seconds / 3600:.1f} h")
print(f"estimate for a hidden test set {HIDDEN_SCALE:g}x larger ({hidden:,.0f} images): {took} to read, decode "
      "and predict (check it against the competition's run-time limit)")
'''

VALIDATE = '''\
# The file Kaggle scores, checked against the sample submission (columns, ids, classes or probabilities).
from serve.engine import Engine
from serve.submission import validate_submission

spec = Engine(DATA_DIR / MODEL, provider="cpu").info.submission
checked = validate_submission(SUBMISSION, COMP_DIR / SAMPLE, spec)
print(f"{SUBMISSION}: valid, {len(checked)} rows, columns {list(checked.columns)}")
print(checked.head().to_string(index=False))
'''


def header(competition: str, dataset: str, manifest: dict) -> str:
    """The first (markdown) cell; `{TAG}` is replaced by the notebook's content tag."""
    score = manifest.get("oof_score")
    oof = f"OOF {manifest['metric']} {score:.5f}" if isinstance(score, (int, float)) else "no OOF score"
    return (f"# {competition}: foldwise inference, offline\n\n"
            f"Model `{manifest['model']}` ({manifest['graph']}, {oof}, params {manifest['params_hash']}) from the "
            f"dataset `{dataset}` (sha256:{manifest['tag'][:16]}). Installs `serve/` from the dataset's wheel, "
            "predicts "
            f"the competition's test files with the same readers and resize as `foldwise predict`, and writes "
            f"`/kaggle/working/submission.csv` in the sample submission's format, validated.\n\n"
            "Written by `foldwise kaggle notebook`; foldwise-notebook {TAG}")
