"""serve/engine.py: the onnxruntime session, the provider it really got, the graph's metadata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve.engine import Engine
from serve.errors import UserError


def test_engine_reports_the_provider_it_got(tiny_onnx: Path) -> None:
    engine = Engine(tiny_onnx)
    assert engine.provider == "CPUExecutionProvider"
    probs = engine.predict(np.zeros((3, 1, 28, 28), np.uint8))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    with pytest.raises(UserError, match="not found"):
        Engine(tiny_onnx.with_name("nope.onnx"))
