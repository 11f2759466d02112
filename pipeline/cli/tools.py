"""`foldwise` commands that are not stages: init, preset, compare, ladder, tune, submissions, score.

    foldwise init ~/Downloads/competition.zip && dvc repro
    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
"""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.app import app
from pipeline.core import paths
from pipeline.core.config import PARAMS_FILE
from pipeline.evaluation.metrics import DEFAULT_FOR_SUBMISSION, METRICS
from serve.errors import UserError

PANEL = "Project tools"

@app.command(rich_help_panel=PANEL)
def init(source: str = typer.Argument(..., help="The competition: a zip, a folder in Kaggle's layout, or a "
                                                 "Kaggle competition slug."),
         params: Path = typer.Option(Path(PARAMS_FILE), help="Params file whose download and prepare sections "
                                                               "are written.")) -> None:
    """Inspect a competition and write params.yaml's `download` and `prepare` sections (comments kept).

    Detects the layout (pixel CSV, labels CSV + image folder, class folders), files, id and target
    columns, classes, image size and channels, submission kind and a metric guess; prints what it
    found and what to confirm. Then: dvc repro.

    Example: foldwise init ~/Downloads/aerial-cactus-identification.zip && dvc repro
    """
    from pipeline.tools.init import run as run_init
    from pipeline.tools.init import summary

    found = run_init(source, params)
    for line in summary(found):
        typer.echo(line)
    typer.echo(f"{params}: set {', '.join(found['changed']) or 'nothing new'}; next: dvc repro")


@app.command(rich_help_panel=PANEL)
def compare(plot: Path | None = typer.Option(Path("experiments.png"), help="Bar plot of OOF vs public/local "
                                                                              "score per experiment.")) -> None:
    """DVC experiments side by side: changed params, OOF accuracy, public or local score.

    Example: dvc exp run --queue -n mlp -S train.model=foldwise_mlp && dvc queue start && foldwise compare
    """
    from pipeline.tools.compare import main as run_compare
    run_compare(plot)


@app.command(rich_help_panel=PANEL)
def submissions(competition: str | None = typer.Option(None, help="Kaggle slug (default: submit.competition "
                                                                         "or the slug the data came from)."),
                history: Path = typer.Option(paths.HISTORY, help="Local file hash -> OOF record."),
                public_rows: int | None = typer.Option(None, help="Test rows behind the public score, for its 95% "
                                                                      "CI (default: submit.public_rows).")) -> None:
    """The competition's submissions: public score, its 95% CI and each file's local OOF accuracy side by side.

    Example: foldwise submissions --competition fashion-mnist
    """
    from pipeline.tools.submissions import main as run_table
    run_table(competition, history, public_rows)


@app.command(rich_help_panel=PANEL)
def score(submission: Path = typer.Argument(..., help="Submission CSV (labels, or probabilities)."),
          solution: Path = typer.Argument(..., help="Solution CSV (id,label[,Usage], or one 0/1 column per class) "
                                                    "for some or all ids."),
          metric: str = typer.Option("auto", help=f"auto | {' | '.join(METRICS)} (auto: by the submission's kind, "
                                                  + ", ".join(f"{m} for {k}" for k, m in DEFAULT_FOR_SUBMISSION.items())
                                                  + ")."),
          positive: str | None = typer.Option(None, help="One probability column: the class it is the "
                                                            "probability of \\[default: the second class]")) -> None:
    """Score a submission on the ids a solution file covers, with the competition's metric.

    Example: foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    """
    from pipeline.evaluation.score import score_submission

    r = score_submission(submission, solution, metric, positive)
    if r.metric == "accuracy":
        typer.echo(f"accuracy {r.accuracy:.4f} ({r.n_correct}/{r.n_scored} ids of {solution})")
    else:
        typer.echo(f"{r.metric} {r.value:.4f} ({r.n_scored} ids of {solution}; accuracy {r.accuracy:.4f})")


@app.command(rich_help_panel=PANEL)
def tune(n_trials: int | None = typer.Option(None, help="Finished trials the study ends with "
                                                     "\\[default: tune.n_trials]."),
         timeout: str | None = typer.Option(None, help="This run's budget: 30m, 2h, 600 (seconds) "
                                                        "\\[default: tune.timeout]."),
         study: str | None = typer.Option(None, help="The study's name in tune/study.db \\[default: tune.study]."),
         confirm: bool = typer.Option(True, help="Confirm the best params against the current ones on the folds "
                                                 "no trial trained on (what decides)."),
         params: Path = typer.Option(Path(PARAMS_FILE), help="Params file (its tune and train sections).")) -> None:
    """Search params.yaml `train` with Optuna (tune.space), confirm the best on other folds, write presets/tuned.yaml.

    Resumable (even after kill -9: run it again) and shareable (several processes on one study).
    Trials are judged on tune.folds; the winner is decided on the other folds, against the current params.

    Example: foldwise tune --timeout 30m && foldwise preset presets/tuned.yaml && dvc repro
    """
    from pipeline.tools.tune.command import lines
    from pipeline.tools.tune.command import run as run_tune

    for line in lines(run_tune(params, n_trials, timeout, study, confirm)):
        typer.echo(line)


@app.command(rich_help_panel=PANEL)
def doctor() -> None:
    """What this machine has for foldwise (Python, torch and CUDA, GPUs, onnxruntime's providers, bf16/VNNI,
    DVC, Kaggle credentials), each with what to do when missing. Exit 0 when the default pipeline can run.

    Example: foldwise doctor
    """
    from pipeline.tools.doctor import lines, run_checks

    checks = run_checks()
    for line in lines(checks):
        typer.echo(line)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command(rich_help_panel=PANEL)
def ladder(rungs: str = typer.Option("linear,mlp,cnn,weight_decay,dropout,augment,early_stopping,default",
                                     help="Comma-separated rungs, in order (pipeline/tools/ladder.py lists them)."),
           folds: str = typer.Option("0", help="Comma-separated folds each rung trains (and is scored on)."),
           epochs: int | None = typer.Option(None, min=1, help="Epochs of every rung \\[default: train.epochs or "
                                                               "train.steps].")) -> None:
    """The course's ladder (linear, MLP, CNN, each remedy, the default), one DVC experiment per rung.

    Writes ladder/summary.json; `dvc repro` then adds the ladder section to the report.

    Example: foldwise ladder --folds 0 && dvc repro && xdg-open reports/report.pdf
    """
    from pipeline.report.ladder import ladder_table
    from pipeline.tools.ladder import run_ladder

    try:
        fold_list = [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise UserError(f"--folds: expected comma-separated fold numbers, got {folds!r}") from None
    if not fold_list:
        raise UserError("--folds: no fold given")
    summary = run_ladder([r.strip() for r in rungs.split(",") if r.strip()], fold_list, epochs)
    typer.echo(ladder_table(summary).to_string(index=False))
    for s in summary["skipped"]:
        typer.echo(f"skipped {s['name']}: {s['why']}")
    typer.echo(f"wrote {paths.LADDER / 'summary.json'}; dvc repro adds it to the report")


@app.command(rich_help_panel=PANEL)
def preset(path: Path = typer.Argument(..., help="A presets/*.yaml file."),
           params: Path = typer.Option(Path(PARAMS_FILE), help="Params file to update.")) -> None:
    """Merge a preset (partial params file) into params.yaml, validating the result first.

    Example: foldwise preset presets/course-mlp.yaml && dvc repro
    """
    from pipeline.tools.preset import apply_preset

    changed = apply_preset(path, params)
    typer.echo(f"{params}: set {', '.join(changed)} from {path}")
