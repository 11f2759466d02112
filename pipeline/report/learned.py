"""What the network learned: the first convolution's filters, one image's feature maps through the
layers, and a 2-D embedding (t-SNE or PCA, scikit-learn) of the penultimate features by class.

    blocks = learned_section(run, Path("reports"), ReportParams())

All from the first fold's model (models/folds/fold<k>/model.pt, loaded with weights_only=True) on
that fold's own validation images, which it never trained on. Generic over models: the filters are
the first nn.Conv2d's weights, the maps the outputs of up to four nn.Conv2d spread through the
network, the features the input of its last nn.Linear (the classifier). A model without a
convolution (foldwise_linear, foldwise_mlp) shows the embedding alone and says why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.report.content import Block, Figure, Heading, Text, not_applicable
from pipeline.report.figures import plot_activations, plot_embedding, plot_filters
from pipeline.report.params import ReportParams
from pipeline.report.run import Run

TITLE = "What the network learned"


def _layers(model):
    import torch.nn as nn

    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return convs, (linears[-1] if linears else None)


def _features(model, head, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The classifier's input for each image (a forward pre-hook on the last nn.Linear)."""
    import torch

    got: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach().flatten(1).float()))
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch].transpose(0, 3, 1, 2))))
    finally:
        hook.remove()
    return torch.cat(got).numpy()


def _maps(model, convs: list, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The outputs of up to four convolutions spread from the first to the last, for one image."""
    import torch

    picked = [convs[i] for i in sorted({int(round(x)) for x in np.linspace(0, len(convs) - 1, min(4, len(convs)))})]
    got: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda _m, _a, y, name=name: got.__setitem__(name, y[0].detach().float().numpy()))
             for name, m in picked]
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(image[None].transpose(0, 3, 1, 2))))
    finally:
        for h in hooks:
            h.remove()
    return [(name.removeprefix("net."), got[name]) for name, _ in picked if name in got]


def embed(features: np.ndarray, method: str) -> np.ndarray:
    """2-D coordinates: PCA, or t-SNE after PCA to 50 dimensions (scikit-learn's advice for dense features)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method == "pca" or len(features) < 5:
        return PCA(n_components=2, random_state=0).fit_transform(features)
    reduced = PCA(n_components=min(50, *features.shape), random_state=0).fit_transform(features)
    return TSNE(n_components=2, init="pca", random_state=0,
                perplexity=min(30.0, (len(features) - 1) / 3)).fit_transform(reduced)


def learned_section(run: Run, out: Path, params: ReportParams) -> list[Block]:
    if params.embedding == "none":
        return not_applicable(TITLE, "Turned off (report.embedding: none).", "learned")
    if not run.fold_configs:
        return not_applicable(TITLE, "No fold model to look into.", "learned")
    from pipeline.modeling.classifier import load_fold_model

    fold = min(run.fold_configs)
    files = paths.FoldFiles(paths.fold_dir(fold, run.inputs.models / paths.FOLDS.name))
    model, ckpt = load_fold_model(files.model)
    val_rows = np.sort(np.load(files.oof_rows))
    pick = val_rows[np.linspace(0, len(val_rows) - 1, min(params.embedding_rows, len(val_rows))).astype(int)]
    images, labels = np.asarray(run.images[pick]), run.oof.labels[pick]
    convs, head = _layers(model)
    name = ckpt["model"]["name"]
    blocks: list[Block] = [Heading(TITLE),
                           Text(f"Fold {fold}'s model ({name}) on fold {fold}'s validation images, which it never "
                                "trained on.", id="learned")]
    if convs:
        plot_filters(convs[0][1].weight.detach().float().numpy(), out / "filters.png", params.dpi)
        plot_activations(images[0], _maps(model, convs, images[0]), out / "activations.png", params.dpi)
        blocks += [Heading("First-layer filters", 3), Figure(out / "filters.png", "first convolution's filters"),
                   Heading("Feature maps of one image through the layers", 3),
                   Figure(out / "activations.png", "feature maps")]
    else:
        blocks.append(Text(f"{name} has no convolution: no filters or feature maps to show.", muted=True))
    if head is None:
        return [*blocks, Text(f"{name} has no linear classifier layer: no penultimate features.", muted=True)]
    feats = _features(model, head, images)
    xy = embed(feats, params.embedding)
    method = "t-SNE" if params.embedding == "tsne" else "PCA"
    plot_embedding(xy, labels, run.oof.names, out / "embedding.png", params.dpi,
                   f"{method} of the classifier's input ({feats.shape[1]} features), {len(feats)} validation images")
    return [*blocks, Heading(f"Penultimate features in 2-D ({method})", 3),
            Figure(out / "embedding.png", "embedding of the penultimate features")]
