"""Test-time augmentation views, shared by the ensemble stage (OOF scoring) and the ONNX export.

Each view maps a uint8 batch `[N, C, H, W]` to another of the same shape, with torch ops that
export to ONNX (so the views run inside `ensemble.onnx`).
"""
from __future__ import annotations

from typing import Callable

import torch

VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),
    "vflip": lambda x: torch.flip(x, dims=[2]),
}
