"""The exported graphs timed side by side on this machine (what predict's choice of graph rests on).

    measure_speed({"fp32": fp32, "int8": int8}, images_nchw, batch=512, min_seconds=0.4)
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from serve.engine import Engine


def measure_speed(paths: dict[str, Path], images_nchw: np.ndarray, batch: int, rounds: int = 3,
                  min_seconds: float = 0.4) -> dict:
    """images/s of each graph with predict's engine (its provider, threads and data-parallel slices), on the
    same batches, interleaved rounds with alternating order (median), so load drift hits every graph alike."""
    x = images_nchw[:batch]
    with ExitStack() as stack:  # closes the engines' slice threads, also when one fails to open
        engines = {name: stack.enter_context(Engine(path, provider="auto", data_parallel=True))
                   for name, path in paths.items()}
        rates = _interleaved_rates(engines, x, rounds, min_seconds)
    speed = {name: round(float(np.median(v)), 1) for name, v in rates.items()}
    providers = {engine.provider for engine in engines.values()}
    return {"provider": providers.pop() if len(providers) == 1 else "mixed",
            "batch": int(len(x)), "images_per_second": speed,
            "vs_fp32": {name: round(v / speed["fp32"], 3) for name, v in speed.items()}}


def _interleaved_rates(engines: dict[str, Engine], x: np.ndarray, rounds: int, min_seconds: float) -> dict:
    """images/s of every engine per round, the order reversed every other round."""
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.predict(x[:16])  # warm-up (sessions, threads); a full batch here cost as much as a round
    for r in range(rounds):
        for name, engine in (list(engines.items()) if r % 2 == 0 else list(engines.items())[::-1]):
            done, t0 = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - t0 < min_seconds:
                engine.predict(x)
                done += len(x)
            rates[name].append(done / (time.perf_counter() - t0))
    return rates

