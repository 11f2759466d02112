"""The tuning plots the report shows (tune/report/*.png), drawn with Optuna's matplotlib visualizations.

    drawn = draw(study, summary, Path("tune/report"))    # {"history": "history.png", ...}

history: each trial's value and the best so far; importances: fANOVA parameter importances;
intermediate: every trial's per-epoch validation score (pruned trials end early);
confirmation: tuned against current params on each confirmation fold (its best epoch, no TTA) and
pooled as the ensemble stage scores it (its methods and TTA views).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from serve.atomic import atomic_path

_logger = logging.getLogger(__name__)


def _save(fig, path: Path) -> None:
    fig.set_size_inches(7.5, 4.2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _confirmation(c: dict, path: Path) -> None:
    import numpy as np

    fig, ax = plt.subplots()
    names = [f"fold {f}" for f in c["folds"]] + ["pooled OOF, as ensembled"]
    x = np.arange(len(names))
    for i, arm in enumerate(("current", "tuned")):
        values = [c[arm]["folds"][str(f)] for f in c["folds"]] + [c[arm]["oof"]["score"]]
        bars = ax.bar(x + (i - 0.5) * 0.38, values, 0.38, label=f"{arm} params")
        ax.bar_label(bars, fmt="%.4f", fontsize=7, rotation=90, padding=2)
    values = [c[a]["folds"][str(f)] for a in ("current", "tuned") for f in c["folds"]]
    span = max(values) - min(values)
    ax.set_ylim(min(values) - max(span, 0.01), max(values) + 2 * max(span, 0.01))
    ax.set_xticks(x, names)
    ax.set_ylabel(c["metric"])
    ax.set_title(f"Confirmation on folds no trial saw: {c['winner']} params win")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def draw(study: optuna.Study, summary: dict, out: Path) -> dict[str, str]:
    """Write the plots that apply (importances need two finished trials); return name -> file name."""
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    drawn = {}
    plots = {"history": ovm.plot_optimization_history, "importances": ovm.plot_param_importances,
             "intermediate": ovm.plot_intermediate_values}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            _logger.info("tuning plot %s skipped: %s", name, exc)
            continue
        _save(ax.figure, out / f"{name}.png")
        drawn[name] = f"{name}.png"
    if summary.get("confirmation"):
        _confirmation(summary["confirmation"], out / "confirmation.png")
        drawn["confirmation"] = "confirmation.png"
    return drawn
