"""Which exported graph goes to Kaggle: the fastest one whose OOF score is within 0.1 point of FP32's.

    foldwise kaggle package            # submit.graph: auto (this choice) | fp32 | int8 | fp16

`export` scores every variant out-of-fold (models/export.json). On a CPU session INT8 is the fast
one (`foldwise bench infer`: about 1.8x FP32 here), on a GPU session FP16; each is taken only
when its OOF score lost at most 0.1 point (0.001) against FP32 in the metric's direction, and only
when export could run it at all. Otherwise FP32.
"""
from __future__ import annotations

import logging

from pipeline.metrics import METRICS
from serve.errors import UserError

_logger = logging.getLogger(__name__)
FILES = {"fp32": "ensemble.onnx", "int8": "ensemble_int8.onnx", "fp16": "ensemble_fp16.onnx"}
TOLERANCE = 0.001  # 0.1 point of the metric


def loss_vs_fp32(export: dict, variant: str) -> float | None:
    """How much worse (>= 0 is worse) `variant` scored than FP32 out-of-fold; None when unscored."""
    entry, fp32 = export.get(variant) or {}, export.get("fp32") or {}
    if variant == "fp32":
        return 0.0 if "oof_score" in fp32 else None
    if not entry.get("checked") or "oof_score" not in entry or "oof_score" not in fp32:
        return None
    metric = METRICS.get(fp32.get("metric", "accuracy"), METRICS["accuracy"])
    delta = entry["oof_score"] - fp32["oof_score"]
    return -delta if metric.higher_is_better else delta


def choose_graph(export: dict, gpu: bool, request: str = "auto") -> tuple[str, str]:
    """(variant, why): `request` itself unless 'auto'; auto: INT8 (CPU) or FP16 (GPU) when it is
    within TOLERANCE of FP32's OOF score, else FP32."""
    if request not in ("auto", *FILES):
        raise UserError(f"submit.graph: unknown graph '{request}' (auto, {', '.join(FILES)})")
    if request != "auto":
        loss = loss_vs_fp32(export, request)
        if loss is not None and loss > TOLERANCE:
            _logger.warning("submit.graph %s scored %.4f below FP32 out-of-fold (tolerance %.3f); using it as asked",
                            request, loss, TOLERANCE)
        return request, f"submit.graph: {request}"
    fast = "fp16" if gpu else "int8"
    loss = loss_vs_fp32(export, fast)
    device = "GPU" if gpu else "CPU"
    if loss is None:
        why = (export.get(fast) or {}).get("why_not", "not scored by export")
        return "fp32", f"{fast} is the fast graph on a {device} but has no OOF score ({why})"
    if loss > TOLERANCE:
        return "fp32", f"{fast} lost {100 * loss:.2f} points of OOF score against fp32 (tolerance {100 * TOLERANCE:.1f})"
    return fast, f"{fast}: the fast graph on a {device}, OOF score within {100 * TOLERANCE:.1f} point of fp32 ({-100 * loss:+.2f})"
