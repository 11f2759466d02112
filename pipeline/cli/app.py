"""The root `foldwise` Typer app, its logging options and the console entry point (errors -> one line, exit 2)."""
from __future__ import annotations

import typer

from pipeline.core.console import configure, run_or_exit

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="foldwise: k-fold timm training with DVC and ONNX batch inference for Kaggle image "
                       "classification.")


@app.callback()
def _setup(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    configure(quiet=quiet, verbose=verbose)


def main() -> None:
    """Console entry point: user errors as one line and exit code 2."""
    run_or_exit(app)
