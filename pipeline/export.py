"""Stage `export`: the fold models as one ONNX graph that *is* the ensemble, checked against PyTorch.

    foldwise export              # reads params.yaml `export`, models/ensemble.json, models/folds/

`models/ensemble.onnx`: input `images` uint8 [N, C, H, W] (dynamic N); inside: scaling and
normalisation, every fold model, softmax, the ensemble weights; output `probs` [N, classes].
Its metadata carries what serving needs (classes, class names, image shape, id/target columns,
folds). Before the file is written, onnxruntime must reproduce PyTorch's probabilities on real
(OOF) images within rtol/atol; `models/export.json` records the figures.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from pipeline.config import ExportParams, load_section, params_hash
from pipeline.train import load_fold_model
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")


class EnsembleModel(nn.Module):
    """uint8 images -> weighted mean of the fold models' softmax probabilities."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(images), dim=1) for m in self.members])
        return (probs * self.weights).sum(dim=0)


def load_ensemble(ensemble_json: Path) -> tuple[EnsembleModel, dict]:
    spec = json.loads(ensemble_json.read_text())
    members = [load_fold_model(Path(d) / "model.pt")[0] for d in spec["fold_dirs"]]
    return EnsembleModel(members, spec["weights"]).eval(), spec


class ParityError(UserError):
    """onnxruntime does not reproduce PyTorch: the export is refused."""


def parity_check(onnx_path: Path, model: nn.Module, images_nhwc: np.ndarray, params: ExportParams) -> dict:
    import onnxruntime as ort  # noqa: PLC0415

    x = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x})[0]
    diff = np.abs(got - ref)
    ok = np.allclose(got, ref, rtol=params.rtol, atol=params.atol)
    result = {"rows": int(len(x)), "max_abs_diff": float(diff.max()),
              "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
              "rtol": params.rtol, "atol": params.atol, "passed": bool(ok)}
    if not ok:
        raise ParityError(f"{onnx_path}: onnxruntime differs from PyTorch by up to {diff.max():.3g} "
                          f"(rtol {params.rtol}, atol {params.atol}) on {len(x)} OOF images; export refused")
    return result


def run(params: ExportParams, prepared: Path = PREPARED, ensemble_json: Path = Path("models/ensemble.json"),
        onnx_path: Path = Path("models/ensemble.onnx"), report_path: Path = Path("models/export.json")) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    model, spec = load_ensemble(ensemble_json)
    h, w, c = meta["image_shape"]
    images = np.load(prepared / "train_images.npy", mmap_mode="r")
    rows = np.linspace(0, len(images) - 1, num=min(params.parity_rows, len(images))).astype(np.int64)
    sample = np.asarray(images[rows])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        example = torch.from_numpy(np.ascontiguousarray(sample[:2].transpose(0, 3, 1, 2)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(raw), input_names=["images"], output_names=["probs"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},),
                              opset_version=params.opset, dynamo=True, verbose=False)
        proto = onnx.load(str(raw))
        metadata = {
            "classes": json.dumps(meta["classes"]),
            "class_names": json.dumps(meta["class_names"]),
            "image_shape": json.dumps([h, w, c]),
            "input_layout": "NCHW uint8 0-255",
            "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"]),
            "id_column": meta["id_column"], "target_column": meta["target_column"],
            "folds": json.dumps(spec["folds"]), "ensemble_method": spec["method"],
            "weights": json.dumps(spec["weights"]),
            "params_hash": params_hash({"export": params.__dict__, "ensemble": spec}),
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "foldwise"
        onnx.checker.check_model(proto, full_check=True)
        checked = Path(tmp) / "ensemble.onnx"
        onnx.save(proto, str(checked))
        parity = parity_check(checked, model, sample, params)
        with atomic_path(onnx_path) as out:
            checked.replace(out)
    report = {"onnx": str(onnx_path), "bytes": onnx_path.stat().st_size, "folds": spec["folds"],
              "opset": params.opset, "export_seconds": round(time.perf_counter() - t0, 1), "parity": parity}
    write_json(report_path, report)
    _logger.info("%s: %d folds, parity max |Δp| %.2e on %d OOF images", onnx_path, len(spec["folds"]),
                 parity["max_abs_diff"], parity["rows"])
    return report


def main() -> None:
    run(load_section("export", ExportParams))
