"""`foldwise submissions`: Kaggle's list of your submissions beside the local OOF score of each file.

    foldwise submissions --competition fashion-mnist

Every foldwise submission message ends in `sha256:<16 hex>` of the file (of the notebook, for a
code submission); the local record `submissions/history.json` (written by `foldwise submit` and
`foldwise kaggle push`) maps that hash to the OOF score, params hash and commit that produced it.
The `kind` column says which: `file` (a CSV upload) or `code` (a notebook Kaggle re-ran).
Messages that carry `oof 0.93120` are read too, so the table works on another machine. Rows are
newest first, as Kaggle lists them.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pipeline.config import SubmitParams, load_section
from pipeline.kaggle.client import api
from pipeline.submit import TAG, list_submissions
from serve.errors import UserError

_logger = logging.getLogger(__name__)
OOF_IN_MESSAGE = re.compile(r"\boof(?: [a-z_]+)?[ =]([0-9]+\.[0-9]+)")


def load_history(path: Path) -> dict[str, dict]:
    """sha256 (first 16 hex digits) -> local record; {} when there is no history yet."""
    if not path.exists():
        return {}
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return {digest[:16]: rec for digest, rec in history.items()}


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
                     "params_hash": local.get("params_hash"), "commit": local.get("commit")})
    return rows


def resolve_competition(competition: str | None) -> str:
    if competition:
        return competition
    params = load_section("submit", SubmitParams)
    if params.competition:
        return params.competition
    source = Path("data/raw/source.json")
    if source.exists() and (slug := json.loads(source.read_text()).get("competition")):
        return slug
    raise UserError("no competition: pass --competition SLUG (or set submit.competition in params.yaml)")


def main(competition: str | None, history_path: Path) -> list[dict]:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    slug = resolve_competition(competition)
    rows = table_rows(list_submissions(api(), slug), load_history(history_path))
    table = Table(title=f"Kaggle submissions to '{slug}' (newest first)")
    for col, justify in (("ref", "right"), ("kind", "left"), ("date", "left"), ("status", "left"), ("public", "right"),
                         ("private", "right"), ("OOF (CV)", "right"), ("file sha256", "left"), ("message", "left")):
        table.add_column(col, justify=justify)
    fmt = lambda v: "" if v is None else f"{v:.5f}"  # noqa: E731
    for r in rows:
        table.add_row(str(r["ref"]), r["kind"], (r["date"] or "")[:19], r["status"], fmt(r["public_score"]),
                      fmt(r["private_score"]), fmt(r["oof_accuracy"]), r["sha256"] or "", r["description"][:60])
    Console(width=160).print(table)
    if not rows:
        print(f"no submissions to '{slug}' yet")
    return rows
