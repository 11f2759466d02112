"""The report's blocks as HTML and as a PDF (pipeline/report/content.py, pdf.py), the ladder's rungs
(pipeline/tools/ladder.py) and the interval beside each rung's score."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from pipeline.evaluation.confidence import score_interval, wilson
from pipeline.evaluation.metrics import METRICS
from pipeline.report.content import Code, Figure, Heading, Kpis, Table, Text, to_html
from pipeline.report.pdf import write_pdf
from pipeline.tools.ladder import RUNGS, overrides

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def _blocks(tmp_path: Path) -> list:
    table = Table(pd.DataFrame({"fold": [0, 1], "accuracy": [0.91234, float("nan")], "note": ["Δ ✔ →", None]}),
                  "fold-table")
    return [Heading("foldwise report", 1), Text("400 images, 10 classes", muted=True),
            Kpis([("OOF accuracy", "0.9123")]), Heading("Folds"), table, Text("Ensemble ± one fold", id="t"),
            Heading("Curves", 3), Figure(_png(tmp_path / "curves.png"), "curves"),
            *[b for k in range(12) for b in (Heading(f"Section {k}"), Figure(_png(tmp_path / f"f{k}.png"), "f"))],
            Heading("Params"), Code('{"train": {"lr": 0.003}}\n' * 200)]


def test_cells_are_formatted_once_for_every_output() -> None:
    columns, rows = Table(pd.DataFrame({"a": [0.5, float("nan")], "b": ["x", None]}), "t", "{:.2f}").cells()
    assert columns == ["a", "b"] and rows == [["0.50", "x"], ["", ""]]


def test_html_has_every_block_with_its_ids(tmp_path: Path) -> None:
    page = to_html(_blocks(tmp_path), "foldwise report")
    assert page.count("<img ") == 13 and 'id="curves"' in page and 'id="fold-table"' in page
    assert "0.9123" in page and "<p id=t>" in page and "class=muted" in page and "Δ ✔ →" in page


def test_the_pdf_has_a_title_page_contents_every_figure_and_page_numbers(tmp_path: Path) -> None:
    path = write_pdf(_blocks(tmp_path), tmp_path / "report.pdf", "foldwise report")
    reader = PdfReader(path)
    texts = [p.extract_text() for p in reader.pages]
    n = len(reader.pages)
    assert n >= 6 and all(f"page {i} of {n}" in t for i, t in enumerate(texts, 1))
    assert "foldwise report" in texts[0] and "OOF accuracy" in texts[0] and "0.9123" in texts[0]
    assert "Contents" in texts[1] and "Section 11" in texts[1] and "Curves" in texts[1]
    assert sum(len(p.images) for p in reader.pages) == 13
    body = "\n".join(texts[2:])
    assert "0.9123" in body and "Δ ✔ →" in body and '"lr": 0.003' in body
    assert [o.title for o in reader.outline if not isinstance(o, list)][:2] == ["Folds", "Section 0"]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", RUNGS.names())
def test_every_rung_trains_the_chosen_folds(name: str) -> None:
    train = {"folds": [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}], "model": "foldwise_air",
             "weight_decay": 0.05, "drop_rate": 0.1, "patience": None,
             "augment": {"transform": {"__class_fullname__": "Compose", "transforms": []}}}
    sets = overrides(RUNGS[name], train, [1], epochs=3)
    assert sets["folds"] == [{"fold": 1, "seed": 1}] and sets["epochs"] == 3 and sets["steps"] is None
    if name == "default":
        assert set(sets) == {"folds", "epochs", "steps"}                # params.yaml as it is
    else:
        assert sets["model"].startswith("foldwise_") and sets["model"] != "foldwise_air"


def test_remedies_add_up_and_take_params_yaml_values_or_a_fallback() -> None:
    train = {"folds": [{"fold": 0, "seed": 0}], "weight_decay": 0.0, "drop_rate": 0.3, "patience": None,
             "augment": {"transform": {}}}
    cnn = overrides(RUNGS["cnn"], train, [0], None)
    assert cnn["weight_decay"] == 0.0 and cnn["drop_rate"] == 0.0 and cnn["augment"] == {} and "epochs" not in cnn
    stop = overrides(RUNGS["early_stopping"], train, [0], None)
    assert stop["weight_decay"] == 0.05 and stop["drop_rate"] == 0.3 and stop["patience"] == 2
    assert stop["augment"] == {"transform": {}}
    assert "no augmentation" in overrides(RUNGS["augment"], {**train, "augment": {}}, [0], None)


def test_a_rungs_interval_is_wilsons_for_accuracy_and_a_bootstrap_otherwise() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet(np.ones(3), 500)
    probs[np.arange(250), labels[:250]] += 2
    probs /= probs.sum(1, keepdims=True)
    acc = float((probs.argmax(1) == labels).mean())
    assert score_interval(METRICS["accuracy"], labels, probs) == wilson(acc, 500)
    lo, hi = score_interval(METRICS["log_loss"], labels, probs)
    point = METRICS["log_loss"].score(labels, probs)
    assert lo < point < hi and hi - lo < 0.3
    assert score_interval(METRICS["log_loss"], labels, probs) == (lo, hi)   # seeded: the same rows, the same interval
