"""params.yaml `submit`: the submit stage, `foldwise kaggle package | notebook | push`, `foldwise submissions`.

    params = load_section("submit", SubmitParams)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline.core.config import check_choice
from pipeline.core.paths import GRAPH_FILES, STUDENT_FILES


@dataclass
class SubmitParams:
    """params.yaml `submit`: how the competition gets our predictions: a CSV upload (`file`), or for a
    code competition a model dataset plus an inference notebook that Kaggle re-runs offline (`code`)."""
    mode: Literal["file", "code"] = "file"
    enabled: bool = False
    competition: str | None = None  # default: the slug the data was downloaded from
    message: str | None = None      # default: what produced the file (commit, params hash, OOF accuracy)
    dry_run: bool = False              # validate and check for duplicates, upload nothing
    poll_timeout: float = 900.0        # seconds to wait for Kaggle's score
    poll_interval: float = 5.0         # first wait between polls (doubles, at most 60 s)
    public_rows: int | None = None  # test rows behind the public score (its 95% CI); null: unknown
    # mode: code
    dataset: str | None = None      # owner/slug of the model dataset (default: <username>/<competition>-foldwise)
    kernel: str | None = None       # owner/slug of the notebook (default: <username>/<competition>-foldwise-infer)
    graph: str = "auto"   # auto (fastest within 0.1 point of FP32) | fp32 | int8 | fp16 | student[_int8|_fp16]
    gpu: bool = False                  # run the notebook on a GPU session (onnxruntime CUDA)
    wheels: list[str] | None = None # offline installs: requirements whose wheels go into the dataset
    #                                    (null: onnxruntime, or onnxruntime-gpu with gpu; []: none)
    wheels_python: str = "3.11"        # the Python of Kaggle's image, for those wheels
    hidden_scale: float = 10.0         # the notebook estimates its time on a hidden test set this many times larger
    kernel_timeout: float = 7200.0     # seconds to wait for the notebook's run on Kaggle

    def validate(self, err) -> None:
        check_choice(self.graph, ("auto", *GRAPH_FILES, *STUDENT_FILES), err, "graph")
        if self.public_rows is not None and self.public_rows < 1:
            raise err(f"must be at least 1 (or null), got {self.public_rows}", "public_rows")
        if self.poll_timeout < 0:
            raise err(f"must be >= 0, got {self.poll_timeout}", "poll_timeout")
        if self.poll_interval <= 0:
            raise err(f"must be > 0, got {self.poll_interval}", "poll_interval")
        for key in ("dataset", "kernel"):
            ref = getattr(self, key)
            if ref is not None and (ref.count("/") != 1 or not all(ref.split("/"))):
                raise err(f"must be owner/slug, got {ref!r}", key)
        if self.kernel_timeout < 0:
            raise err(f"must be >= 0, got {self.kernel_timeout}", "kernel_timeout")
        if self.hidden_scale <= 0:
            raise err(f"must be > 0, got {self.hidden_scale}", "hidden_scale")
        if not re.fullmatch(r"3\.\d+", self.wheels_python):
            raise err(f"must be a Python version such as 3.11, got {self.wheels_python!r}", "wheels_python")
