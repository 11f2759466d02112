"""Our networks (pipeline/modeling/nets.py): shapes, the registry, BN folding for inference."""
from __future__ import annotations

import torch


def test_air_net_folds_its_batch_norms_for_inference_without_changing_outputs() -> None:
    """BN after the max-pool folds into the conv before it (its scale is frozen positive); ReLU moves before
    the pool. The inference form has no BatchNorm left and gives the same logits."""
    from pipeline.modeling.classifier import create_classifier
    from pipeline.modeling.nets import fuse_for_inference

    torch.manual_seed(0)
    model = create_classifier("foldwise_air", 10, 1, 28, [0.286], [0.353], model_kwargs={"widths": [8, 16, 16]})
    model.train()
    for _ in range(3):  # non-trivial running statistics
        model(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8))
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.normal_(bn.bias)
    model.eval()
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        before = model(x)
        after = fuse_for_inference(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
