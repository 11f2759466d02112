"""pipeline/report/: the report's tables (per-class scores, confused pairs, the confusion view, the
chosen ensemble's OOF probabilities, the environment), its figures (PNG files) and `report` params."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from pipeline.core.config import build
from pipeline.core.provenance import machine
from pipeline.report.figures import plot_confusion, plot_curves, plot_cv_vs_lb, plot_grid
from pipeline.report.params import ReportParams
from pipeline.report.tables import confused_pairs, confusion_view, environment, oof_probabilities, per_class
from serve.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 50  # small figures: fast to draw


@pytest.fixture(autouse=True)
def pillow_default_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve.images sets Pillow's process-wide MAX_IMAGE_PIXELS from each ImageSpec; the figures
    read back here must not depend on what another test decoded last."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- tables.py -----------------------------------------------------------------------------------

def test_per_class_scores_from_a_hand_confusion_matrix() -> None:
    conf = np.array([[5, 1, 0],    # true a: 5 right, 1 taken for b
                     [2, 3, 0],    # true b: 3 right, 2 taken for a
                     [0, 0, 0]])   # c: never seen, never predicted
    table = per_class(conf, ["a", "b", "c"])
    assert table["class"].tolist() == ["a", "b", "c"]
    assert np.allclose(table["precision"], [5 / 7, 3 / 4, 0])
    assert np.allclose(table["recall"], [5 / 6, 3 / 5, 0])
    f1_a = 2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6)
    f1_b = 2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5)
    assert np.allclose(table["f1"], [f1_a, f1_b, 0])
    assert table["support"].tolist() == [6, 5, 0]
    assert not table.isna().any().any()  # an empty class scores 0, not NaN


def test_confused_pairs_are_ordered_by_count_with_the_share_of_the_true_class() -> None:
    conf = np.array([[10, 3, 1],
                     [4, 8, 0],
                     [0, 2, 5]])
    pairs = confused_pairs(conf, ["a", "b", "c"])
    assert list(pairs.columns) == ["true", "predicted", "count", "share of true class"]
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [
        ("b", "a", 4), ("a", "b", 3), ("c", "b", 2), ("a", "c", 1)]  # zero pairs and the diagonal left out
    assert np.allclose(pairs["share of true class"], [4 / 12, 3 / 14, 2 / 7, 1 / 14])
    assert confused_pairs(conf, ["a", "b", "c"], top=2)["count"].tolist() == [4, 3]


def test_confused_pairs_of_a_perfect_matrix_is_empty() -> None:
    pairs = confused_pairs(np.diag([3, 4, 5]), ["a", "b", "c"])
    assert pairs.empty and list(pairs.columns) == ["true", "predicted", "count", "share of true class"]


def test_confusion_view_keeps_every_class_up_to_most() -> None:
    conf = np.arange(16).reshape(4, 4)
    view, names = confusion_view(conf, list("abcd"), most=4)
    assert view is conf and names == list("abcd")


def test_confusion_view_keeps_the_classes_with_the_most_mistakes_in_their_order() -> None:
    conf = np.diag([50, 50, 50, 50, 50])
    conf[3, 1] = 9   # d taken for b: d and b each gain 9 mistakes
    conf[4, 0] = 2   # e taken for a
    conf[0, 2] = 1   # a taken for c
    view, names = confusion_view(conf, list("abcde"), most=2)
    assert names == ["b", "d"]
    assert view.tolist() == [[50, 0], [9, 50]]
    view, names = confusion_view(conf, list("abcde"), most=3)
    assert names == ["a", "b", "d"]  # a: 3 mistakes (row and column), more than c or e
    assert view.shape == (3, 3) and view[2, 1] == 9


def test_oof_probabilities_rebuild_the_chosen_combination(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 4)).astype(np.float32)  # [views, rows, classes]
    np.save(tmp_path / "oof_logits.npy", logits)
    spec = {"all_views": ["none", "hflip", "vflip"], "views": ["vflip", "none"], "combine": "mean_prob",
            "view_weights": [0.25, 0.75]}
    (tmp_path / "ensemble.json").write_text(json.dumps(spec))
    probs = oof_probabilities(tmp_path / "ensemble.json", tmp_path / "oof_logits.npy")
    assert probs.shape == (7, 4)
    assert np.allclose(probs, 0.25 * softmax(logits[2]) + 0.75 * softmax(logits[0]), atol=1e-6)
    (tmp_path / "ensemble.json").write_text(json.dumps({**spec, "combine": "mean_logit"}))
    probs = oof_probabilities(tmp_path / "ensemble.json", tmp_path / "oof_logits.npy")
    assert np.allclose(probs, softmax(0.25 * logits[2] + 0.75 * logits[0]), atol=1e-6)


def test_environment_lists_the_versions_the_cpu_and_the_training_device(tmp_path: Path) -> None:
    fold = tmp_path / "folds" / "fold0"
    fold.mkdir(parents=True)
    (fold / "config.json").write_text(json.dumps({"device": "cuda (NVIDIA H200)", "lr": 0.1}))
    env = environment(tmp_path)
    assert env["python"] == platform.python_version()
    assert env["torch"] == metadata.version("torch")
    # the onnxruntime build that is installed (onnxruntime or onnxruntime-gpu, distributions of their own), once
    runtimes = {k: v for k, v in env.items() if k.startswith("onnxruntime")}
    assert list(runtimes.values()) == [onnxruntime.__version__], runtimes
    assert env["cpu"] == machine()
    assert env["trained on"] == "cuda (NVIDIA H200)"


def test_environment_without_trained_folds_says_unknown(tmp_path: Path) -> None:
    assert environment(tmp_path)["trained on"] == "?"


# -- figures.py ----------------------------------------------------------------------------------

def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    curves = {k: pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.75],
                               "train_accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.45, 0.65, 0.7]})
              for k in (0, 1)}
    path = tmp_path / "reports" / "curves.png"  # the folder is created
    plot_curves(curves, {0: 3, 1: 2}, path, DPI)
    assert read_png(path).shape[2] == 3
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # written atomically: no temporary left


def test_plot_confusion_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "confusion.png"
    plot_confusion(np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]]), ["a", "b", "c"], path, DPI)
    pixels = read_png(path)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 100


def test_plot_grid_stretches_each_grayscale_image_to_its_own_range(tmp_path: Path) -> None:
    low_contrast = np.random.default_rng(0).integers(100, 111, (3, 16, 16, 1), dtype=np.uint8)
    path = tmp_path / "grid.png"
    plot_grid(low_contrast, ["", "", ""], path, DPI)  # no titles: every dark pixel is an image's
    pixels = read_png(path).astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()  # gray
    assert pixels.min() < 30  # 100-110 drawn as 0-255, not as mid-gray


def test_plot_grid_keeps_the_colours_of_rgb_images(tmp_path: Path) -> None:
    red = np.zeros((2, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / "grid.png"
    plot_grid(red, ["x", "y"], path, DPI)
    pixels = read_png(path).astype(int)
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum() > 100


def test_plot_grid_of_no_images_still_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "grid.png"
    plot_grid(np.zeros((0, 28, 28, 1), np.uint8), [], path, DPI)
    assert read_png(path).size > 0


def test_plot_cv_vs_lb_counts_the_points_it_plots(tmp_path: Path) -> None:
    history = {
        "sub1.csv": {"oof_accuracy": 0.90, "oof_score": 0.91, "public_score": 0.92},
        "sub2.csv": {"oof_accuracy": 0.88, "public_score": None, "local_score": 0.87},
        "sub3.csv": {"oof_accuracy": None, "public_score": 0.90},   # no OOF score: left out
        "sub4.csv": {"oof_accuracy": 0.90, "public_score": None},   # no score at all: left out
    }
    path = tmp_path / "cv_vs_lb.png"
    assert plot_cv_vs_lb(history, path, DPI) == 2
    read_png(path)


def test_plot_cv_vs_lb_writes_nothing_without_points(tmp_path: Path) -> None:
    path = tmp_path / "cv_vs_lb.png"
    assert plot_cv_vs_lb({}, path, DPI) == 0
    assert plot_cv_vs_lb({"a.csv": {"oof_accuracy": 0.9, "public_score": None}}, path, DPI) == 0
    assert not path.exists() and list(tmp_path.iterdir()) == []


# -- params.py -----------------------------------------------------------------------------------

@pytest.mark.parametrize("values, needle", [
    ({"grid_images": 0}, "report.grid_images: must be 1-400, got 0"),
    ({"grid_images": 401}, "report.grid_images: must be 1-400, got 401"),
    ({"dpi": 49}, "report.dpi: must be 50-400, got 49"),
    ({"dpi": 401}, "report.dpi: must be 50-400, got 401"),
    ({"dpi": 110.5}, "report.dpi: must be an integer, got 110.5"),
    ({"grid": 4}, "report.grid: unknown key (known: grid_images, dpi, embedding, embedding_rows)"),
])
def test_invalid_report_params_fail_in_one_line_naming_the_key(values: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        build(ReportParams, values, "report")
    assert str(exc.value) == f"params.yaml: {needle}"


def test_report_params_accept_their_bounds() -> None:
    for grid_images, dpi in ((1, 50), (400, 400)):
        params = build(ReportParams, {"grid_images": grid_images, "dpi": dpi}, "report")
        assert (params.grid_images, params.dpi) == (grid_images, dpi)
    assert build(ReportParams, None, "report") == ReportParams()
