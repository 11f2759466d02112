"""What the network learned (pipeline/report/learned.py): the layers found in any model, one image's
feature maps, the classifier's input features, their 2-D embedding, and the figures drawn from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn as nn

from pipeline.modeling.classifier import create_classifier
from pipeline.report.figures import plot_activations, plot_embedding, plot_filters
from pipeline.report.learned import _features, _layers, _maps, embed

PNG = b"\x89PNG\r\n\x1a\n"


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_a_cnn_gives_its_filters_four_feature_maps_and_the_classifiers_input(tmp_path: Path) -> None:
    model = create_classifier("foldwise_cnn", 3, 1, 28, [0.5], [0.25], model_kwargs={"widths": [4, 8, 16]}).eval()
    convs, head = _layers(model)
    assert len(convs) >= 4 and isinstance(head, nn.Linear) and head.out_features == 3
    maps = _maps(model, convs, _images(1)[0])
    assert 2 <= len(maps) <= 4 and maps[0][1].shape[0] == 4 and maps[0][1].ndim == 3   # [C, H, W] of the first conv
    assert not maps[0][0].startswith("net.")
    feats = _features(model, head, _images(10))
    assert feats.shape == (10, head.in_features) and np.isfinite(feats).all()
    plot_filters(convs[0][1].weight.detach().numpy(), tmp_path / "filters.png", 50)
    plot_activations(_images(1)[0], maps, tmp_path / "activations.png", 50)
    assert all((tmp_path / f).read_bytes()[:8] == PNG for f in ("filters.png", "activations.png"))


def test_an_mlp_has_no_convolution_but_features() -> None:
    model = create_classifier("foldwise_mlp", 3, 1, 28, [0.5], [0.25]).eval()
    convs, head = _layers(model)
    assert convs == [] and _features(model, head, _images(5)).shape == (5, 256)


def test_the_embedding_is_two_dimensional_and_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    feats = rng.normal(size=(60, 20)) + 4 * labels[:, None]             # three separable clusters
    for method in ("tsne", "pca"):
        xy = embed(feats, method)
        assert xy.shape == (60, 2) and np.allclose(xy, embed(feats, method))
        centres = np.array([xy[labels == k].mean(0) for k in range(3)])
        spread = max(np.linalg.norm(xy[labels == k] - centres[k], axis=1).mean() for k in range(3))
        assert min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)) > spread
    plot_embedding(xy, labels, ["a", "b", "c"], tmp_path / "embedding.png", 50, "PCA")
    assert (tmp_path / "embedding.png").read_bytes()[:8] == PNG
