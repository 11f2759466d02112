"""The report's ladder section: what `foldwise ladder` left in ladder/ (summary.json, curves/).

    blocks = ladder_section(Path("ladder"), Path("reports"), dpi=110)
    print(ladder_table(json.loads(Path("ladder/summary.json").read_text())))     # `foldwise ladder` too

A table of rungs (validation score and its 95% interval, the change from the rung before,
parameters, MFLOPs per image, training time, epochs, the train-minus-validation accuracy gap at the
best epoch), the scores as bars with their intervals, and each rung's train and validation curves
side by side: a gap that opens is overfitting, two low lines that stay together underfitting.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.report.content import Block, Figure, Heading, Table, Text, not_applicable
from pipeline.report.figures import pyplot, save_png

TITLE = "The ladder: baseline to CNN, and what each remedy changed"


def ladder_table(summary: dict) -> pd.DataFrame:
    rows, prev = [], None
    for r in summary["rungs"]:
        rows.append({"rung": r["name"], "adds": r["adds"], r["metric"]: r["score"],
                     "95% CI": f"{r['ci'][0]:.4f}-{r['ci'][1]:.4f}",
                     "Δ vs previous (pts)": "" if prev is None else f"{100 * (r['score'] - prev):+.2f}",
                     "params": f"{r['params']:,}", "MFLOPs/image": f"{r['flops_per_image'] / 1e6:.2f}",
                     "train s": f"{r['train_seconds']:.0f}",
                     "epochs": f"{r['epochs_run']}" + (" (stopped early)" if r["stopped_early"] else ""),
                     "train-val gap (pts)": f"{100 * r['gap']:+.2f}"})
        prev = r["score"]
    return pd.DataFrame(rows)


def remedy_notes(summary: dict) -> list[str]:
    """One sentence per rung after the first: what it changed in score (and whether the two 95%
    intervals overlap, in which case these rows cannot tell them apart), in the train-validation gap
    and in training time."""
    notes, rungs = [], summary["rungs"]
    for prev, r in zip(rungs, rungs[1:]):
        overlap = r["ci"][0] <= prev["ci"][1] and prev["ci"][0] <= r["ci"][1]
        time_ratio = r["train_seconds"] / prev["train_seconds"] if prev["train_seconds"] else float("nan")
        noise = "the intervals overlap: within noise on these rows" if overlap else "outside the other interval"
        notes.append(f"{r['name']} ({r['adds']}): {100 * (r['score'] - prev['score']):+.2f} pts {r['metric']} against "
                     f"{prev['name']} ({noise}); train-validation gap {100 * prev['gap']:+.2f} -> "
                     f"{100 * r['gap']:+.2f} pts; {time_ratio:.1f}x the training time.")
    return notes


def plot_scores(summary: dict, path: Path, dpi: int) -> None:
    plt = pyplot()
    rungs = summary["rungs"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(rungs) + 2), 3.8))
    scores = np.array([r["score"] for r in rungs])
    err = np.array([[r["score"] - r["ci"][0] for r in rungs], [r["ci"][1] - r["score"] for r in rungs]])
    ax.bar(range(len(rungs)), scores, yerr=np.nan_to_num(err), capsize=4, color="C0")
    ax.set_xticks(range(len(rungs)), [r["name"] for r in rungs], rotation=30, ha="right")
    lo = float(np.nanmin([r["ci"][0] for r in rungs] + list(scores)))
    if rungs[0]["metric"] != "log_loss":
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, float(scores.max()) + 0.03))
    ax.set_ylabel(f"validation {rungs[0]['metric']}")
    ax.set_title("each rung's validation score, 95% interval", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path, dpi)


def plot_rung_curves(summary: dict, folder: Path, path: Path, dpi: int, per_row: int = 4) -> None:
    """Loss and accuracy per epoch, train dashed and validation solid: a column per rung, `per_row`
    rungs to a row of the figure (two panels high each)."""
    plt = pyplot()
    rungs = summary["rungs"]
    cols = min(per_row, len(rungs))
    groups = -(-len(rungs) // cols)
    fig, axes = plt.subplots(2 * groups, cols, figsize=(3.0 * cols + 0.6, 4.4 * groups), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for j, r in enumerate(rungs):
        df = pd.read_csv(folder / r["curves"])
        g, c = divmod(j, cols)
        for i, what in enumerate(("loss", "accuracy")):
            ax = axes[2 * g + i, c]
            ax.set_visible(True)
            ax.plot(df["epoch"], df[f"train_{what}"], "--", color="C1", label="train")
            ax.plot(df["epoch"], df[f"val_{what}"], "-", color="C0", label="validation")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(what, fontsize=8)
        axes[2 * g, c].set_title(r["name"], fontsize=9)
        axes[2 * g + 1, c].set_xlabel("epoch", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi)


def ladder_section(folder: Path, out: Path, dpi: int) -> list[Block]:
    path = folder / "summary.json"
    if not path.exists():
        return not_applicable(TITLE, "No ladder yet: `foldwise ladder` trains the course's rungs (one DVC "
                                     "experiment each) and writes ladder/summary.json.", "ladder")
    summary = json.loads(path.read_text())
    if not summary["rungs"]:
        return not_applicable(TITLE, "The ladder ran no rung.", "ladder")
    plot_scores(summary, out / "ladder_scores.png", dpi)
    plot_rung_curves(summary, folder, out / "ladder_curves.png", dpi)
    folds = ", ".join(map(str, summary["folds"]))
    blocks: list[Block] = [
        Heading(TITLE),
        Text(f"Every rung trained on fold(s) {folds} and scored on their validation rows (the same rows for every "
             f"rung, never trained on), measured {summary.get('time', '')} on {summary.get('cpu', '')}. Each rung is "
             "a DVC experiment (dvc exp show; foldwise compare).", id="ladder"),
        Table(ladder_table(summary), "ladder-table"),
        *[Text(note) for note in remedy_notes(summary)],
        Figure(out / "ladder_scores.png", "ladder scores"),
        Heading("Train against validation, per rung", 3),
        Text("A gap between the dashed (train) and solid (validation) lines that grows with the epochs is "
             "overfitting, which the remedies narrow; two lines that stay low together are underfitting.", muted=True),
        Figure(out / "ladder_curves.png", "ladder curves")]
    blocks += [Text(f"Skipped {s['name']}: {s['why']}.", muted=True) for s in summary.get("skipped", [])]
    return blocks
