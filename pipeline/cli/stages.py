"""`foldwise` commands that run one DVC stage each (init writes params), plus compare, submissions,
score and preset.

    foldwise prepare
    foldwise train --fold 0
    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from serve.errors import UserError

from pipeline.cli.app import app

@app.command()
def init(source: str = typer.Argument(..., help="The competition: a zip, a folder in Kaggle's layout, or a "
                                                 "Kaggle competition slug."),
         params: Path = typer.Option(Path("params.yaml"), help="Params file whose download and prepare sections "
                                                               "are written.")) -> None:
    """Inspect a competition and write params.yaml's `download` and `prepare` sections (comments kept).

    Detects the layout (pixel CSV, labels CSV + image folder, class folders), files, id and target
    columns, classes, image size and channels, submission kind and a metric guess; prints what it
    found and what to confirm. Then: dvc repro.

    Example: foldwise init ~/Downloads/aerial-cactus-identification.zip && dvc repro
    """
    from pipeline.initialize import run as run_init, summary

    found = run_init(source, params)
    for line in summary(found):
        typer.echo(line)
    typer.echo(f"{params}: set {', '.join(found['changed']) or 'nothing new'}; next: dvc repro")


@app.command()
def download() -> None:
    """Stage download: params `download` -> data/raw/competition.zip, data/raw/source.json.

    Example: foldwise download
    """
    from pipeline import sources
    sources.main()


@app.command()
def prepare() -> None:
    """Stage prepare: data/raw/competition.zip -> validated arrays and folds in data/prepared/.

    Example: foldwise prepare
    """
    from pipeline import prepare as stage
    stage.main()


@app.command()
def train(fold: Optional[int] = typer.Option(None, "--fold", "-k", help="Fold index (0-based)."),
          seed: Optional[int] = typer.Option(None, help="Seed [default: this fold's seed in train.folds]."),
          parallel: bool = typer.Option(False, "--parallel", help="Train every stale train@k at once on Ray, "
                                        "then record them in dvc.lock (needs the [ray] extra)."),
          address: Optional[str] = typer.Option(None, help="--parallel: Ray cluster [default: RAY_ADDRESS, "
                                                "else a local Ray on this machine]."),
          cpus_per_fold: Optional[float] = typer.Option(None, help="--parallel: CPUs (= torch threads) per fold "
                                                        "[default: the cluster's CPUs / stale folds]."),
          gpus_per_fold: Optional[float] = typer.Option(None, help="--parallel: GPUs per fold [default: 1 if the "
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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        from pipeline.distributed.ddp import main as ddp_main
        ddp_main(fold, seed, sync_bn=sync_bn)
        return
    if sync_bn:
        raise UserError("--sync-bn applies to DDP runs under torchrun (WORLD_SIZE > 1)")
    from pipeline import train as stage
    stage.main(fold, seed)


@app.command()
def ensemble() -> None:
    """Stage ensemble: OOF predictions of all folds -> metrics.json, models/ensemble.json.

    Example: foldwise ensemble
    """
    from pipeline import ensemble as stage
    stage.main()


@app.command()
def compare(plot: Optional[Path] = typer.Option(Path("experiments.png"), help="Bar plot of OOF vs public/local "
                                                                              "score per experiment.")) -> None:
    """DVC experiments side by side: changed params, OOF accuracy, public or local score.

    Example: dvc exp run --queue -n mlp -S train.model=foldwise_mlp && dvc queue start && foldwise compare
    """
    from pipeline.compare import main as run_compare
    run_compare(plot)


@app.command()
def report() -> None:
    """Stage report: reports/index.html (self-contained: curves, fold table, confusion matrix, image grids,
    export deltas, throughput, submission, environment) and its PNGs.

    Example: foldwise report && xdg-open reports/index.html
    """
    from pipeline import report as stage
    stage.main()


@app.command()
def export() -> None:
    """Stage export: fold models -> models/ensemble.onnx (one graph), parity-checked with onnxruntime.

    Example: foldwise export
    """
    from pipeline import export as stage
    stage.main()


@app.command()
def submit(dry_run: bool = typer.Option(False, "--dry-run", help="Validate and look for a duplicate; upload nothing.")) -> None:
    """Stage submit: validate submissions/submission.csv, upload it once (submit.enabled), wait for the score.

    Example: foldwise submit --dry-run
    """
    from pipeline import submit as stage
    stage.main(dry_run=dry_run)


@app.command()
def submissions(competition: Optional[str] = typer.Option(None, help="Kaggle slug (default: submit.competition "
                                                                         "or the slug the data came from)."),
                history: Path = typer.Option(Path("submissions/history.json"), help="Local file hash -> OOF record."),
                public_rows: Optional[int] = typer.Option(None, help="Test rows behind the public score, for its 95% "
                                                                      "CI (default: submit.public_rows).")) -> None:
    """The competition's submissions: public score, its 95% CI and each file's local OOF accuracy side by side.

    Example: foldwise submissions --competition fashion-mnist
    """
    from pipeline.leaderboard import main as run_table
    run_table(competition, history, public_rows)


@app.command()
def score(submission: Path = typer.Argument(..., help="Submission CSV (labels, or probabilities)."),
          solution: Path = typer.Argument(..., help="Solution CSV (id,label[,Usage], or one 0/1 column per class) "
                                                    "for some or all ids."),
          metric: str = typer.Option("auto", help="auto | accuracy | log_loss | roc_auc | f1_macro | qwk (auto: "
                                                  "accuracy for labels, roc_auc for one probability column, log_loss "
                                                  "for one per class)."),
          positive: Optional[str] = typer.Option(None, help="One probability column: the class it is the "
                                                            "probability of [default: the second class]")) -> None:
    """Score a submission on the ids a solution file covers, with the competition's metric.

    Example: foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    """
    from pipeline.scoring import score_submission

    r = score_submission(submission, solution, metric, positive)
    if r.metric == "accuracy":
        typer.echo(f"accuracy {r.accuracy:.4f} ({r.n_correct}/{r.n_scored} ids of {solution})")
    else:
        typer.echo(f"{r.metric} {r.value:.4f} ({r.n_scored} ids of {solution}; accuracy {r.accuracy:.4f})")


@app.command()
def preset(path: Path = typer.Argument(..., help="A presets/*.yaml file."),
           params: Path = typer.Option(Path("params.yaml"), help="Params file to update.")) -> None:
    """Merge a preset (partial params file) into params.yaml, validating the result first.

    Example: foldwise preset presets/course-mlp.yaml && dvc repro
    """
    from pipeline.presets import apply_preset

    changed = apply_preset(path, params)
    typer.echo(f"{params}: set {', '.join(changed)} from {path}")


