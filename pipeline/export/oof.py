"""Any exported ensemble graph scored out of fold at the cost of one fold model per row.

    own = own_fold_probs(Path("ensemble_int8.onnx"), images_nchw, row_folds, fold_order, work_dir)
    # own[i] = that graph's fold_probs[i, fold_order.index(row_folds[i])], from fold k's nodes alone

A row's out-of-fold prediction is its own fold's column of `fold_probs`. Running the whole graph
for it computes every fold model under every view and throws K - 1 of K away. EnsembleModel makes
each fold's column final before it is concatenated into `fold_probs` (pipeline/modeling/ensemble.py),
so fold k's part of a graph is a subgraph of it: `onnx.utils.extract_model` cuts it out (the same
nodes, weights and quantisation parameters, nothing added) and it runs on fold k's rows only.
A graph whose `fold_probs` is not such a concatenation (an older export) is run whole.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx.utils

from serve.engine import cpu_session, run_graph

_logger = logging.getLogger(__name__)
PASS_THROUGH = ("Cast", "Identity")  # FP16's output cast sits between the concatenation and `fold_probs`


def fold_outputs(path: Path, n_folds: int) -> list[str] | None:
    """The tensor holding each fold's [N, 1, C] column of `fold_probs`, in fold order; None when the
    graph is not made that way."""
    if n_folds == 1:
        return ["fold_probs"]  # the graph is fold 0's part
    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {out: node for node in graph.node for out in node.output}
    name = "fold_probs"
    while name in made_by and made_by[name].op_type in PASS_THROUGH:
        name = made_by[name].input[0]
    node = made_by.get(name)
    if node is None or node.op_type != "Concat" or len(node.input) != n_folds:
        return None
    return list(node.input)


def own_fold_probs(path: Path, images_nchw: np.ndarray, row_folds: np.ndarray, fold_order: list[int],
                   work_dir: Path, batch_size: int = 256) -> np.ndarray:
    """[N, C] float32: each row by the fold model that did not train on it, from `path`'s own nodes."""
    column = np.array([fold_order.index(f) for f in row_folds])
    outputs = fold_outputs(path, len(fold_order))
    if outputs is None:
        _logger.warning("%s: fold_probs is not one column per fold; scoring with the whole graph", path.name)
        _, fold_probs = run_graph(path, images_nchw, batch_size)
        return fold_probs[np.arange(len(column)), column].astype(np.float32)
    own = np.empty((len(column), 0), np.float32)
    for k, output in enumerate(outputs):
        rows = np.flatnonzero(column == k)
        if not len(rows):
            continue
        part = path if len(outputs) == 1 else work_dir / f"{path.stem}.fold{k}.onnx"
        if part != path:
            onnx.utils.extract_model(str(path), str(part), ["images"], [output])
        session = cpu_session(part)
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            got = np.asarray(session.run([output], {"images": images_nchw[idx]})[0], np.float32).reshape(len(idx), -1)
            if not own.shape[1]:
                own = np.empty((len(column), got.shape[1]), np.float32)
            own[idx] = got
        if part != path:
            part.unlink()
    return own
