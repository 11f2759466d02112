"""What one fold's training loop owns and a checkpoint saves: model, optimizer, scheduler, EMA,
the best epoch so far, the curves and every RNG state, so that a resumed fold ends bit-identical.

    run = FoldRun(model, optimizer, scheduler, ema)
    torch.save(run.state_dict(signature), path)                 # after every epoch
    state = load_checkpoint(path, signature)                    # None unless it is this very run
    run.load_state_dict(state)

Checkpoints load with `weights_only=True` (no code runs from the file); the signature (params,
fold, seed, data fingerprint, precision, world size) keeps a checkpoint of another run away.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from serve.errors import first_line

_logger = logging.getLogger(__name__)


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": random.getstate()}


def _restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states["python"]))


@dataclasses.dataclass
class FoldRun:
    """Everything one fold's training loop owns (what a checkpoint saves and restores)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: object | None
    epoch: int = 0
    updates: int = 0
    best: dict | None = None
    epochs_since_best: int = 0
    curves: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0

    def state_dict(self, signature: str) -> dict:
        return {"signature": signature, "epoch": self.epoch, "updates": self.updates,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "ema": self.ema.state_dict() if self.ema else None,
                "best": self.best, "epochs_since_best": self.epochs_since_best, "curves": self.curves,
                "seconds": self.seconds, "images_seen": self.images_seen, "rng": _rng_states()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        for key in ("epoch", "updates", "best", "epochs_since_best", "curves", "seconds", "images_seen"):
            setattr(self, key, state[key])
        _restore_rng(state["rng"])


def load_checkpoint(path: Path, signature: str) -> dict | None:
    """The checkpoint's state if it belongs to this exact run (params, fold, seed, data), else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
        _logger.warning("%s: unreadable checkpoint (%s); starting the fold afresh", path, first_line(exc, 120))
        return None
    if not isinstance(state, dict) or state.get("signature") != signature:
        _logger.info("%s: from other params, seed or data; starting the fold afresh", path)
        return None
    return state
