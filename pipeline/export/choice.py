"""Which exported graph runs where, chosen by OOF score and measured speed, never by a public score.

    choose_predict_graph(export_report, tolerance=0.001)   # the predict stage: fastest graph within tolerance
    choose_graph(export_report, gpu=False)                 # a code competition's notebook (submit.graph: auto)

`export` scores every graph out-of-fold and times them side by side (models/export.json). predict
takes the fastest graph on this machine whose OOF score lost at most `export.predict_tolerance`
against FP32. For Kaggle the machine is not this one: INT8 on a CPU session (`foldwise bench
infer`: about 1.8x FP32 here), FP16 on a GPU session, each only when its OOF score lost at most
0.1 point (0.001) against FP32 in the metric's direction and export could run it at all; else FP32.
"""
from __future__ import annotations

import logging

from pipeline.core.paths import GRAPH_FILES, STUDENT_FILES
from pipeline.evaluation.metrics import METRICS
from serve.errors import UserError

_logger = logging.getLogger(__name__)
TOLERANCE = 0.001  # 0.1 point of the metric
FULL_PRECISION = ("fp32", "student")  # the graphs whose OOF score sets predict's bar (the variants are judged by it)


def loss_vs_fp32(export: dict, variant: str) -> float | None:
    """How much worse (>= 0 is worse) `variant` scored than FP32 out-of-fold; None when unscored."""
    entry, fp32 = export.get(variant) or {}, export.get("fp32") or {}
    if variant == "fp32":
        return 0.0 if "oof_score" in fp32 else None
    if not entry.get("checked") or "oof_score" not in entry or "oof_score" not in fp32:
        return None
    name = fp32.get("metric", "accuracy")
    metric = METRICS[name] if name in METRICS else METRICS["accuracy"]  # a record of a metric since removed
    delta = entry["oof_score"] - fp32["oof_score"]
    return -delta if metric.higher_is_better else delta


def choose_graph(export: dict, gpu: bool, request: str = "auto") -> tuple[str, str]:
    """(variant, why): `request` itself unless 'auto'; auto: INT8 (CPU) or FP16 (GPU) when it is
    within TOLERANCE of FP32's OOF score, else FP32."""
    if request not in ("auto", *GRAPH_FILES, *STUDENT_FILES):
        raise UserError(f"submit.graph: unknown graph '{request}' (auto, {', '.join([*GRAPH_FILES, *STUDENT_FILES])})")
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
        return "fp32", (f"{fast} lost {100 * loss:.2f} points of OOF score against fp32 "
                        f"(tolerance {100 * TOLERANCE:.1f})")
    return fast, (f"{fast}: the fast graph on a {device}, OOF score within {100 * TOLERANCE:.1f} point of fp32 "
                  f"({-100 * loss:+.2f})")


def choose_predict_graph(report: dict, tolerance: float) -> dict:
    """The fastest graph whose OOF score is within `tolerance` of the best full-precision graph's in
    the metric's direction: the ensemble's FP32 and, when export.json has it, the distilled
    student's (a variant's own noise never moves the bar). Candidates: those two and their INT8 and
    FP16 variants; the best full-precision graph qualifies, so there is always one."""
    speed = report["speed"]["images_per_second"]
    loss = {g: loss_vs_fp32(report, g) for g in speed}
    full = [g for g in FULL_PRECISION if g in speed and loss[g] is not None]
    reference = min(full, key=lambda g: loss[g]) if full else "fp32"
    top = loss[reference] if full else 0.0
    ok = [g for g in speed if (g == reference and not full)
          or (loss[g] is not None and loss[g] - top <= tolerance + 1e-12)]
    best = max(ok, key=lambda g: speed[g])
    left_out = [f"{g} (OOF {-100 * (loss[g] - top):+.2f} pts)" for g in speed if g not in ok and loss[g] is not None]
    reason = (f"fastest graph within {100 * tolerance:.2f} pt OOF of {reference} on {report['speed']['provider']}: "
              f"{speed[best]:.0f} images/s ({report['speed']['vs_fp32'][best]:.2f}x fp32), "
              f"OOF {-100 * ((loss[best] or 0.0) - top):+.2f} pts") + (f"; too inaccurate: {', '.join(left_out)}"
                                                             if left_out else "")
    return {"graph": best, "file": GRAPH_FILES.get(best) or report[best]["file"],
            "provider": report["speed"]["provider"], "tolerance": tolerance, "reason": reason}
