"""submissions/history.json: each submitted file's (or notebook's) sha256 -> the OOF score, params
hash and commit that produced it, and the public score Kaggle gave it. Kept across runs.

    update_history(paths.HISTORY, digest, {"oof_score": 0.9416, "public_score": 0.9457})
    load_history(paths.HISTORY)       # {first 16 hex digits of the sha256: record}

Written by the submit stage and `foldwise kaggle push`; read by `foldwise submissions` and the report.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def update_history(path: Path, digest: str, entry: dict) -> None:
    """Merge `entry` (None values left out) into the record of `digest`."""
    history = {}
    if path.exists():
        try:
            history = json.loads(path.read_text())
        except json.JSONDecodeError:
            _logger.warning("%s: unreadable; starting a new history", path)
    history[digest] = {**history.get(digest, {}), **{k: v for k, v in entry.items() if v is not None}}
    write_json(path, history)


def load_history(path: Path) -> dict[str, dict]:
    """sha256 (first 16 hex digits) -> local record; {} when there is no history yet."""
    if not path.exists():
        return {}
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return {digest[:16]: rec for digest, rec in history.items()}
