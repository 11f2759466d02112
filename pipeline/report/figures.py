"""The report's figures, drawn with matplotlib (Agg) and written atomically as PNGs.

    plot_curves(curves_by_fold, best_epoch_by_fold, Path("reports/curves.png"), dpi=110)
    plot_confusion(conf, names, ...); plot_grid(images, titles, ...); plot_cv_vs_lb(history, ...)
    plot_filters(weights, ...); plot_activations(image, maps, ...); plot_embedding(xy, labels, names, ...)
    (the ladder's: pipeline/report/ladder.py)
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from serve.atomic import atomic_path


def pyplot():
    import matplotlib  # ~1 s: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def plot_curves(curves: dict[int, pd.DataFrame], best: dict[int, int], path: Path, dpi: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, df in curves.items():
        color = f"C{k % 10}"
        axes[0].plot(df["epoch"], df["train_loss"], "--", color=color, alpha=0.7)
        axes[0].plot(df["epoch"], df["val_loss"], "-", color=color, label=f"fold {k}")
        axes[1].plot(df["epoch"], df["train_accuracy"], "--", color=color, alpha=0.7)
        axes[1].plot(df["epoch"], df["val_accuracy"], "-", color=color, label=f"fold {k}")
        b = df[df["epoch"] == best.get(k, -1)]
        if len(b):
            axes[1].plot(b["epoch"], b["val_accuracy"], "*", color=color, markersize=13)
            axes[0].plot(b["epoch"], b["val_loss"], "*", color=color, markersize=13)
    for ax, what in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.set_title(f"{what}: validation (solid), train (dashed), best epoch (star)")
    axes[1].legend(loc="lower right")
    save_png(fig, path, dpi)


def plot_confusion(conf: np.ndarray, names: list[str], path: Path, dpi: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(16, 6.5))
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    for ax, mat, title, fmt in ((axes[0], conf, "counts", "{:d}"),
                                (axes[1], norm, "row-normalised (recall)", "{:.2f}")):
        ax.imshow(mat if mat is norm else np.log1p(mat), cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"OOF confusion matrix, {title}")
        hi = mat.max()
        for i in range(len(names)):
            for j in range(len(names)):
                v = mat[i, j]
                ax.text(j, i, fmt.format(int(v) if fmt == "{:d}" else v), ha="center", va="center", fontsize=7,
                        color="white" if (v > 0.6 * hi) else "black")
    save_png(fig, path, dpi)


def plot_grid(images: np.ndarray, titles: list[str], path: Path, dpi: int, cols: int = 8) -> None:
    """Images in a grid with a title above each: one mosaic in one axes (a subplot per image costs
    matplotlib ~0.1 s each); grayscale images keep their own contrast, as imshow would give them."""
    plt = pyplot()
    n, (h, w, c) = len(images), (images.shape[1:] if len(images) else (8, 8, 1))
    rows, band, gap = max(-(-n // cols), 1), max(h // 3, 4), max(w // 10, 1)
    cell_h, cell_w = band + h + gap, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, c), 255, np.uint8)
    for i, img in enumerate(images):
        img = np.asarray(img, np.float32)
        if c == 1:  # stretch each grayscale image to its own range, as a single imshow would
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(img)
        r, k = divmod(i, cols)
        mosaic[r * cell_h + band:r * cell_h + band + h, k * cell_w:k * cell_w + w] = img.clip(0, 255).astype(np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.6, rows * 1.9))
    ax.imshow(mosaic.squeeze(-1) if c == 1 else mosaic, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest", aspect="auto")
    for i, title in enumerate(titles[:n]):
        r, k = divmod(i, cols)
        ax.text(k * cell_w + w / 2, r * cell_h + band - 0.5, title, ha="center", va="bottom", fontsize=6.5)
    ax.axis("off")
    save_png(fig, path, dpi)


def plot_cv_vs_lb(history: dict, path: Path, dpi: int) -> int:
    """OOF accuracy (x) against the public (Kaggle) or local score (y) of every file submitted or
    scored from this project; returns how many points were plotted."""
    points = [(h.get("oof_score", h["oof_accuracy"]),
               h["public_score"] if h.get("public_score") is not None else h["local_score"],
               h.get("public_score") is not None)
              for h in history.values() if h.get("oof_accuracy") is not None
              and (h.get("public_score") is not None or h.get("local_score") is not None)]
    if not points:
        return 0
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for kaggle, marker, label in ((True, "o", "Kaggle public score"), (False, "s", "local score (solution file)")):
        pts = [(x, y) for x, y, k in points if k == kaggle]
        if pts:
            ax.scatter([x for x, _ in pts], [y for _, y in pts], marker=marker, label=label)
    lo = min(min(x, y) for x, y, _ in points) - 0.005
    hi = max(max(x, y) for x, y, _ in points) + 0.005
    ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1, label="CV = LB")
    ax.set_xlabel("OOF score (CV)")
    ax.set_ylabel("leaderboard / held-out score")
    ax.set_title("CV against LB, every submission file")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path, dpi)
    return len(points)


def plot_filters(weights: np.ndarray, path: Path, dpi: int, most: int = 64) -> None:
    """The first convolution's filters `[out, in, kh, kw]`: RGB where it reads 3 channels, else the
    mean over its input channels in grey; each filter stretched to its own range."""
    plt = pyplot()
    w = weights[:most]
    w = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else w.mean(1, keepdims=True).transpose(0, 2, 3, 1)
    lo, hi = w.min((1, 2, 3), keepdims=True), w.max((1, 2, 3), keepdims=True)
    w = (w - lo) / np.maximum(hi - lo, 1e-12)
    cols = min(16, len(w))
    rows = -(-len(w) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(w):
            ax.imshow(w[i].squeeze(-1) if w.shape[-1] == 1 else w[i], cmap="gray", interpolation="nearest")
    fig.suptitle(f"first convolution: {len(weights)} filters of {weights.shape[2]}x{weights.shape[3]}"
                 + (f" (first {most})" if len(weights) > most else ""), fontsize=9)
    save_png(fig, path, dpi)


def plot_activations(image: np.ndarray, maps: list[tuple[str, np.ndarray]], path: Path, dpi: int,
                     channels: int = 8) -> None:
    """One image and the first `channels` feature maps `[C, H, W]` of each named layer, a row each."""
    plt = pyplot()
    fig, axes = plt.subplots(len(maps) + 1, channels, figsize=(channels * 1.1, (len(maps) + 1) * 1.25),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
    axes[0, 0].set_title("input", fontsize=7)
    for r, (name, fmap) in enumerate(maps, start=1):
        for c in range(min(channels, len(fmap))):
            axes[r, c].imshow(fmap[c], cmap="viridis", interpolation="nearest")
        axes[r, 0].set_title(f"{name} {tuple(fmap.shape)}", fontsize=7, loc="left")
    save_png(fig, path, dpi)


def plot_embedding(xy: np.ndarray, labels: np.ndarray, names: list[str], path: Path, dpi: int, title: str) -> None:
    """A 2-D embedding, one colour per class (a legend up to 20 classes)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for k, name in enumerate(names):
        pts = xy[labels == k]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=cmap(k % cmap.N), label=name, alpha=0.75)
    if len(names) <= 20:
        ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    save_png(fig, path, dpi)
