"""How much a leaderboard score can be trusted: the binomial (Wilson) interval of an accuracy.

    from pipeline.evaluation.confidence import wilson, compare_to_oof
    wilson(0.9313, 3000)                 # (0.9217, 0.9398): 95% interval of an accuracy on 3,000 rows
    compare_to_oof(0.9313, 3000, 0.9259) # '95% CI 0.9217-0.9398 on 3000 rows (±0.91 pts); OOF 0.9259 is inside
                                         #  it: the gap is noise'

A public leaderboard scores a few thousand rows; the OOF accuracy scores every training row. An
accuracy p on n rows has a standard error of sqrt(p(1-p)/n), 0.47 points at n = 3,000 and
p = 0.93 (95% interval ±0.9 points), so a public gain smaller than the interval says nothing. Used by the report and by
`foldwise submissions` (accuracy only: the interval is for a proportion of correct rows).
`score_interval` gives any metric's interval on a set of rows (Wilson for accuracy, else a
bootstrap): `foldwise ladder` puts it beside each rung's score.
"""
from __future__ import annotations

import math

import numpy as np


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion p observed on n rows."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = min(max(p, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 or 1 the bound is exactly 0 or 1 (the float sum lands a rounding error short of it)
    lo = 0.0 if p == 0.0 else max(0.0, centre - half)
    hi = 1.0 if p == 1.0 else min(1.0, centre + half)
    return lo, hi


def compare_to_oof(score: float, n: int | None, oof: float | None) -> str:
    """One phrase: the score's 95% interval and whether the OOF accuracy lies inside it."""
    if not n:
        return "n unknown: no interval (set submit.public_rows)"
    lo, hi = wilson(score, n)
    text = f"95% CI {lo:.4f}-{hi:.4f} on {n} rows (±{50 * (hi - lo):.2f} pts)"
    if oof is None:
        return text
    if lo <= oof <= hi:
        return f"{text}; OOF {oof:.4f} is inside it: the gap is noise"
    return f"{text}; OOF {oof:.4f} is outside it"


def oof_vs_public_rows(oof: float | None, n_oof: int | None, scores: list[tuple[str, float, int | None]]) -> list[dict]:
    """Table rows (what, score, rows, 95% CI, vs OOF) for the OOF accuracy and each public/local score."""
    rows = []
    if oof is not None:
        ci = wilson(oof, n_oof) if n_oof else None
        rows.append({"score": "OOF accuracy (cross-validated)", "accuracy": oof, "rows": n_oof,
                     "95% CI": f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "", "vs OOF": ""})
    for name, value, n in scores:
        ci = wilson(value, n) if n else None
        rows.append({"score": name, "accuracy": value, "rows": n,
                     "95% CI": f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "n unknown",
                     "vs OOF": "" if oof is None else (f"{100 * (value - oof):+.2f} pts"
                                                       + ("" if ci is None else (" (noise: OOF inside CI)"
                                                                                 if ci[0] <= oof <= ci[1]
                                                                                 else " (outside CI)")))})
    return rows


def score_interval(metric, labels: np.ndarray, probs: np.ndarray, positive: int | None = None,
                   resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% interval of `metric` on these rows: Wilson's for accuracy (a proportion), else the
    percentile bootstrap over rows (`resamples` draws, seeded: the same rows give the same interval)."""
    if metric.name == "accuracy":
        return wilson(float((probs.argmax(1) == labels).mean()), len(labels))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        try:
            draws.append(metric.score(labels[idx], probs[idx], positive))
        except ValueError:  # a draw with one class left (ROC AUC): not scorable, skip it
            continue
    if not draws:
        return float("nan"), float("nan")
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)
