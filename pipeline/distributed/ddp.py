"""One fold on several processes (GPUs, or CPU processes) with torch.distributed DDP, under torchrun.

    torchrun --nproc-per-node 4 --no-python foldwise train --fold 0            # 4 GPUs of one box
    torchrun --nproc-per-node 4 -m pipeline.stages.train --fold 0              # the same, as dvc.yaml's command
    torchrun --nproc-per-node 4 --no-python foldwise train --fold 0 --sync-bn  # BatchNorm statistics over all 4
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint head:29400 \\
        --no-python foldwise train --fold 0                                     # 16 GPUs on 2 nodes

The train stage (pipeline/stages/train.py) sees torchrun's WORLD_SIZE and runs the same training
loop as a single process (pipeline/training/fold.py `run_fold`), with these hooks:
- batches: torch's `DistributedSampler` over the fold's training rows, seeded with the fold's
  seed and `set_epoch` each epoch; each rank takes `train.batch_size / world_size` rows per step
  (the global batch, hence the schedule, stays the one params.yaml gives);
- the model: `DistributedDataParallel` (NCCL on GPUs, one device per process via LOCAL_RANK; gloo
  on CPUs), optionally with `SyncBatchNorm` (`--sync-bn`; torch supports it on GPUs only);
- validation: every rank predicts a disjoint slice of the fold's OOF rows with rank 0's weights,
  the slices are gathered and checked to cover every OOF row exactly once, and the metric is
  computed on all of them;
- outputs: rank 0 alone writes the per-epoch checkpoint and the fold's outputs. Kill any rank
  (torchrun then stops the others) and start the same command again: rank 0 reads the last
  checkpoint and broadcasts it, so every rank resumes after the last finished epoch (no shared
  filesystem needed between nodes). The checkpoint's signature includes the world size.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from torch.utils.data import DistributedSampler

from pipeline.data.batches import EpochBatches, derive_seed
from pipeline.training.fold import run_fold
from pipeline.training.hardware import resolve_device
from pipeline.training.params import TrainParams
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def world_size() -> int:
    """Processes in this torchrun job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class ShardedEpochBatches(EpochBatches):
    """This rank's batches: torch's DistributedSampler (seeded, padded to equal length) in batches."""

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.shard = DistributedSampler(range(len(rows)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        super().__init__(rows, batch_size, seed, drop_last=len(self.shard) > batch_size)
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.shard.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.shard)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        order = self.rows[np.fromiter(iter(self.shard), dtype=np.int64)]
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size], derive_seed(self.seed, self.epoch, b, self.rank)


class DDPContext:
    """What pipeline/training/fold.py's `run_fold(dist=...)` asks of a distributed run (see the module docstring)."""

    def __init__(self, sync_bn: bool = False) -> None:
        self.rank = torch_dist.get_rank()
        self.world = torch_dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.sync_bn = sync_bn

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def signature(self) -> dict:
        """Part of the checkpoint signature: a checkpoint resumes only with the same world size."""
        return {"ddp_world_size": self.world, "sync_bn": self.sync_bn}

    def setup_kwargs(self, train_rows: np.ndarray, params, seed: int, device: torch.device) -> dict:
        if params.batch_size % self.world:
            raise UserError(f"params.yaml: train.batch_size: {params.batch_size} is not divisible by the "
                            f"{self.world} torchrun processes (each takes an equal share of the batch)")
        if self.sync_bn and device.type != "cuda":
            raise UserError("--sync-bn: torch's SyncBatchNorm runs on CUDA devices only; drop it for CPU processes")
        sampler = ShardedEpochBatches(train_rows, params.batch_size // self.world, seed, self.rank, self.world)
        return {"sampler": sampler, "wrap": lambda model: self.wrap(model, device)}

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP around the model (SyncBatchNorm first, in place, when asked)."""
        from torch.nn.parallel import DistributedDataParallel

        if self.sync_bn:
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            if converted is not model:
                raise UserError("--sync-bn: the model is a bare BatchNorm layer")
        ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def broadcast_object(self, obj: object) -> object:
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """Per rank and epoch: dropout and augmentation differ between ranks, and repeat on resume."""
        return derive_seed(seed, epoch, self.rank)

    def reduce_stats(self, loss: float, accuracy: float, count: int) -> tuple[float, float, int]:
        """Training loss and accuracy over every rank's rows (count-weighted)."""
        t = torch.tensor([loss * count, accuracy * count, float(count)], dtype=torch.float64)
        torch_dist.all_reduce(t)
        total = max(t[2].item(), 1.0)
        return t[0].item() / total, t[1].item() / total, int(t[2].item())

    def gather_rows(self, predict: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                    model: nn.Module) -> np.ndarray:
        """`predict(rows)` computed in disjoint slices on every rank with rank 0's weights, gathered in
        `rows` order; RuntimeError unless every row was predicted exactly once."""
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                torch_dist.broadcast(tensor.data, src=0)
        positions = np.array_split(np.arange(len(rows)), self.world)[self.rank]
        mine = predict(rows[positions])
        parts: list = [None] * self.world
        torch_dist.all_gather_object(parts, (positions, mine))
        where = np.concatenate([p for p, _ in parts])
        counts = np.bincount(where, minlength=len(rows))
        if len(where) != len(rows) or not (counts == 1).all():
            raise RuntimeError(f"OOF gather: {len(where)} predictions for {len(rows)} rows "
                               f"({int((counts == 0).sum())} missing, {int((counts > 1).sum())} repeated)")
        out = np.empty((len(rows), mine.shape[1]), dtype=mine.dtype)
        out[where] = np.concatenate([probs for _, probs in parts])
        if self.is_main:
            _logger.info("OOF rows gathered from %d ranks: %d rows, each exactly once", self.world, len(rows))
        return out


def train_distributed(params: TrainParams, fold: int, seed: int, sync_bn: bool = False) -> dict:
    """Under torchrun: init the process group, train the fold on every rank, tear down (rank 0's metrics)."""
    device = resolve_device(params.device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        ctx = DDPContext(sync_bn=sync_bn)
        if not ctx.is_main:  # one voice in the log
            logging.getLogger("pipeline").setLevel(logging.WARNING)
        _logger.info("fold %d: DDP over %d processes (%s, rank %d)", fold, ctx.world,
                     torch_dist.get_backend(), ctx.rank)
        return run_fold(params, fold, seed, dist=ctx)
    finally:
        torch_dist.destroy_process_group()
