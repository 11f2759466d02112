"""The `foldwise` command: the DVC stages by hand, project tools, predict and serve, Kaggle, benchmarks.

    foldwise prepare
    foldwise train --fold 0
    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    foldwise serve --model models/ensemble.onnx --port 8000

One module per family of commands (stages, tools, inference, kaggle, bench) registers them on the
app of `app.py`; each command parses, calls one function and prints. A user's mistake ends in one
line `error: ...` and exit code 2; heavy imports (torch, timm) happen inside the commands that need them.
"""
# ruff: noqa: I001  (the modules register their commands on import: this order is `foldwise --help`'s)
from pipeline.cli.app import app, main
from pipeline.cli import stages, tools, inference, kaggle, bench

__all__ = ["app", "main", "bench", "inference", "kaggle", "stages", "tools"]
