"""train.pretrained_file: local weights (what an internet-off Kaggle notebook has) instead of the hub's."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.cli import ROOT
from pipeline.modeling.classifier import create_classifier
from serve.errors import UserError


def _net(num_classes: int, in_chans: int = 3, model: str = "test_resnet"):
    torch.manual_seed(num_classes + in_chans)
    return create_classifier(model, num_classes, in_chans, 32, [0.5] * in_chans, [0.25] * in_chans).net


def test_weights_load_from_a_file_the_head_stays_fresh_and_the_stem_adapts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _net(1000, 3)  # "ImageNet" weights: 1000 classes, RGB
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = create_classifier("test_resnet", 5, 1, 32, [0.5], [0.25], pretrained_file=str(tmp_path / name)).net
        own, src = model.state_dict(), source.state_dict()
        head, stem = model.pretrained_cfg["classifier"], model.pretrained_cfg["first_conv"] + ".weight"
        same = [k for k in own if not k.startswith(head) and k != stem]
        assert same and all(torch.equal(own[k], src[k]) for k in same)
        assert own[f"{head}.weight"].shape == (5, src[f"{head}.weight"].shape[1])  # fresh: 5 classes
        assert own[stem].shape[1] == 1  # the RGB stem summed into one channel, as timm adapts hub weights
        assert torch.allclose(own[stem][:, 0], src[stem].sum(1), atol=1e-5)


def test_weights_of_another_model_are_one_line_naming_the_misfit(tmp_path: Path) -> None:
    torch.save(_net(10, 1, "foldwise_cnn").state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(UserError, match=r"train\.pretrained_file: .*cnn\.pt does not fit ResNet \("):
        create_classifier("test_resnet", 10, 1, 32, [0.5], [0.25], pretrained_file=str(tmp_path / "cnn.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt is not a readable weights file"):
        create_classifier("test_resnet", 10, 1, 32, [0.5], [0.25], pretrained_file=str(tmp_path / "junk.pt"))
    with pytest.raises(UserError, match=r"nope\.pt not found"):
        create_classifier("test_resnet", 10, 1, 32, [0.5], [0.25], pretrained_file=str(tmp_path / "nope.pt"))


def test_pretrained_without_hub_access_is_a_clear_error(tmp_path: Path) -> None:
    """In a fresh process (huggingface_hub reads HF_HUB_OFFLINE at import): no hub, an empty cache."""
    code = ("from pipeline.modeling.classifier import create_classifier\n"
            "from serve.errors import UserError\n"
            "try:\n"
            "    create_classifier('resnet18', 10, 1, 28, [0.3], [0.3], pretrained=True)\n"
            "except UserError as exc:\n"
            "    print(exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}  # the weights are nowhere
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"train\.pretrained: could not load pretrained weights for 'resnet18'.*set pretrained: false",
                     out.stdout), out.stdout
