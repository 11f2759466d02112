"""pipeline/export/: which graph runs where (choice.py), the graph's metadata and export (graph.py),
the parity gate (parity.py), out-of-fold scoring of a graph (oof.py, variants.py) and the `export` /
`predict` params (params.py).

Two exports happen in this file: the shared `tiny_onnx` fixture (a graph is enough for scoring and
stamping) and one module-scoped export of a tiny 8x8 ensemble, because the parity gate needs the
PyTorch model next to its graph and the metadata test needs `graph_metadata` stamped by `export_onnx`.
torch.onnx's first (dynamo) export in a process costs ~7 s, a later one ~3 s: this file takes ~10 s.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from pipeline.core.config import build
from pipeline.core.paths import GRAPH_FILES
from pipeline.evaluation.metrics import METRICS
from pipeline.export.choice import TOLERANCE, choose_graph, choose_predict_graph, loss_vs_fp32
from pipeline.export.graph import export_onnx, graph_metadata, stamp
from pipeline.export.oof import fold_outputs, own_fold_probs
from pipeline.export.params import ExportParams, PredictParams
from pipeline.export.parity import ParityError, parity_check
from pipeline.export.variants import oof_scores, score_variant
from serve.engine import PROVIDERS, Engine, run_graph
from serve.errors import UserError

META = {"classes": ["0", "1", "2"], "class_names": ["cat", "dog", "eel"], "image_shape": [8, 8, 1],
        "mean": [0.29], "std": [0.35], "id_column": "image_id", "target_column": "animal",
        "metric": {"name": "log_loss", "higher_is_better": False}, "id_form": "stem"}
SPEC = {"folds": [0, 1], "views": ["none", "hflip"], "method": "mean_prob+tta", "combine": "mean_prob",
        "view_weights": [0.5, 0.5], "fold_weights": [0.5, 0.5]}
NOT_JSON = {"input_layout", "id_column", "target_column", "id_form", "ensemble_method", "combine", "params_hash"}


def metadata_of(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(model, graph path): a 2-fold x 2-view untrained ensemble on 8x8x1 images, 3 classes."""
    import torch

    from pipeline.modeling.classifier import create_classifier
    from pipeline.modeling.ensemble import EnsembleModel

    torch.manual_seed(0)
    members = [create_classifier("foldwise_cnn", 3, 1, 8, [0.29], [0.35], model_kwargs={"widths": [4, 4, 4]}).eval()
               for _ in range(2)]
    model = EnsembleModel(members, SPEC["views"], SPEC["view_weights"], SPEC["fold_weights"], "mean_prob").eval()
    path = tmp_path_factory.mktemp("export") / "ensemble.onnx"
    export_onnx(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), path, graph_metadata(META, SPEC, "abc123"))
    return model, path


def images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def export_report(fp32: float | None, metric: str = "accuracy", **variants: dict) -> dict:
    report: dict = {"fp32": {"metric": metric, **({"oof_score": fp32} if fp32 is not None else {})}}
    report.update(variants)
    return report


# -- choice.py: loss_vs_fp32 ---------------------------------------------------------------------

def test_loss_vs_fp32_is_positive_when_a_higher_is_better_score_dropped() -> None:
    report = export_report(0.90, "accuracy", int8={"checked": True, "oof_score": 0.88},
                           fp16={"checked": True, "oof_score": 0.91})
    assert loss_vs_fp32(report, "int8") == pytest.approx(0.02)
    assert loss_vs_fp32(report, "fp16") == pytest.approx(-0.01)
    assert loss_vs_fp32(report, "fp32") == 0.0


def test_loss_vs_fp32_is_positive_when_a_lower_is_better_score_rose() -> None:
    assert not METRICS["log_loss"].higher_is_better
    report = export_report(0.30, "log_loss", int8={"checked": True, "oof_score": 0.32},
                           fp16={"checked": True, "oof_score": 0.29})
    assert loss_vs_fp32(report, "int8") == pytest.approx(0.02)
    assert loss_vs_fp32(report, "fp16") == pytest.approx(-0.01)


@pytest.mark.parametrize("report, variant", [
    (export_report(0.9, int8={"checked": False, "why_not": "no kernel"}), "int8"),
    (export_report(0.9, int8={"checked": True}), "int8"),                   # checked but no score
    (export_report(0.9), "fp16"),                                            # never exported
    (export_report(None, int8={"checked": True, "oof_score": 0.9}), "int8"),  # fp32 itself unscored
    (export_report(None), "fp32"),
])
def test_loss_vs_fp32_is_none_for_an_unscored_variant(report: dict, variant: str) -> None:
    assert loss_vs_fp32(report, variant) is None


# -- choice.py: choose_predict_graph -------------------------------------------------------------

def speed_report(scores: dict[str, float | None], rates: dict[str, float], metric: str = "accuracy") -> dict:
    report = export_report(scores["fp32"], metric, **{g: {"checked": s is not None, **({"oof_score": s} if s else {})}
                                                      for g, s in scores.items() if g != "fp32"})
    report["speed"] = {"provider": "CPUExecutionProvider", "images_per_second": rates,
                       "vs_fp32": {g: r / rates["fp32"] for g, r in rates.items()}}
    return report


def test_predict_graph_is_the_fastest_within_tolerance_and_names_what_was_too_inaccurate() -> None:
    report = speed_report({"fp32": 0.90, "int8": 0.85, "fp16": 0.8995},
                          {"fp32": 100.0, "int8": 300.0, "fp16": 150.0})
    choice = choose_predict_graph(report, tolerance=0.001)
    assert (choice["graph"], choice["file"]) == ("fp16", GRAPH_FILES["fp16"])
    assert choice["provider"] == "CPUExecutionProvider" and choice["tolerance"] == 0.001
    assert "150 images/s (1.50x fp32)" in choice["reason"]
    assert "too inaccurate: int8 (OOF -5.00 pts)" in choice["reason"]
    assert "fp16 (" not in choice["reason"]
    assert choose_predict_graph(report, tolerance=0.06)["graph"] == "int8"  # a looser tolerance: the fastest


def test_predict_graph_accepts_a_loss_equal_to_the_tolerance() -> None:
    report = speed_report({"fp32": 0.900, "int8": 0.899}, {"fp32": 100.0, "int8": 200.0})
    assert choose_predict_graph(report, tolerance=0.001)["graph"] == "int8"


def test_predict_graph_falls_back_to_fp32_which_always_qualifies() -> None:
    report = speed_report({"fp32": 0.90, "int8": 0.80, "fp16": None}, {"fp32": 100.0, "int8": 400.0, "fp16": 300.0})
    choice = choose_predict_graph(report, tolerance=0.001)
    assert choice["graph"] == "fp32" and choice["file"] == "ensemble.onnx"
    assert "too inaccurate: int8 (OOF -10.00 pts)" in choice["reason"]
    assert "fp16" not in choice["reason"]  # unscored: left out, but not "too inaccurate"
    unscored = speed_report({"fp32": None, "int8": None}, {"fp32": 50.0, "int8": 500.0})
    assert choose_predict_graph(unscored, tolerance=0.5)["graph"] == "fp32"


def test_predict_graph_follows_the_metric_direction() -> None:
    report = speed_report({"fp32": 0.300, "int8": 0.350, "fp16": 0.2995}, {"fp32": 100.0, "int8": 300.0, "fp16": 200.0},
                          metric="log_loss")
    choice = choose_predict_graph(report, tolerance=0.001)
    assert choice["graph"] == "fp16"
    assert "int8 (OOF -5.00 pts)" in choice["reason"]


# -- choice.py: choose_graph ---------------------------------------------------------------------

def test_choose_graph_takes_int8_on_a_cpu_and_fp16_on_a_gpu_when_within_tolerance() -> None:
    report = export_report(0.90, int8={"checked": True, "oof_score": 0.9005}, fp16={"checked": True, "oof_score": 0.90})
    graph, why = choose_graph(report, gpu=False)
    assert graph == "int8" and "CPU" in why and "+0.05" in why
    graph, why = choose_graph(report, gpu=True)
    assert graph == "fp16" and "GPU" in why


def test_choose_graph_uses_fp32_when_the_fast_graph_lost_more_than_the_tolerance() -> None:
    report = export_report(0.90, int8={"checked": True, "oof_score": 0.90 - 2 * TOLERANCE},
                           fp16={"checked": True, "oof_score": 0.895})
    graph, why = choose_graph(report, gpu=False)
    assert graph == "fp32" and why == "int8 lost 0.20 points of OOF score against fp32 (tolerance 0.1)"
    graph, why = choose_graph(report, gpu=True)
    assert graph == "fp32" and why.startswith("fp16 lost 0.50 points")


def test_choose_graph_uses_fp32_when_the_fast_graph_is_unscored_and_says_why() -> None:
    report = export_report(0.90, fp16={"checked": False, "why_not": "onnxruntime CPU could not run it: no kernel"})
    graph, why = choose_graph(report, gpu=True)
    assert graph == "fp32" and "fp16" in why and "no OOF score (onnxruntime CPU could not run it: no kernel)" in why
    graph, why = choose_graph(report, gpu=False)  # int8 absent altogether
    assert graph == "fp32" and "not scored by export" in why


def test_choose_graph_honours_an_explicit_request_even_an_inaccurate_one(caplog: pytest.LogCaptureFixture) -> None:
    report = export_report(0.90, int8={"checked": True, "oof_score": 0.80})
    with caplog.at_level(logging.WARNING, logger="pipeline.export.choice"):
        assert choose_graph(report, gpu=True, request="int8") == ("int8", "submit.graph: int8")
    assert "below FP32" in caplog.text
    assert choose_graph(report, gpu=False, request="fp32") == ("fp32", "submit.graph: fp32")


def test_choose_graph_refuses_an_unknown_request() -> None:
    with pytest.raises(UserError) as exc:
        choose_graph(export_report(0.9), gpu=False, request="bf16")
    assert str(exc.value) == ("submit.graph: unknown graph 'bf16' (auto, fp32, int8, fp16, student, student_int8, "
                              "student_fp16)")


# -- graph.py ------------------------------------------------------------------------------------

def test_graph_metadata_holds_every_key_serving_needs_as_json() -> None:
    metadata = graph_metadata(META, SPEC, "abc123")
    assert set(metadata) >= {"classes", "class_names", "image_shape", "input_layout", "normalization", "id_column",
                             "target_column", "submission", "metric", "positive", "image", "id_form", "folds",
                             "views", "ensemble_method", "combine", "view_weights", "fold_weights", "params_hash"}
    assert all(isinstance(v, str) for v in metadata.values())
    decoded = {k: json.loads(v) for k, v in metadata.items() if k not in NOT_JSON}
    assert decoded["classes"] == ["0", "1", "2"] and decoded["class_names"] == ["cat", "dog", "eel"]
    assert decoded["image_shape"] == [8, 8, 1] and decoded["image"] == {"height": 8, "width": 8, "channels": 1}
    assert decoded["normalization"] == {"scale": 1 / 255, "mean": [0.29], "std": [0.35]}
    assert decoded["metric"] == {"name": "log_loss", "higher_is_better": False} and decoded["positive"] is None
    assert decoded["submission"]["kind"] == "label" and decoded["submission"]["id_column"] == "image_id"
    assert decoded["submission"]["columns"] == ["animal"]
    assert decoded["folds"] == [0, 1] and decoded["views"] == ["none", "hflip"]
    assert decoded["view_weights"] == [0.5, 0.5] and decoded["fold_weights"] == [0.5, 0.5]
    assert (metadata["id_column"], metadata["target_column"], metadata["id_form"]) == ("image_id", "animal", "stem")
    assert (metadata["ensemble_method"], metadata["combine"], metadata["params_hash"]) == (
        "mean_prob+tta", "mean_prob", "abc123")


def test_graph_metadata_keeps_a_prepared_submission_spec() -> None:
    submission = {"kind": "binary_prob", "id_column": "id", "columns": ["has_cactus"], "classes": ["0", "1"],
                  "positive_class": "1"}
    meta = {**META, "classes": ["0", "1"], "class_names": ["no", "yes"], "submission": submission, "positive": 1}
    metadata = graph_metadata(meta, SPEC, "h")
    assert json.loads(metadata["submission"]) == submission and json.loads(metadata["positive"]) == 1


def test_export_onnx_writes_a_graph_holding_the_stamped_metadata(exported: tuple[Any, Path]) -> None:
    model, path = exported
    proto = onnx.load(str(path))
    assert proto.producer_name == "foldwise"
    assert metadata_of(path) == graph_metadata(META, SPEC, "abc123")
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["probs", "fold_probs"]
    engine = Engine(path, provider="cpu")  # serving reads everything it needs from the graph alone
    assert engine.info.classes == ["0", "1", "2"] and engine.info.class_names == ["cat", "dog", "eel"]
    assert engine.info.image_shape == (8, 8, 1) and engine.info.folds == [0, 1]
    assert (engine.info.id_column, engine.info.target_column, engine.info.metric) == ("image_id", "animal", "log_loss")
    probs, fold_probs = run_graph(path, images(5))  # a batch size other than the example's: dynamic N
    assert probs.shape == (5, 3) and fold_probs.shape == (5, 2, 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_stamp_replaces_the_metadata(tmp_path: Path, tiny_onnx: Path) -> None:
    path = shutil.copy(tiny_onnx, tmp_path / "copy.onnx")
    assert "classes" in metadata_of(path)
    stamp(path, {"precision": "int8", "params_hash": "x"})
    assert metadata_of(path) == {"precision": "int8", "params_hash": "x"}
    probs, _ = run_graph(path, images(2, 28))  # still a valid, runnable graph
    assert probs.shape == (2, 10)


# -- parity.py -----------------------------------------------------------------------------------

def test_parity_check_passes_on_the_graph_of_the_same_model(exported: tuple[Any, Path]) -> None:
    model, path = exported
    result = parity_check(path, model, images(6), ExportParams())
    assert result["passed"] and result["argmax_identical"] and result["rows"] == 6
    assert result["max_abs_diff"] <= result["max_abs_diff_limit"] == ExportParams().max_abs_diff


def test_parity_check_refuses_a_graph_of_another_model_naming_the_file(exported: tuple[Any, Path]) -> None:
    import torch

    model, path = exported
    other = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pytest.raises(ParityError) as exc:
        parity_check(path, other, images(6), ExportParams())
    assert isinstance(exc.value, UserError)
    message = str(exc.value)
    assert message.startswith("ensemble.onnx: onnxruntime differs from PyTorch") and "export refused" in message
    assert "on 6 OOF images" in message and "\n" not in message


# -- variants.py ---------------------------------------------------------------------------------

def test_oof_scores_score_the_out_of_fold_probabilities() -> None:
    labels = np.array([0, 1, 2, 0])
    own = np.eye(3)[[0, 1, 2, 1]]                          # right on three rows of four
    assert oof_scores(own, labels, METRICS["accuracy"]) == {"metric": "accuracy", "oof_score": 0.75,
                                                            "oof_accuracy": 0.75}


def test_fold_outputs_are_the_columns_concatenated_into_fold_probs(tiny_onnx: Path) -> None:
    outputs = fold_outputs(tiny_onnx, 2)
    assert outputs is not None and len(outputs) == 2 and "fold_probs" not in outputs
    assert fold_outputs(tiny_onnx, 1) == ["fold_probs"]   # one fold: the graph is that fold's part
    assert fold_outputs(tiny_onnx, 3) is None             # not three columns: scored whole


def test_own_fold_probs_equal_the_whole_graphs_own_column(tiny_onnx: Path, tmp_path: Path) -> None:
    """Fold k's part of the graph alone on fold k's rows gives what the whole graph gives in column k."""
    x = images(20, 28, seed=5)
    fold_order = [3, 7]                       # column 0 holds fold 3, column 1 fold 7
    row_folds = np.array([7, 3, 7, 7, 3] * 4)
    _, fold_probs = run_graph(tiny_onnx, x)
    want = fold_probs[np.arange(20), [fold_order.index(f) for f in row_folds]]
    got = own_fold_probs(tiny_onnx, x, row_folds, fold_order, tmp_path)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    flipped = own_fold_probs(tiny_onnx, x, row_folds, [7, 3], tmp_path)  # the other fold's column
    assert np.abs(flipped - want).max() > 1e-3
    assert list(tmp_path.iterdir()) == []     # the fold subgraphs are removed


def test_score_variant_of_the_fp32_graph_itself_changes_nothing(tiny_onnx: Path, tmp_path: Path) -> None:
    x = images(12, 28, seed=3)
    y = np.arange(12) % 10
    row_folds = np.array([0, 1] * 6)
    metric = METRICS["accuracy"]
    own = own_fold_probs(tiny_onnx, x, row_folds, [0, 1], tmp_path)
    fp32 = oof_scores(own, y, metric)
    entry = score_variant(tiny_onnx, x, y, row_folds, [0, 1], fp32, own, metric, None, tmp_path)
    assert entry["checked"] is True and entry["rows"] == 12 and entry["bytes"] == tiny_onnx.stat().st_size
    assert entry["metric"] == "accuracy" and entry["oof_score"] == fp32["oof_score"]
    assert entry["oof_score_delta"] == 0.0 and entry["oof_accuracy_delta"] == 0.0
    assert entry["max_abs_diff_vs_fp32"] == 0.0 and entry["argmax_agreement_vs_fp32"] == 1.0


def test_score_variant_of_a_graph_onnxruntime_cannot_run_says_why_not(tmp_path: Path) -> None:
    broken = tmp_path / "ensemble_fp16.onnx"
    broken.write_bytes(b"this is not a protobuf")
    fp32 = {"oof_score": 0.9, "oof_accuracy": 0.9}
    entry = score_variant(broken, images(2, 28), np.zeros(2, int), np.zeros(2, int), [0, 1], fp32,
                          np.zeros((2, 10)), METRICS["accuracy"], None, tmp_path)
    assert entry["checked"] is False and entry["bytes"] == len(b"this is not a protobuf")
    assert entry["why_not"].startswith("onnxruntime CPU could not run it: ")
    assert "\n" not in entry["why_not"] and "oof_score" not in entry
    assert loss_vs_fp32({"fp32": fp32, "fp16": entry}, "fp16") is None  # so no choice ever picks it


# -- params.py -----------------------------------------------------------------------------------

@pytest.mark.parametrize("values, needle", [
    ({"predict_tolerance": 1.0}, "export.predict_tolerance: must be in [0, 1), got 1.0"),
    ({"predict_tolerance": -0.1}, "export.predict_tolerance: must be in [0, 1), got -0.1"),
    ({"parity_rows": 0}, "export.parity_rows: must be at least 1, got 0"),
    ({"eval_rows": 0}, "export.eval_rows: must be at least 1, got 0"),
    ({"calibration_rows": -5}, "export.calibration_rows: must be at least 1, got -5"),
    ({"speed_batch": 0}, "export.speed_batch: must be at least 1, got 0"),
    ({"max_abs_diff": 0.0}, "export.max_abs_diff: must be > 0, got 0.0"),
    ({"opset": 16}, "export.opset: must be at least 17, got 16"),
    ({"opset": "18"}, "export.opset: must be an integer, got '18'"),
])
def test_invalid_export_params_fail_in_one_line_naming_the_key(values: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        build(ExportParams, values, "export")
    assert str(exc.value) == f"params.yaml: {needle}"


@pytest.mark.parametrize("values, needle", [
    ({"provider": "tpu"}, "predict.provider: must be one of auto, cpu, cuda, got 'tpu'"),
    ({"provider": "CUDA"}, "predict.provider: must be one of auto, cpu, cuda, got 'CUDA'"),
    ({"batch_size": 0}, "predict.batch_size: must be at least 1, got 0"),
    ({"threads": "all"}, "predict.threads: must be an integer, got 'all'"),
])
def test_invalid_predict_params_fail_in_one_line_naming_the_key(values: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        build(PredictParams, values, "predict")
    assert str(exc.value) == f"params.yaml: {needle}"


def test_valid_params_load_with_every_provider() -> None:
    assert PROVIDERS == ("auto", "cpu", "cuda")
    for provider in PROVIDERS:
        assert build(PredictParams, {"provider": provider, "threads": None}, "predict").provider == provider
    params = build(ExportParams, {"predict_tolerance": 0, "opset": 17}, "export")
    assert params.predict_tolerance == 0.0 and params.opset == 17
