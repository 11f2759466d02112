"""Models: timm's registry plus our networks (`pipeline/modeling/nets.py`), and the wrapper that takes raw
uint8-range pixels (so the ONNX graph can take uint8 images directly).

    model = create_classifier("foldwise_air", num_classes=10, in_chans=1, native_size=28, mean=[.29], std=[.35])
    model, ckpt = load_fold_model(Path("models/folds/fold0/model.pt"))
    register_in_timm(); timm.create_model("foldwise_cnn", in_chans=1, num_classes=10)

Our networks are built without importing timm (`import timm` pulls torchvision and torch._dynamo,
~2 s of every stage process that only rebuilds a fold's model: ensemble, export); they join timm's
registry when timm is imported anyway (training, other timm models, `train.model` validation).
"""
from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.modeling.nets import OWN_MODELS
from serve.errors import UserError, first_line

_logger = logging.getLogger(__name__)


def register_in_timm() -> None:
    """Put our networks in timm's registry (idempotent), so `timm.create_model` and
    `timm.is_model` know them."""
    import timm.models

    for name, fn in OWN_MODELS.items():
        if not timm.models.is_model(name):
            timm.models.register_model(fn)



class ImageClassifier(nn.Module):
    """uint8-range pixels `[N, C, H, W]` -> logits: scale to [0, 1], normalise, resize, timm model."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 img_size: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.img_size = img_size
        self.register_buffer("scale", (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, -1, 1, 1))
        self.register_buffer("shift", (torch.tensor(mean, dtype=torch.float32)
                                       / torch.tensor(std, dtype=torch.float32)).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() * self.scale - self.shift
        if self.img_size is not None and x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return self.net(x)


def _read_weights(path: Path) -> dict:
    """A state dict from a .safetensors or torch file (torch.load with weights_only=True: no code runs)."""
    if not path.is_file():
        raise UserError(f"train.pretrained_file: {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (safetensors, pickle and zip errors of many kinds)
        raise UserError(f"train.pretrained_file: {path} is not a readable weights file "
                        f"({first_line(exc, 160)})") from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"train.pretrained_file: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained_file(net: nn.Module, path: Path) -> list[str]:
    """Load local weights into a timm model, the way timm adapts hub weights: the classifier is
    kept fresh when its shape differs (other classes), the first conv is adapted to the channel
    count; every other weight must fit, or UserError names the first that does not. Returns the
    keys left at their initial values."""
    from timm.models._manipulate import adapt_input_conv

    state = _read_weights(path)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    own = net.state_dict()
    first = cfg.get("first_conv")
    if first and f"{first}.weight" in state and f"{first}.weight" in own:
        w = state[f"{first}.weight"]
        if w.shape[1] != own[f"{first}.weight"].shape[1]:
            state[f"{first}.weight"] = adapt_input_conv(own[f"{first}.weight"].shape[1], w.float())
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    fresh = []
    for key in list(state):
        if key in own and state[key].shape != own[key].shape and any(key.startswith(h + ".") for h in heads):
            del state[key]
            fresh.append(key)
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and k not in fresh and not k.endswith("num_batches_tracked")]
    if unexpected or wrong or missing:
        what = (f"'{wrong[0]}' is {tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in the model"
                if wrong else f"'{unexpected[0]}' is not a weight of the model" if unexpected
                else f"the model's '{missing[0]}' is not in the file")
        raise UserError(f"train.pretrained_file: {path} does not fit {type(net).__name__} ({what}; "
                        f"{len(wrong)} mismatched, {len(unexpected)} unknown, {len(missing)} missing)")
    net.load_state_dict(state, strict=False)
    _logger.info("loaded %d tensors from %s%s", len(state), path,
                 f"; {', '.join(fresh)} left fresh (other classes)" if fresh else "")
    return fresh


def create_classifier(model: str, num_classes: int, in_chans: int, native_size: int,
                      mean: Sequence[float], std: Sequence[float], img_size: int | None = None,
                      drop_rate: float = 0.0, pretrained: bool = False,
                      model_kwargs: dict | None = None, pretrained_file: str | None = None) -> ImageClassifier:
    """A timm model (any registered name) inside the uint8-pixel wrapper; `pretrained_file` loads
    local weights (what Kaggle's internet-off notebooks need) instead of the hub's. Ours are built
    directly (the call timm's `create_model` makes: None-valued kwargs dropped)."""
    kwargs = dict(model_kwargs or {})
    size = img_size or native_size
    if model.startswith(("foldwise_mlp", "foldwise_linear")):
        kwargs.setdefault("img_size", size)
    try:
        if model in OWN_MODELS and not pretrained_file:
            own = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": drop_rate, **kwargs}
            net = OWN_MODELS[model](pretrained=pretrained, **{k: v for k, v in own.items() if v is not None})
        else:
            import timm

            register_in_timm()
            net = timm.create_model(model, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                    drop_rate=drop_rate, **kwargs)
    except (RuntimeError, OSError) as exc:
        if pretrained:
            raise UserError(f"train.pretrained: could not load pretrained weights for '{model}' "
                            f"({first_line(exc, 160)}); this machine may have no access to "
                            "the Hugging Face hub: set pretrained: false") from None
        raise
    except TypeError as exc:
        raise UserError(f"train.model_kwargs: {model} rejected them ({exc})") from None
    if pretrained_file:
        load_pretrained_file(net, Path(pretrained_file))
    return ImageClassifier(net, mean, std, img_size)


def load_fold_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a fold's model from model.pt (weights_only=True: no code runs from the file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run the train stage first)") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: not a readable foldwise checkpoint ({first_line(exc, 160)})") from None
    if not isinstance(ckpt, dict) or not {"model", "state_dict"} <= set(ckpt):
        raise UserError(f"{path}: not a foldwise checkpoint (no 'model' and 'state_dict' entries: "
                        "was it written by the train stage?)")
    m = ckpt["model"]
    model = create_classifier(m["name"], m["num_classes"], m["in_chans"], m["native_size"], m["mean"], m["std"],
                              m["img_size"], m["drop_rate"], False, m["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
