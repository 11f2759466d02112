"""Our small-image networks (course ladder: linear baseline -> MLP -> CNN), built without timm.

    net = OWN_MODELS["foldwise_air"](num_classes=10, in_chans=1)   # what create_classifier calls

- `foldwise_linear`: logistic regression on the pixels.
- `foldwise_mlp`: two hidden layers with batch norm and dropout.
- `foldwise_cnn`, `foldwise_cnn_l`: VGG-style CNNs for 28-64 px images; unlike ImageNet
  models they keep full resolution in the stem and downsample only twice.
- `foldwise_air`: airbench-style net (frozen-scale BNs that fold into the convs at export).
- `foldwise_wrn16_4`, `foldwise_wrn28_10`: CIFAR-style wide ResNets (Zagoruyko & Komodakis),
  the architecture of the best published Fashion-MNIST single models (GPU settings).

Each entry point has timm's signature, so `pipeline.modeling.classifier.register_in_timm` can hand them to timm's
registry; importing timm here would cost every stage that only rebuilds a fold's model ~2 s.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.registry import Registry
from serve.errors import UserError

OWN_MODELS: Registry[Callable[..., nn.Module]] = Registry("model")  # name -> entry point (timm's signature)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Ours, under the function's name; `register_in_timm` hands them on to timm's registry."""
    return OWN_MODELS.add(fn.__name__, fn)


class GlobalPool(nn.Module):
    """Global average, max or their mean over H and W, flattened to `[N, C]` (the ops of timm's
    adaptive pool with flatten=True; no weights, so checkpoints are unchanged)."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in ("avg", "max", "avgmax"):
            raise UserError(f"train.model_kwargs.global_pool: must be avg, max or avgmax, got {pool_type!r}")
        self.pool_type = pool_type
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            x = F.adaptive_avg_pool2d(x, 1)
        elif self.pool_type == "max":
            x = F.adaptive_max_pool2d(x, 1)
        else:
            x = 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1))
        return self.flatten(x)


def _conv_bn_act(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallImageCNN(nn.Module):
    """Stages of 3x3 conv-BN-ReLU blocks; 2x2 max-pool between stages; global pool; dropout; fc."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (2, 2, 1),
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", **_: Any) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, (w, d) in enumerate(zip(widths, depths)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _j in range(d):
                layers += _conv_bn_act(cin, w)
                cin = w
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = GlobalPool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = GlobalPool(global_pool)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _frozen_scale_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with its scale fixed at 1 (airbench): only the shift learns, and the scale a BN applies,
    1/sqrt(var + eps), stays positive, so at inference it folds into a conv even across a max-pool."""
    bn = nn.BatchNorm2d(channels)
    bn.weight.requires_grad_(False)
    return bn


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing bn(conv(x)) in eval mode (running statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


class AirBlock(nn.Module):
    """airbench's block: conv3x3 -> 2x2 max-pool -> BN -> act -> conv3x3 -> BN -> act. Pooling right
    after the first conv runs the second conv and both BNs at a quarter of the pixels."""

    def __init__(self, cin: int, cout: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1, self.act1 = _frozen_scale_bn(cout), act()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2, self.act2 = _frozen_scale_bn(cout), act()
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # BNs folded into the convs; act before pool (equal for ReLU): conv+ReLU, then pool
            return self.act2(self.conv2(self.pool(self.act1(self.conv1(x)))))
        x = self.act1(self.bn1(self.pool(self.conv1(x))))
        return self.act2(self.bn2(self.conv2(x)))

    def fuse_(self) -> None:
        """Fold both BNs into the convs for inference. bn1 sits after the max-pool; it commutes with it
        because its per-channel scale is positive (checked)."""
        if self.fused:
            return
        if not bool(((self.bn1.weight / torch.sqrt(self.bn1.running_var + self.bn1.eps)) > 0).all()):
            return
        self.conv1, self.conv2 = fold_bn(self.conv1, self.bn1), fold_bn(self.conv2, self.bn2)
        self.bn1, self.bn2 = nn.Identity(), nn.Identity()
        self.fused = isinstance(self.act1, nn.ReLU)
        if not self.fused:  # act does not commute with max: keep conv -> pool -> act
            self.forward = lambda x: self.act2(self.conv2(self.act1(self.pool(self.conv1(x)))))  # type: ignore[method-assign]


_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class AirNet(nn.Module):
    """A BN'd VGG-like net after airbench (Keller Jordan's CIFAR-10 speed records), for 28-32 px:
    a 3x3 stem at full resolution, then blocks that pool right after their first conv, so only
    two convs run at full resolution; BN scales frozen at 1; global max-pool; dropout; linear head."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), stem: int = 16, act: str = "relu",
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "max", **_: Any) -> None:
        super().__init__()
        if act not in _ACTS:
            raise UserError(f"train.model_kwargs.act: must be one of {', '.join(_ACTS)}, got {act!r}")
        self.stem = nn.Conv2d(in_chans, stem, 3, padding=1, bias=False)
        self.stem_bn, self.stem_act = _frozen_scale_bn(stem), _ACTS[act]()
        blocks, cin = [], stem
        for w in widths:
            blocks.append(AirBlock(cin, w, _ACTS[act]))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.num_classes = num_classes
        self.global_pool = GlobalPool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_act(self.stem_bn(self.stem(x))))
        return self.fc(self.head_drop(self.global_pool(x)))

    def fuse_(self) -> None:
        """Inference form: every BN folded into its conv (fewer ops; int8 graphs stay int8 end to end)."""
        if not isinstance(self.stem_bn, nn.Identity):
            self.stem, self.stem_bn = fold_bn(self.stem, self.stem_bn), nn.Identity()
        for block in self.blocks:
            block.fuse_()


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold BNs into convs where the network knows how (`fuse_`); eval mode only."""
    net = getattr(model, "net", model)
    if hasattr(net, "fuse_"):
        model.eval()
        net.fuse_()
    return model


class MLP(nn.Module):
    """Flatten -> (Linear-BN-ReLU-Dropout) x len(hidden) -> Linear. `hidden=()` is logistic regression."""

    def __init__(self, hidden: Sequence[int] = (512, 256), num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 28, drop_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        cin = in_chans * img_size * img_size
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(drop_rate)]
            cin = h
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.num_classes = num_classes
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class WideBasic(nn.Module):
    """Pre-activation wide-ResNet block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, drop: float) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv2(self.drop(F.relu(self.bn2(self.conv1(o)))))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k for small images: conv3x3(16), three groups (16k, 32k, 64k; strides 1, 2, 2)."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, block_drop: float = 0.0, **_: Any) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise UserError(f"train.model_kwargs: wide ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)]
        cin = widths[0]
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(WideBasic(cin, widths[g + 1], stride if i == 0 else 1, block_drop))
                cin = widths[g + 1]
        layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.num_classes = num_classes
        self.global_pool = GlobalPool("avg")
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(self.global_pool(self.features(x))))


def _no_pretrained(name: str, pretrained: bool, kwargs: dict) -> dict:
    if pretrained:
        raise UserError(f"train.pretrained: {name} has no pretrained weights (set pretrained: false)")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_path_rate"):
        kwargs.pop(key, None)
    return kwargs


@register_model
def foldwise_cnn(pretrained: bool = False, **kwargs: Any) -> SmallImageCNN:
    """~140k params: widths 32-64-128, depths 2-2-1. The CPU-friendly default."""
    return SmallImageCNN(**{"widths": (32, 64, 128), "depths": (2, 2, 1),
                            **_no_pretrained("foldwise_cnn", pretrained, kwargs)})


@register_model
def foldwise_cnn_l(pretrained: bool = False, **kwargs: Any) -> SmallImageCNN:
    """~1.15M params: widths 64-128-256, depths 2-2-2. For GPUs or long CPU runs."""
    return SmallImageCNN(**{"widths": (64, 128, 256), "depths": (2, 2, 2),
                            **_no_pretrained("foldwise_cnn_l", pretrained, kwargs)})


@register_model
def foldwise_air(pretrained: bool = False, **kwargs: Any) -> AirNet:
    """airbench-style net, ~32 MFLOPs per 28 px image: stem 16, blocks 32-64-128, ReLU, max-pool head."""
    return AirNet(**_no_pretrained("foldwise_air", pretrained, kwargs))


@register_model
def foldwise_wrn16_4(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-4, ~2.7M params."""
    return WideResNet(**{"depth": 16, "widen": 4, **_no_pretrained("foldwise_wrn16_4", pretrained, kwargs)})


@register_model
def foldwise_wrn28_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-28-10, ~36.5M params: the 96.3% Fashion-MNIST model with random erasing (GPU)."""
    return WideResNet(**{"depth": 28, "widen": 10, **_no_pretrained("foldwise_wrn28_10", pretrained, kwargs)})


@register_model
def foldwise_mlp(pretrained: bool = False, **kwargs: Any) -> MLP:
    """Two hidden layers (512, 256) with batch norm and dropout."""
    return MLP(**{"hidden": (512, 256), **_no_pretrained("foldwise_mlp", pretrained, kwargs)})


@register_model
def foldwise_linear(pretrained: bool = False, **kwargs: Any) -> MLP:
    """Logistic regression on the pixels: the course's baseline."""
    return MLP(**{"hidden": (), **_no_pretrained("foldwise_linear", pretrained, kwargs)})
