"""Scaling out on maintained engines: Ray for parallel folds and batch inference, torch.distributed
(torchrun) for one fold on several GPUs, DVC's run-cache for folds built on several machines.

    foldwise train --parallel [--address ray://head:10001]     # parallel_folds.py: every stale train@k at once
    torchrun --nproc-per-node 4 --no-python foldwise train --fold 0   # ddp.py: one fold, N processes
    foldwise predict --ray --input 'shards/*.csv' --model m.onnx --output preds.csv   # ray_predict.py
    (dvcstate.py: what DVC knows of the fold stages; `foldwise bench parallel`: pipeline/bench/parallel.py)

Ray is an optional extra (`pip install -e '.[ray]'`); nothing here imports it at module level,
and nothing used by inference imports torch.
"""
