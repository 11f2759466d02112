"""params.yaml `export` and `predict`: how the ensemble becomes ONNX graphs, and how they run.

    params = load_section("export", ExportParams)     # the export stage
    params = load_section("predict", PredictParams)   # the predict stage, `foldwise predict --config`
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import check_choice
from serve.engine import PROVIDERS


@dataclass
class ExportParams:
    """params.yaml `export`: the parity gate, the OOF rows scoring each graph, calibration, timing."""
    opset: int = 18
    parity_rows: int = 512     # OOF images for the onnxruntime-vs-PyTorch gate
    max_abs_diff: float = 1e-4 # gate: max |prob difference|, and identical argmax
    rtol: float = 1e-3
    atol: float = 1e-5
    eval_rows: int = 5000      # OOF images scoring each exported variant
    calibration_rows: int = 512
    predict_tolerance: float = 0.001  # predict: the fastest graph whose OOF score is this close to the best's
    speed_batch: int = 256     # batch for timing each graph (side by side): predict.batch_size's default
    speed_seconds: float = 0.4  # each graph's time per round (3 interleaved rounds; the median counts)

    def validate(self, err) -> None:
        if not 0 <= self.predict_tolerance < 1:
            raise err(f"must be in [0, 1), got {self.predict_tolerance}", "predict_tolerance")
        for name in ("parity_rows", "eval_rows", "calibration_rows", "speed_batch"):
            if getattr(self, name) < 1:
                raise err(f"must be at least 1, got {getattr(self, name)}", name)
        if self.speed_seconds <= 0:
            raise err(f"must be > 0, got {self.speed_seconds}", "speed_seconds")
        if self.max_abs_diff <= 0:
            raise err(f"must be > 0, got {self.max_abs_diff}", "max_abs_diff")
        if self.opset < 17:
            raise err(f"must be at least 17, got {self.opset}", "opset")


@dataclass
class PredictParams:
    """params.yaml `predict` (and `foldwise predict`'s defaults): onnxruntime batch, provider, threads."""
    batch_size: int = 256
    provider: str = "auto"           # auto | cpu | cuda (serve.engine.PROVIDERS)
    threads: int | None = None    # onnxruntime intra-op threads; null: all cores

    def validate(self, err) -> None:
        check_choice(self.provider, PROVIDERS, err, "provider")
        if self.batch_size < 1:
            raise err(f"must be at least 1, got {self.batch_size}", "batch_size")
