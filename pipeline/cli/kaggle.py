"""`foldwise kaggle package | notebook | push`: code competitions (pipeline/kaggle/).

    foldwise kaggle package && foldwise kaggle notebook && foldwise kaggle push
"""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.app import app

kaggle_app = typer.Typer(no_args_is_help=True, help="Code competitions: the model as a Kaggle dataset, an offline "
                                                    "inference notebook, pushed and submitted (params `submit`).")
app.add_typer(kaggle_app, name="kaggle", rich_help_panel="Kaggle and benchmarks")


def _submit_params():
    from pipeline.core.config import load_section
    from pipeline.kaggle.params import SubmitParams

    return load_section("submit", SubmitParams)


@kaggle_app.command("package")
def kaggle_package(dry_run: bool = typer.Option(False, "--dry-run",
                                                help="Build kaggle/dataset/ only; upload nothing.")) -> None:
    """Build kaggle/dataset/ (chosen ONNX graph, serve wheel, offline wheels, dataset-metadata.json) and create or
    version the Kaggle dataset, once per content; wait until Kaggle has processed it.

    Example: foldwise kaggle package && foldwise kaggle notebook && foldwise kaggle push
    """
    from pipeline.kaggle.package import run as run_package
    run_package(_submit_params(), dry_run=dry_run)


@kaggle_app.command("notebook")
def kaggle_notebook(output: Path | None = typer.Option(None, "--output", "-o",
                                                      help="Notebook to write \\[default: "
                                                           "kaggle/kernel/<kernel slug>.ipynb].")) -> None:
    """Write the offline inference notebook: reads the competition's test files under /kaggle/input with the readers
    and resize of `foldwise predict`, writes /kaggle/working/submission.csv (validated), prints the throughput.

    Example: foldwise kaggle notebook && jupyter nbconvert --to html kaggle/kernel/*.ipynb
    """
    from pipeline.kaggle.notebook import write
    from pipeline.kaggle.package import refs
    params = _submit_params()
    write(refs(params), params, output)


@kaggle_app.command("push")
def kaggle_push(notebook: Path | None = typer.Option(None, help="The notebook \\[default: the one `foldwise kaggle "
                                                                     "notebook` wrote]."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Write kernel-metadata.json and look for a "
                                                                      "duplicate; push and submit nothing.")) -> None:
    """Push the notebook (internet off, GPU as submit.gpu, private), wait for its run, fetch its output and log, submit
    that version to the competition and wait for the score: submissions/receipt.json. Never twice for one notebook.

    Example: foldwise kaggle push && foldwise submissions
    """
    from pipeline.kaggle.code import push_receipt
    push_receipt(_submit_params(), notebook, dry_run=dry_run)


