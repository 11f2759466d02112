"""Stage `pseudo@k`: pseudo-label rounds of fold k (pipeline/training/pseudo.py: why its score stays
out of fold); with `train.pseudo_labels.rounds: 0` (the default) it only records that it is off,
in a second and without importing torch.

    python -m pipeline.stages.pseudo --fold 0 --seed 0     # what dvc.yaml runs; by hand: foldwise pseudo --fold 0

Reads params.yaml `train` (the recipe of every round, and `train.pseudo_labels`), data/prepared/
and models/folds/fold<k>/ (round 0). Writes models/pseudo/fold<k>/.
"""
from __future__ import annotations

from pipeline.core.config import read_params
from pipeline.core.console import run_stage
from pipeline.training.pseudo import record_off, run_pseudo_fold


def _off(fold: int) -> bool:
    """True when params.yaml says rounds: 0 (absent: the default) for a fold it lists. The train@k
    stage before this one validated the whole section (train.pseudo_labels included)."""
    section = read_params().get("train") or {}
    pl = section.get("pseudo_labels") if isinstance(section, dict) else None
    rounds = (pl or {}).get("rounds", 0) if isinstance(pl, dict) or pl is None else None
    folds = section.get("folds") if isinstance(section, dict) else None
    listed = isinstance(folds, list) and fold in [s.get("fold") for s in folds if isinstance(s, dict)]
    return rounds == 0 and not isinstance(rounds, bool) and listed


def main(fold: int, seed: int | None = None) -> dict:
    """Pseudo-label rounds of fold `fold` with `seed` (default: its seed in train.folds)."""
    if _off(fold):
        return record_off(fold)
    from pipeline.core.config import load_section
    from pipeline.training.fold import fold_seed
    from pipeline.training.params import TrainParams

    params = load_section("train", TrainParams)  # the whole section validated (bad values fail here, one line)
    return run_pseudo_fold(params, fold, fold_seed(params, fold, seed))


if __name__ == "__main__":
    run_stage(main)
