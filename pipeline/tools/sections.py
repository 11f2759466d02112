"""Every section of params.yaml and the dataclass that validates it: the one list of them.

    validate_all(Path("params.yaml").read_text(), "params.yaml")    # UserError on the first problem

Used by `foldwise preset` and `foldwise init` (which validate the whole file before writing it)
and by the test that keeps the shipped params.yaml equal to the dataclasses' defaults.
"""
from __future__ import annotations

from ruamel.yaml import YAML

from pipeline.core.config import build
from pipeline.data.download import DownloadParams
from pipeline.data.prepare import PrepareParams
from pipeline.export.params import ExportParams, PredictParams
from pipeline.kaggle.params import SubmitParams
from pipeline.modeling.ensemble import EnsembleParams
from pipeline.report.params import ReportParams
from pipeline.training.distill import DistillParams
from pipeline.training.params import TrainParams
from pipeline.training.search_space import TuneParams
from serve.errors import UserError

SECTIONS: dict[str, type] = {"download": DownloadParams, "prepare": PrepareParams, "train": TrainParams,
                             "ensemble": EnsembleParams, "distill": DistillParams,
                             "export": ExportParams, "predict": PredictParams,
                             "submit": SubmitParams, "report": ReportParams, "tune": TuneParams}


def validate_all(text: str, name: str) -> None:
    """Load every section of a params text with its dataclass (raises UserError on the first problem)."""
    data = YAML(typ="safe", pure=True).load(text)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"{name}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    for section, cls in SECTIONS.items():
        build(cls, data.get(section), section, name)
