"""The ensemble as one ONNX graph: torch.onnx (dynamo) export, metadata, onnx.checker.

    export_onnx(model, example_uint8_nchw, Path("models/ensemble.onnx"), graph_metadata(meta, spec, phash))

`models/ensemble.onnx`: input `images` uint8 [N, C, H, W] (dynamic N). Inside: scaling and
normalisation, every fold model, the TTA views, softmax, the chosen combination and its temperature
(pipeline/modeling/ensemble.py). Outputs `probs` [N, classes] and `fold_probs` [N, folds, classes]
(each fold's views combined), the latter so that any exported graph can be scored out-of-fold.
Metadata (everything serving needs, so the graph is the whole handoff): classes, class names,
input layout, normalisation, image shape and spec, id/target columns, submission kind, metric,
folds, views, method, temperature, params hash. `onnx.checker` full check.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from pipeline.evaluation.metrics import from_meta
from serve.submission import SubmissionSpec


def graph_metadata(meta: dict, spec: dict, phash: str) -> dict[str, str]:
    """The graph's metadata from data/prepared/meta.json and models/ensemble.json."""
    h, w, c = meta["image_shape"]
    return {
        "classes": json.dumps(meta["classes"]), "class_names": json.dumps(meta["class_names"]),
        "image_shape": json.dumps([h, w, c]), "input_layout": "NCHW uint8 0-255",
        "normalization": json.dumps({"scale": 1 / 255, "mean": meta["mean"], "std": meta["std"]}),
        "id_column": meta["id_column"], "target_column": meta["target_column"],
        "submission": json.dumps(meta.get("submission") or SubmissionSpec.labels(
            meta["classes"], meta["id_column"], meta["target_column"]).to_dict()),
        "metric": json.dumps(from_meta(meta).to_dict()), "positive": json.dumps(meta.get("positive")),
        "image": json.dumps(meta.get("image") or {"height": h, "width": w, "channels": c}),
        "id_form": meta.get("id_form", "name"),
        "folds": json.dumps(spec["folds"]), "views": json.dumps(spec["views"]),
        "ensemble_method": spec["method"], "combine": spec["combine"],
        "view_weights": json.dumps(spec["view_weights"]), "fold_weights": json.dumps(spec["fold_weights"]),
        "temperature": json.dumps(spec.get("temperature", 1.0)),
        "params_hash": phash,
    }


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str],
                opset: int = 18) -> None:
    """torch.onnx (dynamo) export with a dynamic batch axis, then metadata and a full check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["probs", "fold_probs"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},),
                          opset_version=opset, dynamo=True, verbose=False)
    stamp(path, metadata)


def stamp(path: Path, metadata: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "foldwise"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
