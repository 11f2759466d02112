"""Each benchmark's run as a record: what was measured, when, on which machine, by which command.

    path = write_record("infer", rows)        # bench/infer.json: {bench, time, commit, cpu, command, result}
    records = read_records(Path("docs/results"))

Kept runs are copied to docs/results/ and rendered into docs/results.md by `foldwise bench
results` (pipeline/bench/results.py), so a measured figure is never typed by hand.
"""
from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.provenance import git_commit, machine
from serve.atomic import write_json
from serve.errors import UserError

FIELDS = ("bench", "time", "commit", "cpu", "command", "result")


def command_line(argv: list[str] | None = None) -> str:
    """The command as the user typed it (`foldwise bench infer --batch 512`)."""
    args = list(sys.argv if argv is None else argv)
    return shlex.join(["foldwise", *args[1:]]) if args else "foldwise"


def make_record(bench: str, result: Any, argv: list[str] | None = None) -> dict:
    return {"bench": bench, "time": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
            "cpu": machine(), "command": command_line(argv), "result": result}


def write_record(bench: str, result: Any, folder: Path = paths.BENCH, argv: list[str] | None = None) -> Path:
    """bench/<bench>.json for this run (the latest run of each benchmark)."""
    path = folder / f"{bench}.json"
    write_json(path, make_record(bench, result, argv))
    return path


def read_records(folder: Path) -> list[dict]:
    """Every record in `folder` (*.json), oldest first; UserError naming a file that is not one."""
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        missing = [f for f in FIELDS if f not in record] if isinstance(record, dict) else list(FIELDS)
        if missing:
            raise UserError(f"{path}: not a benchmark record (missing {', '.join(missing)})")
        records.append({**record, "file": path.name})
    return sorted(records, key=lambda r: (r["time"], r["bench"]))
