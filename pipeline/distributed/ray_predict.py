"""Batch inference over a large input on a Ray cluster: Ray Data `map_batches` over an actor pool
of onnxruntime sessions (serve/engine.py's Engine), sharded outputs, then one submission.

    foldwise predict --ray --model models/ensemble.onnx --input 'test/*.csv' --output preds.csv
    foldwise predict --ray --address head:6379 --workers 8 --model models/ensemble.onnx \\
        --input test_images/ --sample sample_submission.csv --output submission.csv

- The input is cut into shards (pipeline/distributed/shards.py: one pixel CSV, or up to
  `--shard-rows` images of a folder). Reading a shard's bytes is a Ray task pinned to this
  machine (the input need not be on the workers); decoding and onnxruntime run in the actors,
  one per GPU (`num_gpus=1`) when the cluster has GPUs, otherwise CPU actors with `--threads`
  threads each. The model reaches the actors through Ray's object store.
- An actor decodes a shard with the same readers `foldwise predict` uses and formats its rows
  with the same function; this machine writes each finished shard atomically to
  `<output>.shards/` as results stream back, so a run started again after a crash, a kill or
  a bad shard skips the finished shards.
- When every shard is done, their rows are joined in input order; with `--sample` they are
  reordered like the sample submission and validated, exactly as `foldwise predict` does, so
  the file is byte-identical to `foldwise predict` on one machine over the same images.
- A bad shard (a malformed CSV row, an unreadable image) does not stop the others: they are
  finished and kept, then the run ends with one line naming the file, row and column.

Needs only onnxruntime, numpy and ray on the workers (no torch).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.distributed.cluster import connect, node_id
from pipeline.distributed.shards import Shard, ShardState, plan_shards, refuse_overwriting_shards
from serve.atomic import sha256_file
from serve.engine import Engine
from serve.errors import UserError
from serve.paths import refuse_overwrite
from serve.predict import PARTIAL_SUFFIXES, finish_outputs, format_rows, open_reader, output_headers

_logger = logging.getLogger(__name__)


def read_shard(row: dict) -> dict:
    """A Ray Data `map` step on this machine: the shard's file bytes (names kept)."""
    files = list(row["files"])
    return {"index": row["index"], "kind": row["kind"], "source": row["source"],
            "names": [Path(f).name for f in files], "payloads": [Path(f).read_bytes() for f in files]}


class ShardPredictor:
    """A Ray Data actor: one onnxruntime session; (shard bytes) -> (shard's CSV rows, or an error)."""

    def __init__(self, model: list, provider: str, threads: int | None, batch_size: int, chunk_rows: int,
                 with_probs: bool) -> None:
        import ray

        self.dir = Path(tempfile.mkdtemp(prefix="foldwise-predict-"))
        path = self.dir / "model.onnx"
        path.write_bytes(ray.get(model[0]))  # the ONNX file, from the object store
        self.engine = Engine(path, provider=provider, threads=threads, data_parallel=True)  # as `foldwise predict`
        self.batch_size, self.chunk_rows, self.with_probs = batch_size, chunk_rows, with_probs
        self.node = node_id()

    def _predict(self, kind: str, names: list[str], payloads: list[bytes], work: Path) -> list[bytes]:
        if kind == "csv":
            target = work / names[0]
            target.write_bytes(payloads[0])
        else:
            target = work / "images"
            target.mkdir()
            for name, data in zip(names, payloads):
                (target / name).write_bytes(data)
        texts: list[list[bytes]] = []
        reader = open_reader(self.engine, target, None)
        if getattr(reader, "id_column", "") is None:  # ids would restart at 0 in every shard
            raise UserError(f"{target}: no '{self.engine.info.id_column}' column: with --ray every pixel CSV "
                            "needs its ids (`foldwise predict --sample` numbers the rows of a single CSV)")
        for chunk in reader.chunks(self.chunk_rows):
            probs = self.engine.predict_batched(chunk.images, self.batch_size)
            texts.append(format_rows(self.engine.info, chunk.ids, probs, self.with_probs))
        return [b"".join(parts) for parts in zip(*texts)] if texts else [b""] * (1 + self.with_probs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "labels": [], "probs": [], "error": [], "node": [], "seconds": []}
        for i in range(len(batch["index"])):
            t0 = time.perf_counter()
            kind, source = str(batch["kind"][i]), str(batch["source"][i])
            names, payloads = list(batch["names"][i]), list(batch["payloads"][i])
            texts, error = [b"", b""], ""
            with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
                try:
                    texts = self._predict(kind, names, payloads, Path(tmp)) + [b""]
                except UserError as exc:  # name the user's file, not our temporary copy
                    where = os.path.join(tmp, "images") if kind == "images" else os.path.join(tmp, names[0])
                    error = str(exc).replace(where, source)
            out["index"].append(int(batch["index"][i]))
            out["labels"].append(texts[0])
            out["probs"].append(texts[1])
            out["error"].append(error)
            out["node"].append(self.node)
            out["seconds"].append(time.perf_counter() - t0)
        return out


def predict_distributed(model: Path, input_spec: str, output: Path, sample: Path | None = None,
                        probs_output: Path | None = None, address: str | None = None, workers: int | None = None,
                        threads: int | None = None, provider: str = "auto", batch_size: int = 256,
                        shard_rows: int = 4096, chunk_rows: int = 4096) -> dict:
    """Predict every shard of `input_spec` on Ray and write `output` (and `probs_output`)."""
    if batch_size < 1 or chunk_rows < 1:
        raise UserError(f"--batch-size and --chunk-rows must be at least 1, got {batch_size}, {chunk_rows}")
    shards = plan_shards(input_spec, shard_rows)
    refuse_overwrite({"--output": output, "--probs": probs_output}, {"--sample": sample, "--model": model},
                     partial_suffixes=(*PARTIAL_SUFFIXES, ".shards"))
    refuse_overwriting_shards({"--output": output, "--probs": probs_output}, shards)
    info = Engine(model, provider="cpu", threads=1).info  # checks the model here, before any cluster work
    with_probs = probs_output is not None
    state = ShardState(output, sha256_file(model), with_probs)
    todo = [s for s in shards if not state.done(s)]
    _logger.info("%d shards: %d already done, %d to run", len(shards), len(shards) - len(todo), len(todo))
    errors: list[tuple[Shard, str]] = []
    nodes: set[str] = set()
    t0 = time.perf_counter()
    if todo:
        errors, nodes = _run_on_ray(todo, model, state, address, workers, threads, provider, batch_size,
                                    chunk_rows, with_probs)
    if errors:
        shard, message = sorted(errors, key=lambda e: e[0].index)[0]
        done = len(shards) - len(errors)
        raise UserError(f"{message} ({done} of {len(shards)} shards done and kept in {state.dir}; fix "
                        f"{shard.source} and run the same command again: finished shards are skipped)")
    finals = [output] + ([probs_output] if with_probs else [])
    partials = [f.with_name(f.name + ".partial") for f in finals]
    rows = state.concatenate(shards, output_headers(info, with_probs), partials)
    try:
        finish_outputs(list(zip(partials, finals)), sample, info, input_spec)
    finally:
        for p in partials:
            p.unlink(missing_ok=True)
    state.remove()
    return {"rows": rows, "shards": len(shards), "ran": len(todo), "nodes": sorted(nodes),
            "seconds": time.perf_counter() - t0}


def _run_on_ray(todo: list[Shard], model: Path, state: ShardState, address: str | None, workers: int | None,
                threads: int | None, provider: str, batch_size: int, chunk_rows: int,
                with_probs: bool) -> tuple[list[tuple[Shard, str]], set[str]]:
    ray = connect(address)
    from ray import data as ray_data  # Ray Data: the optional extra's heavier half

    context = ray_data.DataContext.get_current()  # our per-shard log lines are the progress report
    context.enable_progress_bars = context.print_on_execution_start = context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    resources = ray.cluster_resources()
    gpus = 1.0 if provider != "cpu" and resources.get("GPU", 0) >= 1 else 0.0
    if provider == "cuda" and not gpus:
        raise UserError("--provider cuda: the Ray cluster has no GPUs")
    cpus = float(threads or 1)
    if workers is None:
        workers = int(resources.get("GPU", 0)) if gpus else max(1, int(resources.get("CPU", 1) // (cpus + 0.25)))
    workers = max(1, min(workers, len(todo)))
    here = ray.get_runtime_context().get_node_id()
    by_index = {s.index: s for s in todo}
    ds = ray_data.from_items([{"index": s.index, "kind": s.kind, "source": s.source, "files": list(s.files)}
                              for s in todo], override_num_blocks=len(todo))
    ds = ds.map(read_shard, num_cpus=0.25, label_selector={"ray.io/node-id": here})  # read where the input is
    ds = ds.map_batches(ShardPredictor, batch_size=1, compute=ray_data.ActorPoolStrategy(size=workers),
                        num_cpus=cpus, num_gpus=gpus,
                        fn_constructor_kwargs={"model": [ray.put(model.read_bytes())],
                                               "provider": "cuda" if gpus else "cpu",
                                               "threads": threads or 1, "batch_size": batch_size,
                                               "chunk_rows": chunk_rows, "with_probs": with_probs})
    _logger.info("%d shards on %d %s actors (%g CPUs, %g GPUs each)", len(todo), workers, "GPU" if gpus else "CPU",
                 cpus, gpus)
    errors, nodes, finished = [], set(), 0
    for row in ds.iter_rows():
        shard = by_index[int(row["index"])]
        nodes.add(str(row["node"]))
        finished += 1
        if row["error"]:
            errors.append((shard, str(row["error"])))
            _logger.warning("shard %d (%s) failed: %s", shard.index, shard.source, row["error"])
            continue
        state.save(shard, [bytes(row["labels"])] + ([bytes(row["probs"])] if with_probs else []))
        _logger.info("shard %d/%d done on node %s (%s, %.1f s)", finished, len(todo), row["node"], shard.source,
                     row["seconds"])
    return errors, nodes
