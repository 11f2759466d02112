"""`foldwise compare`: DVC experiments side by side: what changed, OOF and public scores, one plot.

    dvc exp run --queue -n mlp -S train.model=foldwise_mlp && dvc queue start
    foldwise compare --plot experiments.png

Reads `dvc exp show --json` (the workspace, the baseline commit and every experiment), keeps the
params that differ between them and the scores: OOF accuracy and log-loss (metrics.json), the
public score Kaggle gave or the local score on a solution file (submissions/receipt.json).
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.config import PARAMS_FILE
from pipeline.distributed.dvcstate import dvc_bin
from serve.atomic import atomic_path
from serve.errors import UserError
from serve.paths import refuse_overwrite

_logger = logging.getLogger(__name__)
PROJECT_INPUTS = (PARAMS_FILE, "dvc.yaml", "dvc.lock", str(paths.METRICS_JSON))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v and k not in ("augment",):
            out.update(_flatten(v, key))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    return out


def _nodes(tree: Any) -> Iterator[dict]:
    """Every revision record ({rev, name, data: {params, metrics}}) in `dvc exp show --json` output."""
    if isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)
    elif isinstance(tree, dict):
        if isinstance(tree.get("data"), dict) and "rev" in tree:
            yield tree
        for key in ("experiments", "revs"):
            if tree.get(key):
                yield from _nodes(tree[key])


def _file_data(data: dict, kind: str, name: str) -> dict:
    entry = (data.get(kind) or {}).get(name) or {}
    return entry.get("data") or {}


def experiments(show_json: list | dict) -> list[dict]:
    rows = []
    for node in _nodes(show_json):
        data = node["data"]
        if node.get("error") or data.get("status") in ("Failed",):
            continue
        metrics = _file_data(data, "metrics", str(paths.METRICS_JSON))
        receipt = _file_data(data, "metrics", str(paths.RECEIPT))
        params = _flatten(_file_data(data, "params", PARAMS_FILE))
        public = receipt.get("public_score")
        local_rec = receipt.get("local_score") if isinstance(receipt.get("local_score"), dict) else {}
        local = local_rec.get("score", local_rec.get("accuracy"))
        name = node.get("name") or data.get("name") or str(node["rev"])[:7]
        if node["rev"] == "workspace":
            name = "workspace"
        rows.append({"name": name, "rev": "" if node["rev"] == "workspace" else str(node["rev"])[:7], "params": params,
                     "metric": metrics.get("metric", "accuracy"),
                     "oof_score": metrics.get("oof_score", metrics.get("oof_accuracy")),
                     "oof_accuracy": metrics.get("oof_accuracy"), "oof_logloss": metrics.get("oof_logloss"),
                     "fold_mean": metrics.get("fold_score_mean", metrics.get("fold_accuracy_mean")),
                     "public_score": public, "local_score": local,
                     "status": data.get("status") or ("Success" if metrics else "no metrics")})
    return rows


def changed_params(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({json.dumps(r["params"].get(k), default=str) for r in rows}) > 1
            and not k.startswith("train.folds")]


def dvc_exp_show(dvc: str | None = None) -> list | dict:
    exe = dvc or dvc_bin()
    if shutil.which(exe) is None:
        raise UserError("dvc: not found on PATH (activate .venv)")
    proc = subprocess.run([exe, "exp", "show", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"dvc exp show failed: {last}")
    return json.loads(proc.stdout)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["oof_score"] is not None]
    metric = scored[0]["metric"] if scored else "accuracy"
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(scored) + 2), 4))
    xs = range(len(scored))
    ax.bar([x - 0.2 for x in xs], [r["oof_score"] for r in scored], width=0.4, label=f"OOF {metric}")
    pub = [(x, r["public_score"] if r["public_score"] is not None else r["local_score"]) for x, r in zip(xs, scored)]
    pub = [(x, v) for x, v in pub if v is not None]
    if pub:
        ax.bar([x + 0.2 for x, _ in pub], [v for _, v in pub], width=0.4, label="public / local score")
    ax.set_xticks(list(xs), [r["name"] for r in scored], rotation=30, ha="right")
    values = [r["oof_score"] for r in scored] + [v for _, v in pub]
    if metric != "log_loss":
        ax.set_ylim(max(0.0, min(values + [1.0]) - 0.05), 1.0)
    ax.set_ylabel(metric)
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(plot_path: Path | None) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    if plot_path is not None:
        refuse_overwrite({"--plot": plot_path}, {name: Path(name) for name in PROJECT_INPUTS})
    rows = experiments(dvc_exp_show())
    if not rows:
        raise UserError("no experiments: run `dvc exp run` (or `dvc exp run --queue ... && dvc queue start`) first")
    keys = changed_params(rows)
    table = Table(title="DVC experiments")
    metric = rows[0].get("metric") or "accuracy"
    for col in ["experiment", "rev", *keys, f"OOF {metric}", "OOF acc", "OOF logloss", "fold mean", "public", "local"]:
        table.add_column(col, justify="right" if col not in ("experiment", "rev") else "left")
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        table.add_row(r["name"], r["rev"], *[str(r["params"].get(k, "")) for k in keys], fmt(r["oof_score"]),
                      fmt(r["oof_accuracy"]),
                      fmt(r["oof_logloss"]), fmt(r["fold_mean"]), fmt(r["public_score"]), fmt(r["local_score"]))
    Console(width=200).print(table)
    if plot_path is not None:
        plot(rows, plot_path)
        print(f"wrote {plot_path}")
    return rows
