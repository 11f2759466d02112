"""Training targets beyond one label (pipeline/training/targets.py), their params and their errors;
the student's graphs in predict's choice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core import paths
from pipeline.core.config import build
from pipeline.export.choice import choose_predict_graph
from pipeline.training.distill import DistillParams, distill_error, student_params
from pipeline.training.params import TrainParams
from pipeline.training.pseudo import load_test_images, record_off
from pipeline.training.targets import StackedImages, TargetLoss, TargetPlan, plan_fingerprint, pseudo_rows, soften
from serve.engine import resolve_model
from serve.errors import UserError

C = 3


def test_stacked_images_read_two_arrays_as_one_without_copying_either() -> None:
    a, b = np.arange(12, dtype=np.uint8).reshape(3, 2, 2, 1), 100 + np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    s = StackedImages(a, b)
    assert len(s) == 5 and s.shape == (5, 2, 2, 1)
    assert np.array_equal(s[np.array([4, 0, 3])], np.stack([b[1], a[0], b[0]]))
    with pytest.raises(ValueError, match="image shapes differ"):
        StackedImages(a, np.zeros((1, 3, 3, 1), np.uint8))


def test_soften_is_the_identity_at_temperature_one_and_flattens_above() -> None:
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    assert np.allclose(soften(p, 1.0), p)
    hot = soften(p, 4.0)
    assert np.allclose(hot.sum(1), 1) and hot.max() < p.max() and hot.argmax() == 0
    expected = np.exp(np.log(p) / 4.0)
    assert np.allclose(hot, expected / expected.sum(), atol=1e-6)


def test_pseudo_rows_keep_the_confident_images() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.1, 0.8, 0.1]])
    assert pseudo_rows(probs, 0.8).tolist() == [0, 2]
    assert pseudo_rows(probs, 0.0).tolist() == [0, 1, 2]


def test_a_plan_of_labels_alone_gives_cross_entropy_with_label_smoothing() -> None:
    labels = np.array([0, 2, 1, 1])
    plan = TargetPlan.build(np.zeros((4, 2, 2, 1), np.uint8), labels, np.array([0, 1, 3]), C, label_smoothing=0.1)
    assert plan.rows.tolist() == [0, 1, 3] and plan.table.shape == (4, 2 * C + 2)
    logits = torch.randn(3, C)
    loss = TargetLoss(C)(logits, torch.from_numpy(plan.table[plan.rows]))
    expected = F.cross_entropy(logits, torch.tensor(labels[[0, 1, 3]]), label_smoothing=0.1)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_distillation_rows_mix_hintons_soft_term_and_the_labels() -> None:
    labels = np.array([0, 1])
    teacher = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]], np.float32)
    plan = TargetPlan.build(np.zeros((2, 2, 2, 1), np.uint8), labels, np.arange(2), C, teacher=teacher, alpha=0.7,
                            temperature=2.0)
    logits = torch.randn(2, C)
    got = TargetLoss(C, 2.0)(logits, torch.from_numpy(plan.table))
    soft = torch.from_numpy(soften(teacher, 2.0))
    soft_ce = -(soft * F.log_softmax(logits / 2.0, 1)).sum(1) * 4.0
    hard_ce = F.cross_entropy(logits, torch.tensor(labels), reduction="none")
    assert torch.allclose(got, (0.7 * soft_ce + 0.3 * hard_ce).mean(), atol=1e-5)


def test_pseudo_labelled_rows_follow_the_train_rows_with_their_weight() -> None:
    images, extra = np.zeros((3, 2, 2, 1), np.uint8), np.ones((2, 2, 2, 1), np.uint8)
    probs = np.array([[0.1, 0.8, 0.1], [0.5, 0.2, 0.3]], np.float32)
    hard = TargetPlan.build(images, np.array([0, 1, 2]), np.array([0, 2]), C, extra_images=extra, extra_soft=probs,
                            extra_hard=True, extra_weight=0.5)
    assert hard.rows.tolist() == [0, 2, 3, 4] and len(hard.images) == 5
    assert hard.table[3, :C].tolist() == [0, 1, 0] and hard.table[4, :C].tolist() == [1, 0, 0]
    assert hard.table[3:, 2 * C].tolist() == [0, 0] and hard.table[3:, 2 * C + 1].tolist() == [0.5, 0.5]
    soft = TargetPlan.build(images, np.array([0, 1, 2]), np.array([0, 2]), C, extra_images=extra, extra_soft=probs)
    assert np.allclose(soft.table[3:, C:2 * C], probs) and soft.table[3:, 2 * C].tolist() == [1, 1]
    labels = TargetLoss(C).labels(torch.from_numpy(soft.table[soft.rows]))
    assert labels.tolist() == [0, 2, 1, 0]  # train rows: their label; pseudo rows: the teacher's class
    assert plan_fingerprint(hard) != plan_fingerprint(soft) and plan_fingerprint(None) is None


def test_a_row_of_weight_zero_does_not_count() -> None:
    table = np.zeros((2, 2 * C + 2), np.float32)
    table[:, 0], table[0, 2 * C + 1] = 1.0, 1.0
    logits = torch.tensor([[2.0, 0.0, 0.0], [-5.0, 3.0, 0.0]])
    assert torch.allclose(TargetLoss(C)(logits, torch.from_numpy(table)),
                          F.cross_entropy(logits[:1], torch.tensor([0])), atol=1e-6)


@pytest.mark.parametrize(("values", "message"), [
    ({"threshold": 1.5}, r"^params\.yaml: train\.pseudo_labels\.threshold: must be in \[0, 1\], got 1\.5$"),
    ({"threshold": -0.1}, r"^params\.yaml: train\.pseudo_labels\.threshold: must be in \[0, 1\], got -0\.1$"),
    ({"weight": 0}, r"^params\.yaml: train\.pseudo_labels\.weight: must be > 0, got 0"),
    ({"rounds": -1}, r"^params\.yaml: train\.pseudo_labels\.rounds: must be 0 \(off\) or more, got -1$"),
    ({"targets": "fuzzy"}, r"^params\.yaml: train\.pseudo_labels\.targets: must be one of soft, hard, got 'fuzzy'$"),
])
def test_bad_pseudo_label_params_fail_in_one_line_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build(TrainParams, {"pseudo_labels": values}, "train", "params.yaml")


def test_pseudo_labels_refuse_mixup() -> None:
    with pytest.raises(UserError, match=r"^params\.yaml: train\.pseudo_labels\.rounds: pseudo-labels are soft"):
        build(TrainParams, {"pseudo_labels": {"rounds": 1}, "mixup_alpha": 0.2}, "train", "params.yaml")


@pytest.mark.parametrize(("values", "message"), [
    ({"temperature": 0}, r"^params\.yaml: distill\.temperature: must be > 0, got 0"),
    ({"temperature": -1.5}, r"^params\.yaml: distill\.temperature: must be > 0, got -1\.5$"),
    ({"alpha": 1.2}, r"^params\.yaml: distill\.alpha: must be in \[0, 1\], got 1\.2$"),
    ({"test_weight": 0}, r"^params\.yaml: distill\.test_weight: must be > 0, got 0"),
    ({"epochs": 0}, r"^params\.yaml: distill\.epochs: must be at least 1 \(or null\), got 0$"),
])
def test_bad_distill_params_fail_in_one_line_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build(DistillParams, values, "distill", "params.yaml")


def test_a_student_the_config_rejects_fails_naming_distill_model() -> None:
    d = build(DistillParams, {"enabled": True, "model": "resnet_does_not_exist"}, "distill")
    with pytest.raises(UserError,
                       match=r"^params\.yaml: distill\.model: unknown timm model 'resnet_does_not_exist'"):
        student_params(TrainParams(), d, distill_error)
    with pytest.raises(UserError, match=r"^params\.yaml: distill\.enabled: the student learns soft targets"):
        student_params(TrainParams(mixup_alpha=0.2), build(DistillParams, {}, "distill"), distill_error)
    p = student_params(TrainParams(epochs=6), build(DistillParams, {"model": "foldwise_cnn", "epochs": 3},
                                                    "distill"), distill_error)
    assert (p.model, p.epochs, p.lr, p.pseudo_labels.rounds) == ("foldwise_cnn", 3, TrainParams().lr, 0)


def test_pseudo_labels_without_test_images_fail_naming_the_file(tmp_path: Path) -> None:
    prepared = paths.Prepared(tmp_path)
    with pytest.raises(UserError, match=r"^params\.yaml: train\.pseudo_labels\.rounds: .*test_images\.npy not found: "
                                        r"this competition has no test images to label$"):
        load_test_images(tmp_path, "params.yaml: train.pseudo_labels.rounds")
    np.save(prepared.test_images, np.zeros((0, 4, 4, 1), np.uint8))
    with pytest.raises(UserError, match=r"test_images\.npy holds no images: this competition has no test images"):
        load_test_images(tmp_path, "params.yaml: distill.test_images")


def test_rounds_zero_records_that_the_fold_keeps_round_zero(tmp_path: Path) -> None:
    (tmp_path / "pseudo" / "fold1").mkdir(parents=True)
    (tmp_path / "pseudo" / "fold1" / "model.pt").write_bytes(b"stale")
    summary = record_off(1, tmp_path / "folds", tmp_path / "pseudo")
    assert summary["rounds"] == 0
    assert sorted(p.name for p in (tmp_path / "pseudo" / "fold1").iterdir()) == ["rounds.json"]


def test_predict_takes_the_student_when_it_is_fastest_within_tolerance_of_the_best() -> None:
    report = {"fp32": {"metric": "accuracy", "oof_score": 0.940},
              "int8": {"checked": True, "oof_score": 0.9395},
              "student": {"checked": True, "oof_score": 0.9392, "file": "student/student.onnx"},
              "student_int8": {"checked": True, "oof_score": 0.9380, "file": "student/student_int8.onnx"},
              "speed": {"provider": "CPUExecutionProvider",
                        "images_per_second": {"fp32": 100.0, "int8": 200.0, "student": 900.0, "student_int8": 1800.0},
                        "vs_fp32": {"fp32": 1.0, "int8": 2.0, "student": 9.0, "student_int8": 18.0}}}
    choice = choose_predict_graph(report, tolerance=0.001)
    assert (choice["graph"], choice["file"]) == ("student", "student/student.onnx")
    assert "within 0.10 pt OOF of fp32" in choice["reason"] and "student_int8 (OOF -0.20 pts)" in choice["reason"]
    report["student"]["oof_score"] = 0.9420  # the student is the best: the bar is its score
    choice = choose_predict_graph(report, tolerance=0.001)
    assert choice["graph"] == "student" and "of student" in choice["reason"]
    assert "fp32 (OOF -0.20 pts)" in choice["reason"]


def test_export_json_may_name_a_graph_below_its_folder_but_not_outside(tmp_path: Path) -> None:
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "student.onnx").write_bytes(b"x")
    report = {"predict_graph": {"graph": "student", "file": "student/student.onnx", "provider": "CPUExecutionProvider"}}
    (tmp_path / "export.json").write_text(json.dumps(report))
    path, why = resolve_model(tmp_path / "export.json", "cpu")
    assert path == tmp_path / "student" / "student.onnx" and why.startswith("student graph")
    for bad in ("../secret.onnx", "/etc/passwd", "student/../../x.onnx"):
        report["predict_graph"]["file"] = bad
        (tmp_path / "export.json").write_text(json.dumps(report))
        with pytest.raises(UserError, match=r"predict_graph\.file .* is outside"):
            resolve_model(tmp_path / "export.json", "cpu")
