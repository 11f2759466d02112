"""The `foldwise` command: one subcommand per DVC stage, plus predict, serve, score, kaggle and bench.

    foldwise prepare
    foldwise train --fold 0
    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    foldwise serve --model models/ensemble.onnx --port 8000

One module per family of commands (stages, inference, kaggle, bench) registers them on the app of
`app.py`. A user's mistake ends in one line `error: ...` and exit code 2; heavy imports (torch,
timm) happen inside the commands that need them.
"""
from pipeline.cli.app import app, main
from pipeline.cli import stages, inference, kaggle, bench  # noqa: F401,E402,I001  (register the commands, in help order)

__all__ = ["app", "main"]
