"""The real `kaggle` client, imported only once credentials are known to exist.

`import kaggle` authenticates at import time and prints help when it finds no credentials, so
foldwise looks for them first and can then say plainly what is missing. The key is never logged.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from serve.errors import UserError

_logger = logging.getLogger(__name__)


def config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def credentials_source() -> str | None:
    """Where the kaggle client will find credentials ('environment', a file path), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME/KAGGLE_KEY)"
    for name in ("access_token", "kaggle.json"):
        path = config_dir() / name
        if path.is_file():
            if path.stat().st_mode & 0o077:
                _logger.warning("%s is readable by other users; run: chmod 600 %s", path, path)
            return str(path)
    return None


NO_CREDENTIALS = ("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or save the token from "
                  "kaggle.com > Settings > API as ~/.kaggle/kaggle.json (chmod 600)")


def api():
    """An authenticated `kaggle.api.KaggleApi`; UserError when no credentials exist."""
    if credentials_source() is None:
        raise UserError(NO_CREDENTIALS)
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi  # noqa: PLC0415
        client = KaggleApi()
        try:
            client.authenticate()
        except SystemExit:
            raise UserError(NO_CREDENTIALS) from None
    return client
