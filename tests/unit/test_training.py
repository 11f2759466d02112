"""A fold's training (pipeline/training/): `train` params, device and precision, checkpoints and resume state,
the training loop's step and epoch, a fold's seed, and run_fold's outputs on a tiny prepared data set."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core import paths
from pipeline.core.config import build
from pipeline.modeling.classifier import load_fold_model
from pipeline.modeling.inference import predict_probs
from pipeline.training.checkpoint import FoldRun, load_checkpoint
from pipeline.training.fold import fold_seed, run_fold
from pipeline.training.hardware import (
    autocast_dtype,
    cpu_precision,
    describe,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)
from pipeline.training.loop import TrainingSetup, train_one_epoch, train_step
from pipeline.training.params import TrainParams
from serve.errors import UserError

CPU = torch.device("cpu")
META = {"image_shape": [12, 12, 1], "classes": ["a", "b", "c"], "mean": [0.4], "std": [0.3]}
TINY = {"model": "foldwise_cnn", "model_kwargs": {"widths": [4, 8], "depths": [1, 1]}, "epochs": 2,
        "batch_size": 8, "amp": "off", "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(**overrides: object) -> TrainParams:
    return build(TrainParams, {**TINY, **overrides}, "train")


def _data(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 12, 12, 1), dtype=np.uint8), rng.integers(0, 3, n).astype(np.int64)


def _setup(params: TrainParams, seed: int = 0, n: int = 20) -> tuple[TrainingSetup, np.ndarray, np.ndarray]:
    images, labels = _data(n)
    torch.manual_seed(seed)
    return TrainingSetup.create(params, META, images, labels, np.arange(n), CPU, seed), images, labels


# params.py


def test_train_params_defaults_build_from_an_empty_section() -> None:
    assert build(TrainParams, {}, "train") == TrainParams()


@pytest.mark.parametrize(("section", "message"), [
    ({"epochs": 0}, "train.epochs: must be at least 1, got 0"),
    ({"batch_size": 0}, "train.batch_size: must be at least 1, got 0"),
    ({"lr": -1}, "train.lr: must be > 0, got -1.0"),
    ({"weight_decay": -0.1}, "train.weight_decay: must be >= 0, got -0.1"),
    ({"num_workers": -1}, "train.num_workers: must be >= 0, got -1"),
    ({"drop_rate": 1.0}, "train.drop_rate: must be in [0, 1), got 1.0"),
    ({"label_smoothing": -0.1}, "train.label_smoothing: must be in [0, 1), got -0.1"),
    ({"drop_path_rate": 1.5}, "train.drop_path_rate: must be in [0, 1), got 1.5"),
    ({"mixup_prob": 2}, "train.mixup_prob: must be in [0, 1], got 2.0"),
    ({"ema_decay": 1}, "train.ema_decay: must be in (0, 1), got 1.0"),
    ({"patience": 0}, "train.patience: must be at least 1 (or null), got 0"),
    ({"grad_clip": 0}, "train.grad_clip: must be > 0 (or null), got 0.0"),
    ({"img_size": 4}, "train.img_size: must be at least 8, got 4"),
    ({"folds": [{"fold": 0}]}, "train.folds[0]: must be {fold: int >= 0, seed: int >= 0}, got {'fold': 0}"),
    ({"folds": [{"fold": 0, "seed": True}]}, "train.folds[0]: must be {fold: int >= 0, seed: int >= 0}"),
    ({"folds": [{"fold": 1, "seed": 0}, {"fold": 1, "seed": 2}]}, "train.folds[1]: fold 1 is listed twice"),
    ({"sched": "linear"}, "train.sched: must be one of cosine, poly, tanh, step, none, got 'linear'"),
    ({"lr_max": 1}, "train.lr_max: unknown key (known: folds, model, "),
])
def test_train_params_errors_are_one_line_naming_the_key(section: dict, message: str) -> None:
    with pytest.raises(UserError) as exc:
        build(TrainParams, section, "train")
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(f"params.yaml: {message}"), text


def test_train_params_refuse_unknown_models_optimizers_and_augmentations_naming_the_key() -> None:
    with pytest.raises(UserError, match=r"^params\.yaml: train\.model: unknown timm model 'foldwise_cnnx'"):
        build(TrainParams, {"model": "foldwise_cnnx"}, "train")
    with pytest.raises(UserError, match=r"^params\.yaml: train\.optimizer: unknown timm optimizer 'adamq'"):
        build(TrainParams, {"optimizer": "adamq"}, "train")
    with pytest.raises(UserError, match=r"^params\.yaml: train\.augment: unknown Albumentations transform"):
        build(TrainParams, {"augment": {"transform": {"__class_fullname__": "NoSuchFlip", "p": 1.0}}}, "train")


def test_create_kwargs_adds_drop_path_rate_only_when_set_and_keeps_model_kwargs() -> None:
    params = _params(drop_path_rate=0.2)
    assert params.create_kwargs() == {"widths": [4, 8], "depths": [1, 1], "drop_path_rate": 0.2}
    assert "drop_path_rate" not in params.model_kwargs
    assert _params().create_kwargs() == {"widths": [4, 8], "depths": [1, 1]}


# hardware.py


def test_resolve_device_gives_the_cpu_and_auto_falls_back_to_it_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    assert resolve_device("auto") == CPU


def test_resolve_device_cuda_without_a_gpu_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^params\.yaml: train\.device: cuda requested but torch sees no CUDA GPU$"):
        resolve_device("cuda")


def test_precision_off_is_fp32_on_every_device() -> None:
    for device in (CPU, torch.device("cuda")):
        assert resolve_precision("off", device) == (None, "fp32 (train.amp: off)")


def test_fp16_on_a_cpu_stays_fp32_and_says_fp16_is_for_cuda() -> None:
    dtype, why = resolve_precision("fp16", CPU)
    assert dtype is None
    assert "fp16 applies on CUDA only" in why


def test_explicit_fp16_and_bf16_on_cuda_take_those_dtypes() -> None:
    assert resolve_precision("fp16", torch.device("cuda"))[0] == torch.float16
    assert resolve_precision("bf16", torch.device("cuda"))[0] == torch.bfloat16


def test_bf16_on_a_cpu_is_bf16_and_says_whether_it_is_native() -> None:
    cpu = cpu_precision()
    dtype, why = resolve_precision("bf16", CPU)
    assert dtype == torch.bfloat16
    if cpu["bf16"]:
        assert f"native: {', '.join(cpu['bf16_flags'])}" in why
    else:
        assert "no native bf16" in why and "emulated" in why


def test_auto_on_a_cpu_takes_bf16_exactly_where_it_is_native() -> None:
    cpu = cpu_precision()
    dtype, why = resolve_precision("auto", CPU)
    assert dtype == (torch.bfloat16 if cpu["bf16"] else None)
    assert "train.amp: auto" in why
    if cpu["bf16"]:
        assert why.startswith("bf16 autocast") and all(flag in why for flag in cpu["bf16_flags"])
    else:
        assert why.startswith("fp32") and "no native bf16" in why
    assert autocast_dtype("auto", CPU) == dtype


def test_malloc_keeps_freed_buffers_where_the_c_library_is_glibc() -> None:
    import platform
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")  # mallopt took both settings
    assert keep_freed_memory() is keep_freed_memory()                   # once per process


def test_cpu_precision_flags_agree_with_its_booleans_and_describe_is_one_line() -> None:
    cpu = cpu_precision()
    assert cpu["bf16"] == bool(cpu["bf16_flags"]) and cpu["vnni"] == bool(cpu["vnni_flags"])
    line = describe()
    assert "\n" not in line and line.startswith(cpu["model"])
    assert ("native bf16" if cpu["bf16"] else "no native bf16") in line


# checkpoint.py


def _same_state(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not _same_state(x, y):
                return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _trained_run(params: TrainParams, seed: int) -> tuple[TrainingSetup, torch.Tensor, torch.Tensor]:
    t, images, labels = _setup(params, seed)
    x = torch.from_numpy(np.ascontiguousarray(images[:8].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels[:8])
    for _ in range(2):
        train_step(t.run, t.net, x, y, params, CPU, t.channels_last, t.amp_dtype, t.scaler, t.criterion, t.mixup)
    t.run.epoch, t.run.best, t.run.curves, t.run.seconds, t.run.images_seen = 1, {"epoch": 1}, [{"epoch": 1}], 2.5, 16
    return t, x, y


def test_a_fold_run_restored_from_its_state_continues_exactly_as_the_original(tmp_path: Path) -> None:
    params = _params(ema=True)
    original, x, y = _trained_run(params, seed=0)
    torch.save(original.run.state_dict("sig"), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt", "sig")
    assert state is not None and state["signature"] == "sig"
    after = (torch.rand(3), np.random.rand(3), random.random())

    restored, _, _ = _setup(params, seed=1)  # other initial weights
    assert not _same_state(restored.run.model.state_dict(), original.run.model.state_dict())
    restored.run.load_state_dict(state)
    assert torch.equal(torch.rand(3), after[0]) and np.array_equal(np.random.rand(3), after[1])
    assert random.random() == after[2]  # every RNG continues where the checkpoint was taken
    run, want = restored.run, original.run
    assert _same_state(run.model.state_dict(), want.model.state_dict())
    assert _same_state(run.optimizer.state_dict(), want.optimizer.state_dict())
    assert _same_state(run.scheduler.state_dict(), want.scheduler.state_dict())
    assert _same_state(run.ema.state_dict(), want.ema.state_dict())
    assert (run.epoch, run.updates, run.best, run.curves, run.seconds, run.images_seen) == (1, 2, {"epoch": 1},
                                                                                          [{"epoch": 1}], 2.5, 16)
    for t in (original, restored):  # the same RNG, weights and optimizer state: the same next step
        t.run.load_state_dict(load_checkpoint(tmp_path / "last.pt", "sig"))  # its own copy (optimizers alias it)
        train_step(t.run, t.net, x, y, params, CPU, t.channels_last, t.amp_dtype, t.scaler, t.criterion, t.mixup)
    assert _same_state(restored.run.model.state_dict(), original.run.model.state_dict())


def test_load_checkpoint_is_none_for_another_run_a_missing_file_or_an_unreadable_one(tmp_path: Path) -> None:
    t, _, _ = _setup(_params())
    path = tmp_path / "last.pt"
    assert load_checkpoint(path, "sig") is None
    torch.save(t.run.state_dict("sig"), path)
    assert load_checkpoint(path, "sig") is not None
    assert load_checkpoint(path, "other params") is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert load_checkpoint(path, "sig") is None
    path.write_bytes(b"")
    assert load_checkpoint(path, "sig") is None


def test_fold_run_state_without_scheduler_or_ema_saves_none_for_them() -> None:
    t, _, _ = _setup(_params(sched="none"))
    state = t.run.state_dict("sig")
    assert t.run.scheduler is None and t.run.ema is None
    assert state["scheduler"] is None and state["ema"] is None
    FoldRun(t.run.model, t.run.optimizer, None, None).load_state_dict(state)


# loop.py


def test_training_setup_builds_the_named_model_loss_and_precision() -> None:
    t, _, _ = _setup(_params(label_smoothing=0.2))
    assert t.run.model.net.num_classes == 3
    assert t.amp_dtype is None and t.precision == "fp32 (train.amp: off)"
    assert t.scaler is None and t.mixup is None
    assert isinstance(t.criterion, torch.nn.CrossEntropyLoss) and t.criterion.label_smoothing == 0.2
    assert t.channels_last  # a CNN; MLPs never are
    assert not _setup(_params(model="foldwise_mlp", model_kwargs={"hidden": [8]}))[0].channels_last


def test_train_one_epoch_returns_a_finite_loss_an_accuracy_and_the_rows_seen() -> None:
    params = _params()
    t, _, _ = _setup(params, n=20)
    before = {k: v.clone() for k, v in t.run.model.state_dict().items()}
    t.sampler.set_epoch(1)
    loss, accuracy, count = train_one_epoch(t.run, t.net, t.loader, params, CPU, t.channels_last, t.amp_dtype,
                                            t.scaler, t.criterion, t.mixup, fold=0)
    assert np.isfinite(loss) and loss > 0
    assert 0.0 <= accuracy <= 1.0
    assert count == 16  # 20 rows in batches of 8: the last, partial batch is dropped
    assert t.run.updates == 2
    assert not _same_state(t.run.model.state_dict(), before)


def test_train_one_epoch_keeps_the_only_partial_batch_when_rows_are_fewer_than_a_batch() -> None:
    params = _params(batch_size=32)
    t, _, _ = _setup(params, n=20)
    _, accuracy, count = train_one_epoch(t.run, t.net, t.loader, params, CPU, t.channels_last, t.amp_dtype,
                                         t.scaler, t.criterion, t.mixup, fold=0)
    assert count == 20 and t.run.updates == 1
    assert accuracy * 20 == pytest.approx(round(accuracy * 20))  # a count of correct rows over 20


def test_train_step_increments_updates_and_returns_the_loss_and_correct_count() -> None:
    params = _params(mixup_alpha=0.4)
    t, images, labels = _setup(params)
    assert t.mixup is not None
    x = torch.from_numpy(np.ascontiguousarray(images[:8].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels[:8])
    lr = t.run.optimizer.param_groups[0]["lr"]
    loss, correct = train_step(t.run, t.net, x, y, params, CPU, t.channels_last, t.amp_dtype, t.scaler,
                               t.criterion, t.mixup)
    assert t.run.updates == 1
    assert isinstance(loss, float) and np.isfinite(loss)
    assert isinstance(correct, int) and 0 <= correct <= 8
    assert t.run.optimizer.param_groups[0]["lr"] != lr  # the per-step scheduler moved on (warm-up)
    train_step(t.run, t.net, x, y, params, CPU, t.channels_last, t.amp_dtype, t.scaler, t.criterion, t.mixup)
    assert t.run.updates == 2


# fold.py


def test_fold_seed_comes_from_train_folds_and_an_explicit_seed_wins() -> None:
    params = _params(folds=[{"fold": 0, "seed": 7}, {"fold": 1, "seed": 3}])
    assert fold_seed(params, 0, None) == 7
    assert fold_seed(params, 1, None) == 3
    assert fold_seed(params, 1, 42) == 42
    assert fold_seed(params, 9, 5) == 5  # a fold not listed runs with an explicit seed


def test_fold_seed_of_an_unlisted_fold_without_a_seed_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^fold 5 is not in params\.yaml train\.folds; pass --seed or add it there$"):
        fold_seed(_params(folds=[{"fold": 0, "seed": 0}]), 5, None)


def _prepared(root: Path, n: int = 24, n_folds: int = 2) -> np.ndarray:
    """data/prepared/ as `prepare` writes it, for tiny 12x12 images; returns each row's fold."""
    images, labels = _data(n)
    files = paths.Prepared(root)
    root.mkdir(parents=True)
    np.save(files.train_images, images)
    np.save(files.train_labels, labels)
    fold_of_row = np.arange(n) % n_folds
    pd.DataFrame({"row": np.arange(n), "label": labels, "fold": fold_of_row}).to_csv(files.folds, index=False)
    files.meta.write_text(json.dumps({**META, "n_folds": n_folds}))
    return fold_of_row


def test_run_fold_writes_the_best_epochs_model_and_oof_predictions_of_its_validation_rows(tmp_path: Path) -> None:
    fold_of_row = _prepared(tmp_path / "prepared")
    params = _params(epochs=2)
    dirs = {name: tmp_path / name for name in ("folds", "checkpoints", "curves")}
    metrics = run_fold(params, 1, 3, tmp_path / "prepared", dirs["folds"], dirs["checkpoints"], dirs["curves"])
    files = paths.FoldFiles(paths.fold_dir(1, dirs["folds"]))
    val_rows = np.flatnonzero(fold_of_row == 1)
    assert np.array_equal(np.load(files.oof_rows), val_rows)
    oof = np.load(files.oof_probs)
    assert oof.shape == (len(val_rows), 3) and np.allclose(oof.sum(1), 1.0, atol=1e-5)
    model, ckpt = load_fold_model(files.model)
    assert (ckpt["fold"], ckpt["seed"], ckpt["epoch"]) == (1, 3, metrics["best_epoch"])
    images = np.load(paths.Prepared(tmp_path / "prepared").train_images)
    assert np.allclose(predict_probs(model, images[val_rows], CPU), oof, atol=1e-5)  # the weights of that epoch
    assert json.loads(files.metrics.read_text()) == metrics
    assert (metrics["fold"], metrics["seed"], metrics["epochs_run"], metrics["metric"]) == (1, 3, 2, "accuracy")
    assert len(pd.read_csv(paths.curves_csv(1, dirs["curves"]))) == 2
    assert paths.checkpoint(1, dirs["checkpoints"]).is_file()
    again = run_fold(params, 1, 3, tmp_path / "prepared", dirs["folds"], dirs["checkpoints"], dirs["curves"])
    assert again["best_epoch"] == metrics["best_epoch"] and again["val_logloss"] == metrics["val_logloss"]


def test_run_fold_of_a_fold_the_data_does_not_have_is_a_user_error(tmp_path: Path) -> None:
    _prepared(tmp_path / "prepared", n_folds=2)
    with pytest.raises(UserError, match=r"^fold 2: .*folds\.csv has folds 0-1 "):
        run_fold(_params(), 2, 0, tmp_path / "prepared", tmp_path / "folds", tmp_path / "ck", tmp_path / "curves")


def test_a_junk_checkpoint_starts_the_fold_afresh(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    assert load_checkpoint(tmp_path / "last.pt", "sig") is None


def test_bench_train_times_bf16_where_native_on_cuda_or_where_train_amp_asks_for_it() -> None:
    from pipeline.bench.train import bf16_measured

    native = bool(cpu_precision()["bf16"])
    assert bf16_measured(_params(amp="auto"), CPU) == native
    assert bf16_measured(_params(amp="off"), CPU) == native
    assert bf16_measured(_params(amp="bf16"), CPU) and bf16_measured(_params(amp="off"), torch.device("cuda"))
