"""The one log format of foldwise: the CLI, the DVC stages and the HTTP server's workers all log alike.

    setup_logging(logging.INFO)     # HH:MM:SS LEVEL logger: message, on stderr
"""
from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
# Libraries whose INFO lines drown ours (fontTools: ~110 lines of font subsetting per reports/report.pdf).
NOISY = ("torch", "onnxscript", "urllib3", "PIL", "matplotlib", "fontTools")


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr at `level` (replacing any earlier set-up); chatty libraries at WARNING."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=DATE_FORMAT, stream=sys.stderr, force=True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
