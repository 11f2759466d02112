"""Benchmark records and docs/results.md: the figures there are rendered from the kept records,
never typed, and the file is up to date with docs/results/*.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import ROOT
from pipeline.bench.record import make_record, read_records, write_record
from pipeline.bench.results import BEGIN, END, main, render, updated
from serve.errors import UserError


def test_a_record_says_when_where_and_how(tmp_path: Path) -> None:
    path = write_record("infer", [{"batch": 1, "onnx_fp32": 123.4}], tmp_path,
                        argv=["foldwise", "bench", "infer", "--batch", "1"])
    record = json.loads(path.read_text())
    assert path.name == "infer.json" and record["bench"] == "infer"
    assert record["command"] == "foldwise bench infer --batch 1"
    assert "cores" in record["cpu"] and record["time"][:2] == "20"
    assert record["result"] == [{"batch": 1, "onnx_fp32": 123.4}]


def test_records_render_as_tables_with_their_provenance(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(make_record(
        "train", {"model": "foldwise_air", "bf16_vs_fp32": 1.93, "precisions": {"fp32": {"images_per_s": 900.0}}},
        argv=["foldwise", "bench", "train"])))
    text = render(read_records(tmp_path))
    assert "### `train`," in text and "`foldwise bench train`" in text
    assert "| bf16_vs_fp32 | 1.93 |" in text and "| fp32 | 900 |" in text


def test_a_file_that_is_not_a_record_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"bench": "infer"}')
    with pytest.raises(UserError, match=r"x\.json: not a benchmark record \(missing time"):
        read_records(tmp_path)


def test_the_generated_section_is_replaced_between_its_markers(tmp_path: Path) -> None:
    text = f"# R\n\n{BEGIN}\nold\n{END}\n\nhand-written\n"
    assert updated(text, "new", tmp_path) == f"# R\n\n{BEGIN}\nnew\n{END}\n\nhand-written\n"
    with pytest.raises(UserError, match="markers"):
        updated("no markers", "new", tmp_path / "results.md")


def test_docs_results_md_is_up_to_date_with_the_kept_records() -> None:
    assert main(check=True, records=ROOT / "docs/results", results_md=ROOT / "docs/results.md")
