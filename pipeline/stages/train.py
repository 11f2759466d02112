"""Stage `train@k`: train one fold of a timm model; keep its best epoch and its OOF predictions
(pipeline/training/fold.py lists what models/folds/fold<k>/ holds).

    python -m pipeline.stages.train --fold 0 --seed 0     # what dvc.yaml runs; by hand: foldwise train --fold 0

Reads params.yaml `train` and data/prepared/. Under torchrun (WORLD_SIZE > 1) the fold is
trained with DDP over every process (pipeline/distributed/ddp.py).
"""
from __future__ import annotations

from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.distributed.ddp import train_distributed, world_size
from pipeline.training.fold import fold_seed, run_fold
from pipeline.training.params import TrainParams
from serve.errors import UserError


def main(fold: int, seed: int | None = None, sync_bn: bool = False) -> dict:
    """Train fold `fold` with `seed` (default: its seed in train.folds)."""
    params = load_section("train", TrainParams)
    seed = fold_seed(params, fold, seed)
    if world_size() > 1:  # started by torchrun
        return train_distributed(params, fold, seed, sync_bn=sync_bn)
    if sync_bn:
        raise UserError("--sync-bn applies to DDP runs under torchrun (WORLD_SIZE > 1)")
    return run_fold(params, fold, seed)


if __name__ == "__main__":
    run_stage(main)
