"""The INT8 and FP16 graphs beside FP32, each scored out of fold.

    quantize_int8(fp32, int8, calibration_images)      # onnxruntime static QDQ, per-channel
    to_fp16(fp32, fp16)                                 # float16 inside, uint8 in / float32 out (GPUs)
    fp32 = oof_scores(own_fold_probs(fp32_path, x, row_folds, folds, tmp), y, metric, positive)
    score_variant(int8, x, y, row_folds, folds, fp32, fp32_own, metric, positive, tmp)

Every graph is scored out of fold: each training row by the fold model that did not train on it,
that fold's part of the graph alone (pipeline/export/oof.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from pipeline.evaluation.metrics import Metric
from pipeline.export.oof import own_fold_probs
from pipeline.export.unfold import PATCHES_CONV, unfold_narrow_stems
from serve.errors import first_line


def oof_scores(own: np.ndarray, labels: np.ndarray, metric: Metric, positive: int | None = None) -> dict:
    """The metric and accuracy of out-of-fold probabilities `own` [N, C] (each row by its own fold)."""
    return {"metric": metric.name, "oof_score": round(metric.score(labels, own, positive), 6),
            "oof_accuracy": round(float((own.argmax(1) == labels).mean()), 6)}


def score_variant(path: Path, x: np.ndarray, y: np.ndarray, row_folds: np.ndarray, fold_order: list[int],
                  fp32: dict, fp32_own: np.ndarray, metric: Metric, positive: int | None, work_dir: Path) -> dict:
    """OOF score of a variant graph and its change from FP32 on the same rows (or why it could not
    be run here); the probability differences are of the out-of-fold probabilities."""
    entry: dict = {"bytes": path.stat().st_size}
    try:
        own = own_fold_probs(path, x, row_folds, fold_order, work_dir)
    except Exception as exc:  # noqa: BLE001  (onnxruntime has no CPU kernel for some fp16 ops)
        return {**entry, "checked": False,
                "why_not": f"onnxruntime CPU could not run it: {first_line(exc)}"}
    scored = oof_scores(own, y, metric, positive)
    return {**entry, "checked": True, "rows": int(len(y)), **scored,
            "oof_score_delta": round(scored["oof_score"] - fp32["oof_score"], 6),
            "oof_accuracy_delta": round(scored["oof_accuracy"] - fp32["oof_accuracy"], 6),
            "max_abs_diff_vs_fp32": float(np.abs(own - fp32_own).max()),
            "argmax_agreement_vs_fp32": float((own.argmax(1) == fp32_own.argmax(1)).mean())}


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
    """Static QDQ quantisation: uint8 activations, int8 per-channel weights with 7-bit range, after
    grayscale stems become 1x1 convs over shared patches (pipeline/export/unfold.py); the conv that cuts
    the patches stays in FP32.

    reduce_range stays on: on CPUs without VNNI (AVX2 only) onnxruntime's u8s8 kernels use
    vpmaddubsw, whose 16-bit sums saturate with full 8-bit weights (measured here: argmax agreement
    with FP32 fell to 87.5%); with VNNI the 7-bit weights cost no speed. QDQ and QOperator formats
    run the same fused kernels after onnxruntime's graph optimisation (measured equal).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, unfolded = dst.with_name(dst.stem + "_pre.onnx"), dst.with_name(dst.stem + "_unfolded.onnx")
    model = onnx.load(str(src))
    if unfold_narrow_stems(model):
        onnx.save(model, str(unfolded))
        src = unfolded
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True, op_types_to_quantize=INT8_OP_TYPES,
                    nodes_to_exclude=[n.name for n in model.graph.node if n.name.endswith(PATCHES_CONV)])
    pre.unlink()
    unfolded.unlink(missing_ok=True)


def to_fp16(src: Path, dst: Path) -> None:
    from onnxconverter_common import float16

    # Cast nodes stay as they are: converting them breaks the uint8 -> float cast at the input.
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                             op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])
    onnx.save(model, str(dst))
