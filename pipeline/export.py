"""Stage `export`: the ensemble as one ONNX graph, parity-gated, plus FP16 and INT8 variants.

    foldwise export              # reads params.yaml `export`, models/ensemble.json, models/folds/

`models/ensemble.onnx`: input `images` uint8 [N, C, H, W] (dynamic N). Inside: scaling and
normalisation, every fold model, the TTA views, softmax and the chosen combination. Outputs
`probs` [N, classes] and `fold_probs` [N, folds, classes] (each fold's views combined), the
latter so that any exported graph can be scored out-of-fold: each training row by its own fold.
Metadata: classes, class names, input layout, normalisation, image shape, id/target columns,
folds, views, method, params hash. `onnx.checker` full check.

Gate: on real OOF images, onnxruntime must match PyTorch (max |Δprob| <= max_abs_diff, within
rtol/atol, identical argmax) or the stage fails and writes nothing. Variants:
`ensemble_fp16.onnx` (float16 inside, uint8 in / float32 out; for GPUs) and `ensemble_int8.onnx`
(onnxruntime static quantisation, QDQ, per-channel, calibrated on training images; for CPUs),
each scored out-of-fold next to FP32 in `models/export.json`.
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
import pandas as pd
import torch
import torch.nn as nn

from pipeline.config import ExportParams, load_section, params_hash
from pipeline.metrics import Metric, from_meta
from pipeline.models import fuse_for_inference, load_fold_model
from pipeline.tta import VIEWS
from serve.atomic import atomic_path, write_json
from serve.engine import run_graph
from serve.errors import UserError
from serve.submission import SubmissionSpec

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")


class EnsembleModel(nn.Module):
    """uint8 images -> (ensemble probabilities [N, C], per-fold probabilities [N, K, C])."""

    def __init__(self, members: Sequence[nn.Module], views: Sequence[str], view_weights: Sequence[float],
                 fold_weights: Sequence[float], combine: str) -> None:
        super().__init__()
        if combine not in ("mean_prob", "mean_logit"):
            raise ValueError(f"unknown combine rule {combine}")
        self.members = nn.ModuleList(members)
        self.views = list(views)
        self.combine = combine
        self.register_buffer("view_weights", torch.tensor(view_weights, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("fold_weights", torch.tensor(fold_weights, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        batch = torch.cat([VIEWS[v](images) for v in self.views]) if len(self.views) > 1 else images
        per_fold = []
        for member in self.members:
            logits = member(batch).float().reshape(len(self.views), n, -1)  # [V, N, C]
            if self.combine == "mean_logit":
                per_fold.append((logits * self.view_weights).sum(0))
            else:
                per_fold.append((torch.softmax(logits, dim=-1) * self.view_weights).sum(0))
        stacked = torch.stack(per_fold)  # [K, N, C]: logits (mean_logit) or probabilities (mean_prob)
        if self.combine == "mean_logit":
            probs = torch.softmax((stacked * self.fold_weights).sum(0), dim=-1)
            fold_probs = torch.softmax(stacked, dim=-1)
        else:
            probs = (stacked * self.fold_weights).sum(0)
            fold_probs = stacked
        return probs, fold_probs.transpose(0, 1)


def load_ensemble(ensemble_json: Path) -> tuple[EnsembleModel, dict]:
    spec = json.loads(ensemble_json.read_text())
    members = [fuse_for_inference(load_fold_model(Path(d) / "model.pt")[0]) for d in spec["fold_dirs"]]
    model = EnsembleModel(members, spec["views"], spec["view_weights"], spec["fold_weights"], spec["combine"])
    return model.eval(), spec


class ParityError(UserError):
    """onnxruntime does not reproduce PyTorch: the export is refused."""


def parity_check(onnx_path: Path, model: nn.Module, images_nchw: np.ndarray, params: ExportParams) -> dict:
    with torch.inference_mode():
        ref_probs, ref_folds = (t.numpy() for t in model(torch.from_numpy(images_nchw)))
    got_probs, got_folds = run_graph(onnx_path, images_nchw)
    diff = max(float(np.abs(got_probs - ref_probs).max()), float(np.abs(got_folds - ref_folds).max()))
    same_argmax = bool((got_probs.argmax(1) == ref_probs.argmax(1)).all())
    close = bool(np.allclose(got_probs, ref_probs, rtol=params.rtol, atol=params.atol))
    result = {"rows": int(len(images_nchw)), "max_abs_diff": diff, "argmax_identical": same_argmax,
              "max_abs_diff_limit": params.max_abs_diff, "rtol": params.rtol, "atol": params.atol,
              "passed": bool(close and same_argmax and diff <= params.max_abs_diff)}
    if not result["passed"]:
        raise ParityError(f"{onnx_path.name}: onnxruntime differs from PyTorch by up to {diff:.3g} (limit "
                          f"{params.max_abs_diff}, rtol {params.rtol}, atol {params.atol}, argmax identical: "
                          f"{same_argmax}) on {len(images_nchw)} OOF images; export refused")
    return result


def oof_scores(fold_probs: np.ndarray, probs: np.ndarray, row_folds: np.ndarray, labels: np.ndarray,
               fold_order: list[int], metric: Metric, positive: int | None = None) -> dict:
    """The metric and accuracy of each row's own fold (true OOF) and, for reference, the full
    ensemble's accuracy on those (training) rows."""
    col = np.array([fold_order.index(f) for f in row_folds])
    own = fold_probs[np.arange(len(col)), col]
    return {"metric": metric.name, "oof_score": round(metric.score(labels, own, positive), 6),
            "oof_accuracy": round(float((own.argmax(1) == labels).mean()), 6),
            "ensemble_accuracy_on_train_rows": round(float((probs.argmax(1) == labels).mean()), 6)}


def score_variant(path: Path, x: np.ndarray, y: np.ndarray, row_folds: np.ndarray, fold_order: list[int],
                  fp32: dict, fp32_probs: np.ndarray, metric: Metric, positive: int | None) -> dict:
    """OOF accuracy of a variant graph and its change from FP32 (or why it could not be run here)."""
    entry: dict = {"bytes": path.stat().st_size}
    try:
        probs, fold_probs = run_graph(path, x)
    except Exception as exc:  # noqa: BLE001  (onnxruntime has no CPU kernel for some fp16 ops)
        return {**entry, "checked": False,
                "why_not": f"onnxruntime CPU could not run it: {str(exc).splitlines()[0][:200]}"}
    scored = oof_scores(fold_probs, probs, row_folds, y, fold_order, metric, positive)
    return {**entry, "checked": True, "rows": int(len(y)), **scored,
            "oof_score_delta": round(scored["oof_score"] - fp32["oof_score"], 6),
            "oof_accuracy_delta": round(scored["oof_accuracy"] - fp32["oof_accuracy"], 6),
            "max_abs_diff_vs_fp32": float(np.abs(probs - fp32_probs).max()),
            "argmax_agreement_vs_fp32": float((probs.argmax(1) == fp32_probs.argmax(1)).mean())}


class _Calibration:
    """onnxruntime CalibrationDataReader over uint8 training images."""

    def __init__(self, images_nchw: np.ndarray, batch_size: int = 64) -> None:
        self.batches = iter([{"images": images_nchw[i:i + batch_size]} for i in range(0, len(images_nchw), batch_size)])

    def get_next(self):
        return next(self.batches, None)


# Quantised op types. Relu and MaxPool matter as much as Conv: with Conv alone every conv output
# went QLinearConv -> DequantizeLinear -> (float Relu, MaxPool) -> QuantizeLinear, and those
# conversions took ~23% of the int8 graph's time. With Relu quantised, onnxruntime drops it (the
# conv's output range starts at 0) and MaxPool runs on uint8, so the chain stays int8 (NHWC) from
# the first conv to the head. The TTA flip and the uint8 -> float normalisation sit before the first
# QuantizeLinear, on the uint8 input, and cost < 1% (measured; folding them into the first conv's
# input quantisation gained nothing).
INT8_OP_TYPES = ["Conv", "MatMul", "Gemm", "Relu", "MaxPool"]


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Static QDQ quantisation: uint8 activations, int8 per-channel weights with 7-bit range.

    reduce_range stays on: on CPUs without VNNI (AVX2 only) onnxruntime's u8s8 kernels use
    vpmaddubsw, whose 16-bit sums saturate with full 8-bit weights (measured here: argmax agreement
    with FP32 fell to 87.5%); with VNNI the 7-bit weights cost no speed. QDQ and QOperator formats
    run the same fused kernels after onnxruntime's graph optimisation (measured equal).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    pre = dst.with_name(dst.stem + "_pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True, op_types_to_quantize=INT8_OP_TYPES)
    pre.unlink()


def measure_speed(paths: dict[str, Path], images_nchw: np.ndarray, batch: int, rounds: int = 3,
                  min_seconds: float = 0.4) -> dict:
    """images/s of each graph with serve's engine (its provider and threads), on the same batches,
    interleaved rounds with alternating order (median), so load drift hits every graph alike."""
    from serve.engine import Engine  # noqa: PLC0415

    engines = {name: Engine(path, provider="auto") for name, path in paths.items()}
    x = images_nchw[:batch]
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.predict(x)  # warm-up
    for r in range(rounds):
        for name, engine in (list(engines.items()) if r % 2 == 0 else list(engines.items())[::-1]):
            done, t0 = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - t0 < min_seconds:
                engine.predict(x)
                done += len(x)
            rates[name].append(done / (time.perf_counter() - t0))
    speed = {name: round(float(np.median(v)), 1) for name, v in rates.items()}
    providers = {engine.provider for engine in engines.values()}
    return {"provider": providers.pop() if len(providers) == 1 else "mixed", "batch": int(len(x)),
            "images_per_second": speed,
            "vs_fp32": {name: round(v / speed["fp32"], 3) for name, v in speed.items()}}


def choose_predict_graph(report: dict, tolerance: float) -> dict:
    """The fastest graph whose OOF score is within `tolerance` of FP32's in the metric's direction
    (FP32 itself always qualifies)."""
    from pipeline.kaggle.graph import loss_vs_fp32  # noqa: PLC0415

    speed = report["speed"]["images_per_second"]
    loss = {g: loss_vs_fp32(report, g) for g in speed}
    ok = [g for g in speed if g == "fp32" or (loss[g] is not None and loss[g] <= tolerance + 1e-12)]
    best = max(ok, key=lambda g: speed[g])
    left_out = [f"{g} (OOF {-100 * loss[g]:+.2f} pts)" for g in speed if g not in ok and loss[g] is not None]
    reason = (f"fastest graph within {100 * tolerance:.2f} pt OOF of fp32 on {report['speed']['provider']}: "
              f"{speed[best]:.0f} images/s ({report['speed']['vs_fp32'][best]:.2f}x fp32), "
              f"OOF {-100 * (loss[best] or 0.0):+.2f} pts") + (f"; too inaccurate: {', '.join(left_out)}" if left_out else "")
    return {"graph": best, "file": f"ensemble{'' if best == 'fp32' else '_' + best}.onnx",
            "provider": report["speed"]["provider"], "tolerance": tolerance, "reason": reason}


def to_fp16(src: Path, dst: Path) -> None:
    from onnxconverter_common import float16  # noqa: PLC0415

    # Cast nodes stay as they are: converting them breaks the uint8 -> float cast at the input.
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                             op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])
    onnx.save(model, str(dst))


def export_onnx(model: EnsembleModel, example: torch.Tensor, path: Path, metadata: dict[str, str],
                opset: int = 18) -> None:
    """torch.onnx (dynamo) export with a dynamic batch axis, then metadata and a full check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["probs", "fold_probs"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},),
                          opset_version=opset, dynamo=True, verbose=False)
    _stamp(path, metadata)


def _stamp(path: Path, metadata: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "foldwise"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def run(params: ExportParams, prepared: Path = PREPARED, ensemble_json: Path = Path("models/ensemble.json"),
        out_dir: Path = Path("models"), report_path: Path = Path("models/export.json")) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    metric, positive = from_meta(meta), meta.get("positive")
    model, spec = load_ensemble(ensemble_json)
    images = np.load(prepared / "train_images.npy", mmap_mode="r")
    labels = np.load(prepared / "train_labels.npy")
    row_folds = pd.read_csv(prepared / "folds.csv")["fold"].to_numpy()
    rng = np.random.default_rng(0)
    trained = np.flatnonzero(np.isin(row_folds, spec["folds"]))
    eval_rows = np.sort(rng.choice(trained, size=min(params.eval_rows, len(trained)), replace=False))
    parity_rows = eval_rows[:params.parity_rows]
    calib_rows = np.sort(rng.choice(len(images), size=min(params.calibration_rows, len(images)), replace=False))
    nchw = lambda rows: np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2))  # noqa: E731
    h, w, c = meta["image_shape"]
    metadata = {
        "classes": json.dumps(meta["classes"]), "class_names": json.dumps(meta["class_names"]),
        "image_shape": json.dumps([h, w, c]), "input_layout": "NCHW uint8 0-255",
        "normalization": json.dumps({"scale": 1 / 255, "mean": meta["mean"], "std": meta["std"]}),
        "id_column": meta["id_column"], "target_column": meta["target_column"],
        "submission": json.dumps(meta.get("submission") or SubmissionSpec.labels(
            meta["classes"], meta["id_column"], meta["target_column"]).to_dict()),
        "metric": json.dumps(metric.to_dict()), "positive": json.dumps(positive),
        "image": json.dumps(meta.get("image") or {"height": h, "width": w, "channels": c}),
        "id_form": meta.get("id_form", "name"),
        "folds": json.dumps(spec["folds"]), "views": json.dumps(spec["views"]),
        "ensemble_method": spec["method"], "combine": spec["combine"],
        "view_weights": json.dumps(spec["view_weights"]), "fold_weights": json.dumps(spec["fold_weights"]),
        "params_hash": params_hash({"export": params.__dict__, "ensemble": spec}),
    }
    t0 = time.perf_counter()
    report: dict = {"folds": spec["folds"], "views": spec["views"], "method": spec["method"], "opset": params.opset}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp_dir:
        tmp = Path(tmp_dir)
        fp32 = tmp / "ensemble.onnx"
        export_onnx(model, torch.from_numpy(nchw(parity_rows[:2])), fp32, {**metadata, "precision": "fp32"},
                    params.opset)
        report["parity"] = parity_check(fp32, model, nchw(parity_rows), params)
        x_eval, y_eval, f_eval = nchw(eval_rows), labels[eval_rows], row_folds[eval_rows]
        probs, fold_probs = run_graph(fp32, x_eval)
        report["fp32"] = {"bytes": fp32.stat().st_size, "rows": int(len(eval_rows)),
                          **oof_scores(fold_probs, probs, f_eval, y_eval, spec["folds"], metric, positive)}
        int8, fp16 = tmp / "ensemble_int8.onnx", tmp / "ensemble_fp16.onnx"
        quantize_int8(fp32, int8, nchw(calib_rows))
        _stamp(int8, {**metadata, "precision": "int8 (QDQ, per-channel, static)"})
        scored = (x_eval, y_eval, f_eval, spec["folds"], report["fp32"], probs, metric, positive)
        report["int8"] = score_variant(int8, *scored)
        to_fp16(fp32, fp16)
        _stamp(fp16, {**metadata, "precision": "fp16"})
        report["fp16"] = score_variant(fp16, *scored)
        report["speed"] = measure_speed({"fp32": fp32, **{g: p for g, p in (("int8", int8), ("fp16", fp16))
                                                            if report[g].get("checked")}},
                                        x_eval, params.speed_batch,
                                        min_seconds=params.speed_seconds)
        report["predict_graph"] = choose_predict_graph(report, params.predict_tolerance)
        outputs = {fp32: out_dir / "ensemble.onnx", int8: out_dir / "ensemble_int8.onnx",
                   fp16: out_dir / "ensemble_fp16.onnx"}
        for src, dst in outputs.items():
            with atomic_path(dst) as final:
                src.replace(final)
    report["export_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(report_path, report)
    _logger.info("ensemble.onnx: %d folds x %d views, parity max |Δp| %.1e on %d OOF images; OOF %s "
                 "fp32 %.4f%s", len(spec["folds"]), len(spec["views"]), report["parity"]["max_abs_diff"],
                 report["parity"]["rows"], metric.name, report["fp32"]["oof_score"],
                 f", int8 {report['int8'].get('oof_score', float('nan')):.4f}")
    _logger.info("predict will use %s: %s", report["predict_graph"]["file"], report["predict_graph"]["reason"])
    return report


def main() -> None:
    run(load_section("export", ExportParams))
