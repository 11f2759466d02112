"""How foldwise starts and ends a process: one log set-up, and users' mistakes as one line, exit 2.

    python -m pipeline.stages.train --fold 0 --seed 0     # a stage module's `__main__`: run_stage(main, ...)
    foldwise train --fold 0                               # the CLI (pipeline/cli/app.py): run_cli(app)

A `UserError` prints `error: <message>` on stderr and exits with code 2; anything else is our bug
and keeps its traceback. Both the `foldwise` command and the stage modules that dvc.yaml runs go
through here, so they log and fail alike.
"""
from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline.core.versions import check_installed
from serve.errors import UserError
from serve.logs import setup_logging

QUIET_ENV = "FOLDWISE_QUIET"  # set by --quiet: progress bars off too


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """Log level from the --quiet / --verbose flags."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    setup_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    check_installed()  # a warning line for a torch (or Python, ...) outside the supported range


def quiet() -> bool:
    """True under --quiet (no progress bars)."""
    return bool(os.environ.get(QUIET_ENV))


def run_or_exit(fn: Callable[[], Any]) -> None:
    """Call `fn`; a UserError ends the process with one `error:` line and exit code 2."""
    try:
        fn()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def run_stage(main: Callable[..., Any], argv: list[str] | None = None) -> None:
    """`python -m pipeline.stages.<name> [--option value]`: options from `main`'s keyword parameters
    (annotated int, str or bool, a flag; parameters without a default are required)."""
    parser = argparse.ArgumentParser(prog=f"python -m {main.__module__}", description=(main.__doc__ or "").strip())
    for name, p in inspect.signature(main).parameters.items():
        flag = f"--{name.replace('_', '-')}"
        if "bool" in str(p.annotation):
            parser.add_argument(flag, action="store_true")
            continue
        required = p.default is inspect.Parameter.empty
        parser.add_argument(flag, type=int if "int" in str(p.annotation) else str, required=required,
                            default=None if required else p.default)
    args = vars(parser.parse_args(argv))
    configure()
    run_or_exit(lambda: main(**args))
