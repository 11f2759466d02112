"""Test-time augmentation views, shared by the ensemble stage (OOF scoring) and the ONNX export.

Each view maps a uint8 batch `[N, C, H, W]` to another of the same shape, with torch ops that
export to ONNX (so the views run inside `ensemble.onnx`). Shifts move the image one pixel and
fill the uncovered edge with 0 (airbench's translate TTA); which views pay is for the OOF score
to say (`ensemble.tta`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.core.registry import Registry


def _shift(dx: int, dy: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Content moves dx pixels right and dy down (negative: left/up); the uncovered edge is 0."""
    def view(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
        top, left = max(-dy, 0), max(-dx, 0)
        return padded[..., top:top + h, left:left + w]
    return view


VIEWS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("TTA view")
VIEWS.add("none", lambda x: x)  # the plain image: always the first view, never listed in ensemble.tta
VIEWS.add("hflip", lambda x: torch.flip(x, dims=[3]))
VIEWS.add("vflip", lambda x: torch.flip(x, dims=[2]))
VIEWS.add("left1", _shift(-1, 0))
VIEWS.add("right1", _shift(1, 0))
VIEWS.add("up1", _shift(0, -1))
VIEWS.add("down1", _shift(0, 1))
VIEWS.add("hflip_left1", lambda x: _shift(-1, 0)(torch.flip(x, dims=[3])))
VIEWS.add("hflip_right1", lambda x: _shift(1, 0)(torch.flip(x, dims=[3])))
