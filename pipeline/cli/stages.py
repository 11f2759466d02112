"""`foldwise` commands that run one DVC stage each (the same code as `python -m pipeline.stages.<name>`).

    foldwise prepare
    foldwise train --fold 0
    foldwise train --parallel          # every stale train@k on Ray
"""
from __future__ import annotations

import typer

from pipeline.cli.app import app
from serve.errors import UserError

PANEL = "Pipeline stages (what dvc repro runs)"

@app.command(rich_help_panel=PANEL)
def download() -> None:
    """Stage download: params `download` -> data/raw/competition.zip, data/raw/source.json.

    Example: foldwise download
    """
    from pipeline.stages.download import main as stage
    stage()


@app.command(rich_help_panel=PANEL)
def prepare() -> None:
    """Stage prepare: data/raw/competition.zip -> validated arrays and folds in data/prepared/.

    Example: foldwise prepare
    """
    from pipeline.stages.prepare import main as stage
    stage()


@app.command(rich_help_panel=PANEL)
def train(fold: int | None = typer.Option(None, "--fold", "-k", help="Fold index (0-based)."),
          seed: int | None = typer.Option(None, help="Seed \\[default: this fold's seed in train.folds]."),
          parallel: bool = typer.Option(False, "--parallel", help="Train every stale train@k at once on Ray, "
                                        "then record them in dvc.lock (needs the \\[ray] extra)."),
          address: str | None = typer.Option(None, help="--parallel: Ray cluster \\[default: RAY_ADDRESS, "
                                                "else a local Ray on this machine]."),
          cpus_per_fold: float | None = typer.Option(None, help="--parallel: CPUs (= torch threads) per fold "
                                                        "\\[default: the cluster's CPUs / stale folds]."),
          gpus_per_fold: float | None = typer.Option(None, help="--parallel: GPUs per fold \\[default: 1 if the "
                                                        "cluster has GPUs, else 0]."),
          dry_run: bool = typer.Option(False, "--dry-run", help="--parallel: list the stale folds, train nothing."),
          sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun: SyncBatchNorm across the "
                                       "processes (CUDA).")) -> None:
    """Stage train@k: train one fold -> models/folds/fold<k>/ (weights, OOF probabilities, metrics).

    Resumes from models/checkpoints/fold<k>/last.pt when it belongs to the same params, seed and data.
    Under torchrun (WORLD_SIZE > 1) the fold is trained with DDP over all processes
    (pipeline/distributed/ddp.py). With --parallel, every stale fold stage is trained at once on Ray
    (pipeline/distributed/parallel_folds.py).

    Examples:
      foldwise train --fold 0 --seed 0
      foldwise train --parallel --cpus-per-fold 1
      torchrun --nproc-per-node 4 --no-python foldwise train --fold 0
    """
    if parallel:
        if fold is not None or seed is not None or sync_bn:
            raise UserError("--parallel trains every stale fold stage: drop --fold, --seed and --sync-bn")
        from pipeline.distributed.parallel_folds import main as parallel_main
        parallel_main(address=address, cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold, dry_run=dry_run)
        return
    if fold is None:
        raise UserError("--fold is required (or --parallel for every stale fold)")
    from pipeline.stages.train import main as stage
    stage(fold, seed, sync_bn=sync_bn)


@app.command(rich_help_panel=PANEL)
def pseudo(fold: int = typer.Option(..., "--fold", "-k", help="Fold index (0-based)."),
           seed: int | None = typer.Option(None, help="Seed \\[default: this fold's seed in train.folds].")) -> None:
    """Stage pseudo@k: train.pseudo_labels.rounds rounds of fold k with the test images, labelled by fold
    k's own previous round -> models/pseudo/fold<k>/ (its OOF score stays out of fold).

    With rounds: 0 (the default) it records that fold k keeps models/folds/fold<k>/.

    Example: foldwise pseudo --fold 0
    """
    from pipeline.stages.pseudo import main as stage
    stage(fold, seed)


@app.command(rich_help_panel=PANEL)
def distill() -> None:
    """Stage distill: k cross-fitted students (their OOF score) and one final student on every row,
    learning the fold models' soft predictions -> models/student/ (student.json, student*.onnx).

    With distill.enabled: false (the default) it records that it is off.

    Example: foldwise distill
    """
    from pipeline.stages.distill import main as stage
    stage()


@app.command(rich_help_panel=PANEL)
def ensemble() -> None:
    """Stage ensemble: OOF predictions of all folds -> metrics.json, models/ensemble.json.

    Example: foldwise ensemble
    """
    from pipeline.stages.ensemble import main as stage
    stage()


@app.command(rich_help_panel=PANEL)
def export() -> None:
    """Stage export: fold models -> models/ensemble.onnx (one graph), parity-checked with onnxruntime.

    Example: foldwise export
    """
    from pipeline.stages.export import main as stage
    stage()


@app.command(rich_help_panel=PANEL)
def submit(dry_run: bool = typer.Option(False, "--dry-run",
                                        help="Validate and look for a duplicate; upload nothing, "
                                             "leave receipt.json and history.json as they are.")) -> None:
    """Stage submit: validate submissions/submission.csv, upload it once (submit.enabled), wait for the score.

    Example: foldwise submit --dry-run
    """
    from pipeline.stages.submit import main as stage
    stage(dry_run=dry_run)


@app.command(rich_help_panel=PANEL)
def report() -> None:
    """Stage report: reports/index.html (self-contained), reports/report.pdf and reports/report.ipynb from
    the same sections (curves, folds, ladder, what the network learned, confusion, grids, export, ...).

    Example: foldwise report && xdg-open reports/report.pdf
    """
    from pipeline.stages.report import main as stage
    stage()
