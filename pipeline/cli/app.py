"""The root `foldwise` Typer app, its logging options and the console entry point (errors -> one line, exit 2)."""
from __future__ import annotations

import logging
import os
import sys

import typer

from serve.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="foldwise: k-fold timm training with DVC and ONNX batch inference for Kaggle image classification.")
@app.callback()
def _setup(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if quiet:
        os.environ["FOLDWISE_QUIET"] = "1"  # progress bars off too
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("torch", "onnxscript", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)



def main() -> None:
    """Console entry point: user errors as one line and exit code 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
