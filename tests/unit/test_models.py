"""Our networks and the model wrapper (pipeline/modeling/nets.py, classifier.py) beyond test_nets.py and
test_classifier.py: every OWN_MODELS entry's logits, the global pool, the one-line errors for bad model kwargs,
ImageClassifier's pixel scaling and resize, and a fold's model.pt rebuilt by load_fold_model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.modeling.classifier import ImageClassifier, create_classifier, load_fold_model
from pipeline.modeling.nets import OWN_MODELS, AirNet, GlobalPool, WideResNet
from serve.errors import UserError

# the entry points' own defaults, narrowed so that a forward pass takes milliseconds
SMALL = {"foldwise_cnn": {"widths": [4, 8, 8]}, "foldwise_cnn_l": {"widths": [4, 8, 8]},
         "foldwise_air": {"widths": [4, 8, 8], "stem": 4}, "foldwise_wrn16_4": {"widen": 1},
         "foldwise_wrn28_10": {"widen": 1}, "foldwise_mlp": {"hidden": [8, 8]}, "foldwise_linear": {}}
DOCUMENTED_PARAMS = {"foldwise_cnn": 140e3, "foldwise_cnn_l": 1.15e6, "foldwise_wrn16_4": 2.7e6,
                     "foldwise_wrn28_10": 36.5e6}  # the entry points' docstrings ("~140k params", ...)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_every_own_model_has_a_small_configuration_here() -> None:
    assert set(SMALL) == set(OWN_MODELS.names())


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", OWN_MODELS.names())
def test_every_own_model_gives_logits_per_image_and_class(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    net = OWN_MODELS[name](num_classes=7, in_chans=in_chans, **SMALL[name]).eval()
    with torch.no_grad():
        logits = net(torch.rand(3, in_chans, 28, 28))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "params"), DOCUMENTED_PARAMS.items())
def test_default_sizes_match_the_documented_parameter_counts(name: str, params: float) -> None:
    net = OWN_MODELS[name](num_classes=10, in_chans=1)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - params) / params < 0.05, count


def test_global_pool_averages_takes_the_max_or_their_mean_over_height_and_width() -> None:
    x = torch.randn(2, 5, 4, 6)
    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    assert torch.allclose(GlobalPool("avg")(x), avg, atol=1e-6)
    assert torch.equal(GlobalPool("max")(x), mx)
    assert torch.allclose(GlobalPool("avgmax")(x), 0.5 * (avg + mx), atol=1e-6)
    assert GlobalPool()(x).shape == (2, 5)


def test_an_unknown_pool_type_is_a_one_line_error_naming_the_key() -> None:
    with pytest.raises(UserError) as exc:
        GlobalPool("sum")
    assert _one_line(exc) == "train.model_kwargs.global_pool: must be avg, max or avgmax, got 'sum'"


def test_a_pool_type_from_model_kwargs_reaches_the_network() -> None:
    model = create_classifier("foldwise_cnn", 4, 1, 28, [0.5], [0.25],
                              model_kwargs={**SMALL["foldwise_cnn"], "global_pool": "avgmax"})
    assert model.net.global_pool.pool_type == "avgmax"
    with pytest.raises(UserError, match=r"^train\.model_kwargs\.global_pool: .*got 'mean'$"):
        create_classifier("foldwise_cnn", 4, 1, 28, [0.5], [0.25], model_kwargs={"global_pool": "mean"})


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_air_net_takes_each_listed_activation(act: str) -> None:
    net = AirNet(widths=(4, 8), stem=4, act=act, num_classes=3, in_chans=1).eval()
    assert isinstance(net.stem_act, {"gelu": nn.GELU, "silu": nn.SiLU}[act])
    with torch.no_grad():
        assert net(torch.rand(2, 1, 16, 16)).shape == (2, 3)


def test_air_net_refuses_an_unknown_activation_in_one_line_naming_the_choices() -> None:
    with pytest.raises(UserError) as exc:
        AirNet(act="tanh")
    assert _one_line(exc) == "train.model_kwargs.act: must be one of relu, gelu, silu, got 'tanh'"


@pytest.mark.parametrize("depth", [11, 12, 15])
def test_wide_resnet_depth_must_be_6n_plus_4(depth: int) -> None:
    with pytest.raises(UserError) as exc:
        WideResNet(depth=depth, widen=1)
    assert _one_line(exc) == f"train.model_kwargs: wide ResNet depth must be 6n+4, got {depth}"


def test_wide_resnet_has_n_blocks_per_group_for_depth_6n_plus_4() -> None:
    from pipeline.modeling.nets import WideBasic

    for depth, n in ((10, 1), (16, 2)):
        net = WideResNet(depth=depth, widen=1, num_classes=2, in_chans=1)
        assert sum(isinstance(m, WideBasic) for m in net.modules()) == 3 * n


@pytest.mark.parametrize("name", OWN_MODELS.names())
def test_ours_asked_for_pretrained_weights_say_they_have_none(name: str) -> None:
    with pytest.raises(UserError) as exc:
        create_classifier(name, 10, 1, 28, [0.5], [0.25], pretrained=True)
    assert _one_line(exc) == f"train.pretrained: {name} has no pretrained weights (set pretrained: false)"


def test_ours_ignore_timm_only_kwargs_such_as_drop_path_rate() -> None:
    """train.drop_path_rate reaches every model (TrainParams.create_kwargs); ours have no stochastic depth."""
    model = create_classifier("foldwise_cnn", 3, 1, 28, [0.5], [0.25],
                              model_kwargs={**SMALL["foldwise_cnn"], "drop_path_rate": 0.2})
    assert model(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape == (1, 3)


def test_image_classifier_scales_uint8_pixels_with_the_mean_and_std() -> None:
    mean, std = [0.2, 0.5, 0.7], [0.3, 0.25, 0.1]
    x = torch.randint(0, 256, (2, 3, 6, 5), dtype=torch.uint8)
    out = ImageClassifier(nn.Identity(), mean, std)(x)
    expected = (x.double() / 255.0 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_image_classifier_resizes_to_img_size_and_leaves_the_native_size_alone() -> None:
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    plain = ImageClassifier(nn.Identity(), [0.5], [0.25])(x)
    resized = ImageClassifier(nn.Identity(), [0.5], [0.25], img_size=16)(x)
    assert resized.shape == (2, 1, 16, 16)
    expected = F.interpolate(plain, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(resized, expected, atol=1e-5)
    assert torch.equal(ImageClassifier(nn.Identity(), [0.5], [0.25], img_size=28)(x), plain)


def test_create_classifier_with_img_size_feeds_the_network_that_size() -> None:
    model = create_classifier("foldwise_mlp", 5, 1, 28, [0.5], [0.25], img_size=32, model_kwargs={"hidden": [8]})
    assert model.net.features[1].in_features == 32 * 32  # the MLP was built for the resized image
    assert model.eval()(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 5)


def test_model_kwargs_a_network_rejects_become_a_user_error_naming_train_model_kwargs() -> None:
    with pytest.raises(UserError) as exc:
        create_classifier("foldwise_cnn", 10, 1, 28, [0.5], [0.25], model_kwargs={"widths": 8})
    assert _one_line(exc).startswith("train.model_kwargs: foldwise_cnn rejected them (")


def _fold_checkpoint(path: Path) -> nn.Module:
    """A trained-looking fold model saved as pipeline/training/fold.py write_fold saves model.pt."""
    torch.manual_seed(1)
    kwargs = {"widths": [4, 8], "depths": [1, 1]}
    model = create_classifier("foldwise_cnn", 4, 1, 20, [0.3], [0.4], 24, 0.1, False, kwargs)
    model.train()
    for _ in range(2):  # running statistics that differ from a fresh model's
        model(torch.randint(0, 256, (8, 1, 20, 20), dtype=torch.uint8))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state,
                "model": {"name": "foldwise_cnn", "num_classes": 4, "in_chans": 1, "native_size": 20,
                          "mean": [0.3], "std": [0.4], "img_size": 24, "drop_rate": 0.1, "model_kwargs": kwargs},
                "fold": 2, "seed": 7, "epoch": 3, "ema": False}, path)
    return model.eval()


def test_load_fold_model_rebuilds_the_saved_model_in_eval_mode(tmp_path: Path) -> None:
    saved = _fold_checkpoint(tmp_path / "model.pt")
    model, ckpt = load_fold_model(tmp_path / "model.pt")
    assert not model.training
    assert (ckpt["fold"], ckpt["seed"], ckpt["epoch"]) == (2, 7, 3)
    assert model.img_size == 24
    x = torch.randint(0, 256, (5, 1, 20, 20), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(x), saved(x))


def test_a_missing_model_file_is_one_line_saying_to_train_first(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        load_fold_model(tmp_path / "fold0" / "model.pt")
    assert _one_line(exc) == f"{tmp_path / 'fold0' / 'model.pt'}: not found (run the train stage first)"


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_a_damaged_model_file_is_one_line_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "model.pt"
    _fold_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + data[100:200])
    with pytest.raises(UserError) as exc:
        load_fold_model(path)
    assert _one_line(exc).startswith(f"{path}: not a readable foldwise checkpoint (")


@pytest.mark.parametrize("content", [b"not a checkpoint", b""], ids=["junk", "empty"])
def test_a_junk_or_empty_model_file_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"model\.pt: not a readable foldwise checkpoint \(") as exc:
        load_fold_model(path)
    assert "\n" not in str(exc.value)


def test_a_state_dict_alone_is_not_a_fold_checkpoint(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "model.pt")
    with pytest.raises(UserError, match=r"model\.pt: not a foldwise checkpoint \(no 'model' and 'state_dict'"):
        load_fold_model(tmp_path / "model.pt")
