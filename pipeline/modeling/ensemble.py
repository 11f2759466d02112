"""The ensemble as models: its params, the OOF logits of every fold under every TTA view, and the
torch module of the chosen recipe (what `export` turns into one ONNX graph).

    logits = oof_view_logits(paths.trained_folds(paths.FOLDS, 5), images, ["none", "hflip"], 10, 1024)
    model, spec = load_ensemble(paths.ENSEMBLE_JSON)     # uint8 images -> (probs, fold_probs)

The rules themselves (how views and folds combine, which candidate wins) are numpy, in
pipeline/evaluation/ensemble.py; EnsembleModel computes the same rules in torch ops that export.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from pipeline.core import paths
from pipeline.evaluation.ensemble import COMBINE, METHODS
from pipeline.modeling.classifier import load_fold_model
from pipeline.modeling.nets import fuse_for_inference
from pipeline.modeling.tta import VIEWS

_logger = logging.getLogger(__name__)


@dataclass
class EnsembleParams:
    """params.yaml `ensemble`: candidates scored on OOF predictions; the best OOF score (then log-loss) is exported."""
    tta: list[str] = field(default_factory=lambda: ["hflip"])  # views besides the plain image
    methods: list[str] = field(default_factory=lambda: ["mean_prob", "mean_logit", "weighted"])
    calibrate: Literal["auto", "off"] = "auto"  # auto: a temperature where the metric scores it, kept if it wins OOF
    batch_size: int = 1024

    def validate(self, err) -> None:
        listed = [v for v in VIEWS if v != "none"]
        for i, view in enumerate(self.tta):
            if view not in listed:
                raise err(f"unknown view '{view}' (views: {', '.join(listed)})", f"tta[{i}]")
        if len(set(self.tta)) != len(self.tta):
            raise err(f"views listed twice: {self.tta}", "tta")
        for i, method in enumerate(self.methods):
            if method not in METHODS:
                raise err(f"unknown method '{method}' ({', '.join(METHODS)})", f"methods[{i}]")
        if not self.methods:
            raise err("must list at least one method", "methods")
        if self.batch_size < 1:
            raise err(f"must be at least 1, got {self.batch_size}", "batch_size")


def oof_view_logits(dirs: dict[int, Path], images: np.ndarray, views: list[str], n_classes: int,
                    batch_size: int) -> np.ndarray:
    """Logits `[V, N, C]` of the training rows: each row by its own fold's model (`dirs`: fold ->
    folder), under each view; NaN for rows of folds not trained."""
    out = np.full((len(views), len(images), n_classes), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for k, d in dirs.items():
            model, _ = load_fold_model(paths.FoldFiles(d).model)
            rows = np.load(paths.FoldFiles(d).oof_rows)
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                x = torch.from_numpy(np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2)))
                for v, name in enumerate(views):
                    out[v, idx] = model(VIEWS[name](x)).float().numpy()
            _logger.info("fold %d: OOF logits for %d rows under views %s", k, len(rows), views)
    return out


class EnsembleModel(nn.Module):
    """uint8 images -> (ensemble probabilities [N, C], per-fold probabilities [N, K, C])."""

    def __init__(self, members: Sequence[nn.Module], views: Sequence[str], view_weights: Sequence[float],
                 fold_weights: Sequence[float], combine: str, temperature: float = 1.0) -> None:
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"unknown combine rule {combine}")
        self.members = nn.ModuleList(members)
        self.views = list(views)
        self.combine = combine
        self.temperature = float(temperature)  # the ensemble stage's calibration (1.0: none)
        self.register_buffer("view_weights", torch.tensor(view_weights, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("fold_weights", torch.tensor(fold_weights, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        views = [VIEWS[v](images) for v in self.views]
        batch = torch.cat(views) if len(views) > 1 else views[0]
        combined, fold_probs = [], []
        for member in self.members:
            logits = member(batch).float().reshape(len(self.views), n, -1)  # [V, N, C]
            if self.combine == "mean_logit":
                combined.append((logits * self.view_weights).sum(0))
                probs = torch.softmax(combined[-1], dim=-1)
            else:
                probs = (torch.softmax(logits, dim=-1) * self.view_weights).sum(0)
                combined.append(probs)
            # each fold's column is final where it is made: fold k's part of the graph alone yields
            # fold_probs[:, k] (pipeline/export/oof.py scores a graph out of fold that way)
            fold_probs.append(self._temper(probs).unsqueeze(1))  # [N, 1, C]
        stacked = torch.stack(combined)  # [K, N, C]: logits (mean_logit) or probabilities (mean_prob)
        weighted = (stacked * self.fold_weights).sum(0)
        probs = torch.softmax(weighted, dim=-1) if self.combine == "mean_logit" else weighted
        return self._temper(probs), torch.cat(fold_probs, dim=1)

    def _temper(self, probs: torch.Tensor) -> torch.Tensor:
        """softmax(log p / T), as pipeline/evaluation/calibration.py temper(); T = 1: p itself."""
        if self.temperature == 1.0:
            return probs
        return torch.softmax(torch.log(probs.clamp_min(1e-12)) / self.temperature, dim=-1)


def load_ensemble(ensemble_json: Path) -> tuple[EnsembleModel, dict]:
    """The ensemble stage's chosen recipe as one module of the fold models (BNs fused for inference)."""
    spec = json.loads(ensemble_json.read_text())
    members = [fuse_for_inference(load_fold_model(paths.FoldFiles(Path(d)).model)[0]) for d in spec["fold_dirs"]]
    model = EnsembleModel(members, spec["views"], spec["view_weights"], spec["fold_weights"], spec["combine"],
                          spec.get("temperature", 1.0))
    return model.eval(), spec
