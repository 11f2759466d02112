"""`foldwise submissions`: Kaggle's list of your submissions beside the local OOF score of each file.

    foldwise submissions --competition fashion-mnist

Every foldwise submission message ends in `sha256:<16 hex>` of the file (of the notebook, for a
code submission); the local record `submissions/history.json` (written by `foldwise submit` and
`foldwise kaggle push`) maps that hash to the OOF score, params hash and commit that produced it.
The `kind` column says which: `file` (a CSV upload) or `code` (a notebook Kaggle re-ran).
Messages that carry `oof 0.93120` are read too, so the table works on another machine. Rows are
newest first, as Kaggle lists them. Beside each public accuracy: its binomial (Wilson) 95% interval
on `submit.public_rows` rows (or `--public-rows`) and whether the OOF accuracy lies inside it (then
the public/OOF gap is noise); other metrics get no interval (it is for a proportion of right rows).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import PARAMS_FILE, load_section
from pipeline.evaluation.confidence import wilson
from pipeline.kaggle.client import api
from pipeline.kaggle.history import load_history
from pipeline.kaggle.params import SubmitParams
from pipeline.kaggle.submissions import TAG, list_submissions
from serve.errors import UserError

_logger = logging.getLogger(__name__)
OOF_IN_MESSAGE = re.compile(r"\boof(?: [a-z_]+)?[ =]([0-9]+\.[0-9]+)")


def table_rows(submissions: list[dict], history: dict[str, dict]) -> list[dict]:
    rows = []
    for sub in submissions:
        tag = TAG.search(sub["description"])
        local = history.get(tag.group(1), {}) if tag else {}
        oof = local.get("oof_score", local.get("oof_accuracy"))
        if oof is None and (m := OOF_IN_MESSAGE.search(sub["description"])):
            oof = float(m.group(1))
        kind = local.get("kind") or ("code" if sub["description"].startswith("foldwise code ") else "file")
        rows.append({**sub, "sha256": tag.group(1) if tag else None, "oof_accuracy": oof, "kind": kind,
                     "metric": local.get("metric", "accuracy"),
                     "params_hash": local.get("params_hash"), "commit": local.get("commit")})
    return rows


def resolve_competition(competition: str | None) -> str:
    if competition:
        return competition
    params = load_section("submit", SubmitParams)
    if params.competition:
        return params.competition
    source = paths.SOURCE_JSON
    if source.exists() and (slug := json.loads(source.read_text()).get("competition")):
        return slug
    raise UserError("no competition: pass --competition SLUG (or set submit.competition in params.yaml)")


def public_interval(score: float | None, n: int | None, oof: float | None) -> tuple[str, str]:
    """(the public score's 95% Wilson interval, whether the OOF accuracy lies inside it) as table cells."""
    if score is None or not n:
        return ("" if score is None else "n unknown"), ""
    lo, hi = wilson(score, n)
    inside = "" if oof is None else ("inside: noise" if lo <= oof <= hi else "outside")
    return f"{lo:.4f}-{hi:.4f}", inside


def _public_rows(public_rows: int | None) -> int | None:
    if public_rows is not None or not Path(PARAMS_FILE).exists():
        return public_rows
    return load_section("submit", SubmitParams).public_rows


def main(competition: str | None, history_path: Path, public_rows: int | None = None) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    slug = resolve_competition(competition)
    n_public = _public_rows(public_rows)
    rows = table_rows(list_submissions(api(), slug), load_history(history_path))
    table = Table(title=f"Kaggle submissions to '{slug}' (newest first); public 95% CI on "
                        f"{n_public or 'an unknown number of'} rows")
    for col, justify in (("ref", "right"), ("kind", "left"), ("date", "left"), ("status", "left"), ("public", "right"),
                         ("public 95% CI", "right"), ("OOF (CV)", "right"), ("OOF vs CI", "left"),
                         ("private", "right"), ("file sha256", "left"), ("message", "left")):
        table.add_column(col, justify=justify)
    fmt = lambda v: "" if v is None else f"{v:.5f}"  # noqa: E731
    for r in rows:
        accuracy = r.get("metric", "accuracy") == "accuracy"
        r["public_ci"], r["oof_vs_ci"] = (public_interval(r["public_score"], n_public, r["oof_accuracy"])
                                          if accuracy else ("", ""))
        table.add_row(str(r["ref"]), r["kind"], (r["date"] or "")[:19], r["status"], fmt(r["public_score"]),
                      r["public_ci"], fmt(r["oof_accuracy"]), r["oof_vs_ci"], fmt(r["private_score"]),
                      r["sha256"] or "", r["description"][:48])
    Console(width=190).print(table)
    if not rows:
        print(f"no submissions to '{slug}' yet")
    return rows
