"""Inference and the ensemble module (pipeline/modeling/inference.py, ensemble.py): predict_probs, EnsembleModel
against the numpy combine rules, the OOF logits of every fold's own rows, load_ensemble and EnsembleParams."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core import paths
from pipeline.core.config import build
from pipeline.evaluation.ensemble import COMBINE, combine
from pipeline.modeling.classifier import create_classifier, load_fold_model
from pipeline.modeling.ensemble import EnsembleModel, EnsembleParams, load_ensemble, oof_view_logits
from pipeline.modeling.inference import predict_probs
from pipeline.modeling.tta import VIEWS
from serve.errors import UserError

N_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int) -> torch.nn.Module:
    """A tiny foldwise_cnn for 12x12x1 images with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = create_classifier("foldwise_cnn", N_CLASSES, 1, 12, [0.3], [0.4], drop_rate=0.5,
                              model_kwargs={"widths": [4, 8], "depths": [1, 1]})
    model.train()
    model(torch.randint(0, 256, (16, 1, 12, 12), dtype=torch.uint8))
    return model.eval()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 12, 1), dtype=np.uint8)


def _logits(model: torch.nn.Module, images: np.ndarray, view: str = "none") -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model(VIEWS[view](x)).numpy()


def test_predict_probs_gives_a_probability_row_per_image() -> None:
    probs = predict_probs(_model(0), _images(9), torch.device("cpu"), batch_size=4)
    assert probs.shape == (9, N_CLASSES)
    assert probs.dtype == np.float32
    assert (probs >= 0).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_predict_probs_is_the_softmax_of_the_model_in_eval_mode() -> None:
    model, images = _model(0), _images(6)
    model.train()  # predict_probs must switch dropout and batch statistics off itself
    probs = predict_probs(model, images, torch.device("cpu"))
    assert not model.training
    logits = _logits(model, images)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(probs, expected / expected.sum(1, keepdims=True), atol=1e-6)


def test_predict_probs_does_not_depend_on_the_batch_size() -> None:
    model, images = _model(0), _images(11)
    whole = predict_probs(model, images, torch.device("cpu"), batch_size=512)
    for batch_size in (1, 3, 11):
        assert np.allclose(predict_probs(model, images, torch.device("cpu"), batch_size=batch_size), whole,
                           atol=1e-6)


def test_predict_probs_with_channels_last_gives_the_same_probabilities() -> None:
    model, images = _model(0), _images(5)
    plain = predict_probs(model, images, torch.device("cpu"))
    assert np.allclose(predict_probs(model, images, torch.device("cpu"), channels_last=True), plain, atol=1e-5)


@pytest.mark.parametrize("rule", COMBINE.names())
def test_ensemble_model_combines_views_and_folds_as_the_numpy_rule_does(rule: str) -> None:
    members = [_model(0), _model(1)]
    views, view_weights, fold_weights = ["none", "hflip", "left1"], [0.5, 0.3, 0.2], [0.4, 0.6]
    images = _images(7)
    with torch.no_grad():
        probs, fold_probs = EnsembleModel(members, views, view_weights, fold_weights, rule).eval()(
            torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    logits = np.stack([np.stack([_logits(m, images, v) for v in views]) for m in members])  # [K, V, N, C]
    every = logits.reshape(-1, len(images), N_CLASSES)  # fold-major: member (k, v) has weight f_k * w_v
    weights = np.outer(fold_weights, view_weights).ravel()
    assert probs.shape == (7, N_CLASSES) and fold_probs.shape == (7, 2, N_CLASSES)
    assert np.allclose(probs.numpy(), combine(every, rule, weights), atol=1e-5)
    for k in range(2):
        assert np.allclose(fold_probs[:, k].numpy(), combine(logits[k], rule, np.array(view_weights)), atol=1e-5)
    assert np.allclose(probs.sum(-1).numpy(), 1.0, atol=1e-5)
    assert np.allclose(fold_probs.sum(-1).numpy(), 1.0, atol=1e-5)


def test_ensemble_model_refuses_an_unknown_combine_rule() -> None:
    with pytest.raises(ValueError, match="unknown combine rule median"):
        EnsembleModel([_model(0)], ["none"], [1.0], [1.0], "median")


def _write_fold(folder: Path, model: torch.nn.Module, rows: np.ndarray, seed: int) -> None:
    """model.pt and oof_rows.npy as pipeline/training/fold.py write_fold writes them."""
    folder.mkdir(parents=True)
    files = paths.FoldFiles(folder)
    torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "model": {"name": "foldwise_cnn", "num_classes": N_CLASSES, "in_chans": 1, "native_size": 12,
                          "mean": [0.3], "std": [0.4], "img_size": None, "drop_rate": 0.5,
                          "model_kwargs": {"widths": [4, 8], "depths": [1, 1]}},
                "fold": int(folder.name.removeprefix("fold")), "seed": seed, "epoch": 1, "ema": False}, files.model)
    np.save(files.oof_rows, rows.astype(np.int64))


def test_oof_view_logits_take_each_row_from_its_own_folds_model_and_leave_untrained_folds_nan(
        tmp_path: Path) -> None:
    images = _images(12)
    fold_of_row = np.array([0, 1, 2] * 4)  # three folds; fold 2 was not trained
    members = {0: _model(0), 1: _model(1)}
    for k, model in members.items():
        _write_fold(paths.fold_dir(k, tmp_path), model, np.flatnonzero(fold_of_row == k), seed=k)
    dirs = paths.trained_folds(tmp_path, 3)
    assert sorted(dirs) == [0, 1]
    views = ["none", "hflip"]
    out = oof_view_logits(dirs, images, views, N_CLASSES, batch_size=3)
    assert out.shape == (2, 12, N_CLASSES) and out.dtype == np.float32
    for k, model in members.items():
        rows = np.flatnonzero(fold_of_row == k)
        for v, view in enumerate(views):
            assert np.allclose(out[v, rows], _logits(model, images[rows], view), atol=1e-5)
    assert np.isnan(out[:, fold_of_row == 2]).all()
    assert not np.isnan(out[:, fold_of_row != 2]).any()
    assert not np.allclose(out[0, fold_of_row == 0], _logits(members[1], images[fold_of_row == 0]))


def test_load_ensemble_rebuilds_the_chosen_recipe_from_the_fold_models(tmp_path: Path) -> None:
    images = _images(6)
    for k in range(2):
        _write_fold(paths.fold_dir(k, tmp_path), _model(k), np.array([k]), seed=k)
    spec = {"fold_dirs": [str(paths.fold_dir(k, tmp_path)) for k in range(2)], "views": ["none", "vflip"],
            "view_weights": [0.7, 0.3], "fold_weights": [0.5, 0.5], "combine": "mean_prob"}
    (tmp_path / "ensemble.json").write_text(json.dumps(spec))
    model, loaded = load_ensemble(tmp_path / "ensemble.json")
    assert loaded == spec
    assert not model.training
    reference = EnsembleModel([load_fold_model(paths.FoldFiles(Path(d)).model)[0] for d in spec["fold_dirs"]],
                              spec["views"], spec["view_weights"], spec["fold_weights"], spec["combine"]).eval()
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        for got, want in zip(model(x), reference(x)):
            assert torch.allclose(got, want, atol=1e-5)


def test_ensemble_params_defaults_and_a_valid_section() -> None:
    assert build(EnsembleParams, {}, "ensemble") == EnsembleParams()
    params = build(EnsembleParams, {"tta": ["hflip", "up1"], "methods": ["mean_logit"], "batch_size": 8}, "ensemble")
    assert (params.tta, params.methods, params.batch_size) == (["hflip", "up1"], ["mean_logit"], 8)


@pytest.mark.parametrize(("section", "starts"), [
    ({"tta": ["hflip", "spin"]}, "params.yaml: ensemble.tta[1]: unknown view 'spin' (views: hflip, "),
    ({"tta": ["none"]}, "params.yaml: ensemble.tta[0]: unknown view 'none' (views: hflip, "),
    ({"tta": ["hflip", "vflip", "hflip"]}, "params.yaml: ensemble.tta: views listed twice: "),
    ({"methods": ["mean_prob", "median"]}, "params.yaml: ensemble.methods[1]: unknown method 'median' (mean_prob, "),
    ({"methods": []}, "params.yaml: ensemble.methods: must list at least one method"),
    ({"batch_size": 0}, "params.yaml: ensemble.batch_size: must be at least 1, got 0"),
])
def test_ensemble_params_errors_are_one_line_naming_the_key(section: dict, starts: str) -> None:
    with pytest.raises(UserError) as exc:
        build(EnsembleParams, section, "ensemble")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(starts), message


def test_ensemble_params_list_every_view_but_none_in_the_error() -> None:
    with pytest.raises(UserError) as exc:
        build(EnsembleParams, {"tta": ["spin"]}, "ensemble")
    listed = str(exc.value).split("(views: ")[1].rstrip(")").split(", ")
    assert listed == [v for v in VIEWS.names() if v != "none"]


def test_a_single_view_is_applied_too() -> None:
    """With one view, that view (not the raw image) goes through the members."""
    torch.manual_seed(0)
    member = create_classifier("foldwise_cnn", 3, 1, 8, [0.5], [0.25], model_kwargs={"widths": [4, 4, 4]}).eval()
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    flipped = EnsembleModel([member], ["hflip"], [1.0], [1.0], "mean_prob").eval()
    plain = EnsembleModel([member], ["none"], [1.0], [1.0], "mean_prob").eval()
    with torch.inference_mode():
        assert torch.allclose(flipped(x)[0], plain(torch.flip(x, dims=[3]))[0])
