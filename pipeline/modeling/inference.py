"""A model's softmax probabilities for uint8 images, batch by batch (no augmentation): each
epoch's validation, `foldwise bench infer`'s eager PyTorch side.

    probs = predict_probs(model, images_nhwc, torch.device("cpu"), batch_size=512)
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 512,
                  channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities for uint8 images `[N, H, W, C]` (no augmentation)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        # a copy: a slice of a read-only memmap stays read-only after a no-op transpose (one channel)
        x = torch.from_numpy(np.array(images[start:start + batch_size].transpose(0, 3, 1, 2), order="C")).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def size_and_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, forward FLOPs for one `[H, W, C]` image), FLOPs by torch.utils.flop_counter (a
    multiply-add counts two)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w, c = image_shape
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, c, h, w))
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())
