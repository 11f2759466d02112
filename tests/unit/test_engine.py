"""serve/engine.py: the onnxruntime session, the provider it really got, the graph's metadata."""
from __future__ import annotations

import gc
import threading
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


def test_small_batches_run_on_a_single_threaded_session_with_the_same_answers(tiny_onnx: Path) -> None:
    engine = Engine(tiny_onnx, threads=2, small_batch=8)
    assert engine.small_batch == 8 and engine.small_session is not None
    assert engine.small_session.get_session_options().intra_op_num_threads == 1
    images = np.random.default_rng(0).integers(0, 256, (12, 1, 28, 28), dtype=np.uint8)
    whole = Engine(tiny_onnx, threads=2).predict(images)
    assert np.array_equal(engine.predict(images[:7]), whole[:7])    # small: the 1-thread session
    assert np.array_equal(engine.predict(images), whole)            # 12 >= 8: the main session
    assert Engine(tiny_onnx, threads=1, small_batch=8).small_session is None   # already single-threaded
    assert Engine(tiny_onnx, threads=2).small_session is None                  # off by default


def test_data_parallel_runs_equal_slices_on_single_threaded_sessions_with_the_same_answers(tiny_onnx: Path) -> None:
    engine = Engine(tiny_onnx, threads=3, data_parallel=True)
    assert len(engine.slices) == 3
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in engine.slices)
    images = np.random.default_rng(1).integers(0, 256, (13, 1, 28, 28), dtype=np.uint8)
    whole = Engine(tiny_onnx, threads=1).predict(images)
    np.testing.assert_allclose(engine.predict(images), whole, rtol=0, atol=1e-6)    # 13 rows: slices of 5, 4, 4
    np.testing.assert_allclose(engine.predict(images[:5]), whole[:5], rtol=0, atol=1e-6)  # < 2 per slice: one
    assert len(Engine(tiny_onnx, threads=1, data_parallel=True).slices) == 1      # one thread: nothing to split
    assert len(Engine(tiny_onnx, threads=2).slices) == 1                          # off by default


def test_data_parallel_keeps_one_session_where_the_copies_would_pass_the_memory_cap(tiny_onnx: Path,
                                                                                   monkeypatch) -> None:
    import serve.engine
    monkeypatch.setattr(serve.engine, "DATA_PARALLEL_BYTES", 2 * tiny_onnx.stat().st_size)
    assert len(Engine(tiny_onnx, threads=2, data_parallel=True).slices) == 2      # two copies fit
    engine = Engine(tiny_onnx, threads=3, data_parallel=True)                      # three do not
    assert len(engine.slices) == 1 and engine.session.get_session_options().intra_op_num_threads == 3


def _slice_threads() -> int:
    return sum(t.name.startswith("foldwise-slice") for t in threading.enumerate())


def test_the_slices_thread_stops_on_close_and_when_the_engine_is_collected(tiny_onnx: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    before = _slice_threads()
    with Engine(tiny_onnx, threads=2, data_parallel=True) as engine:
        whole = engine.predict(images)
        assert _slice_threads() == before + 1
    assert _slice_threads() == before
    np.testing.assert_allclose(engine.predict(images), whole, rtol=0, atol=1e-6)  # after close: one session
    engine.close()  # idempotent
    dropped = Engine(tiny_onnx, threads=2, data_parallel=True)
    dropped.predict(images)
    assert _slice_threads() == before + 1
    del dropped
    gc.collect()
    assert _slice_threads() == before
