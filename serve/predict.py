"""Predict labels for a held-out set with an ONNX ensemble: streaming, overlapped, resumable.

    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise predict --model models/export.json --input data/prepared/test_images.npy \\
        --ids data/prepared/test_ids.csv --sample data/prepared/sample_submission.csv \\
        --output submissions/submission.csv

Input: a pixel CSV, a uint8 `.npy` or a folder of images, read in chunks by a producer thread
into a bounded queue while onnxruntime works on the previous chunk, so memory stays flat
however large the set. Each finished chunk is appended to `<output>.partial` and recorded in
`<output>.partial.json`; a killed run started again with the same input, model and chunk size
continues after the last finished chunk, and the final file is byte-identical to an
uninterrupted run's. With `--sample`, rows follow the sample submission's id order and the file
is checked against it (columns, ids, classes) before it replaces the output. `--model
models/export.json` runs the graph export chose: the fastest whose OOF accuracy is within
`export.predict_tolerance` of FP32 (e.g. INT8), and says which and why.
"""
from __future__ import annotations

import io
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from serve.atomic import atomic_path, sha256_file, write_json
from serve.csvfiles import read_csv_strings
from serve.engine import Engine, ModelInfo, resolve_model
from serve.errors import UserError
from serve.paths import refuse_overwrite
from serve.readers import ImageFolderReader, NpyReader, PixelCsvReader
from serve.submission import PROB_FORMAT

_logger = logging.getLogger(__name__)
_DONE = object()
PARTIAL_SUFFIXES = (".partial", ".partial.json")  # beside each output while a run is under way


class Interrupted(Exception):
    """`stop` was set: the run ended after its last finished chunk and can be resumed."""


class Predictor(Protocol):
    """What `predict_file` needs of an engine (`serve.engine.Engine`, or the HTTP server's batcher)."""
    info: ModelInfo
    provider: str

    def predict_batched(self, images: np.ndarray, batch_size: int) -> np.ndarray: ...


@dataclass(frozen=True)
class PredictResult:
    rows: int
    seconds: float
    images_per_second: float
    provider: str
    resumed_rows: int
    model: str = ""
    why: str | None = None  # why this graph (when --model named export's report)

    def summary(self, output: Path | str) -> str:
        """The line `foldwise predict` and the predict stage print."""
        resumed = f" (resumed after {self.resumed_rows})" if self.resumed_rows else ""
        return (f"wrote {output}: {self.rows} rows{resumed}, {self.images_per_second:.0f} images/s on {self.provider}"
                + (f" with {self.model} ({self.why})" if self.why else ""))


def open_reader(engine: Predictor, input_path: Path, ids_path: Path | None = None):
    """The chunked reader for a pixel CSV, a uint8 .npy or a folder of images (by suffix)."""
    info = engine.info
    if input_path.is_dir():
        return ImageFolderReader(input_path, info.image, info.id_form)
    suffix = input_path.suffix.lower()
    if suffix == ".csv":
        return PixelCsvReader(input_path, info.image, info.id_column, ignore_columns=info.submission.columns,
                              pixel_shape=info.pixel_shape)
    if suffix == ".npy":
        ids = None
        if ids_path is not None:
            ids_df = read_csv_strings(ids_path)
            if info.id_column not in ids_df.columns:
                raise UserError(f"{ids_path}: no column '{info.id_column}' (the model's id column)")
            ids = ids_df[info.id_column].tolist()
        return NpyReader(input_path, info.image_shape, ids)
    raise UserError(f"{input_path}: unsupported input '{suffix}' (a pixel .csv, a uint8 .npy or a folder of images)")


def _row_ids_from_sample(reader, sample: Path | None, input_path: Path):
    """For a pixel CSV without an id column (Digit Recognizer's test.csv): the sample submission's
    ids in file order, as a function of the row number; None when the input has its own ids."""
    if sample is None or not isinstance(reader, PixelCsvReader) or reader.id_column is not None:
        return None
    ids = read_csv_strings(sample).iloc[:, 0].tolist()

    def lookup(row: str) -> str:
        i = int(row)
        if i >= len(ids):
            raise UserError(f"{input_path}: has no id column and more rows than {sample} ({len(ids)}): "
                            f"row {i + 1} cannot be given an id")
        return ids[i]
    return lookup


def _file_digest(path: Path) -> str:
    return sha256_file(path)


def _signature(model: Path, input_path: Path, chunk_rows: int, with_probs: bool) -> dict:
    st = input_path.stat()
    return {"model_sha256": _file_digest(model), "input": str(input_path.resolve()), "input_size": st.st_size,
            "input_mtime_ns": st.st_mtime_ns, "chunk_rows": chunk_rows, "probs": with_probs}


class _Producer(threading.Thread):
    """Reads chunks ahead into a bounded queue (reading and decoding overlap inference)."""

    def __init__(self, chunks, depth: int = 2) -> None:
        super().__init__(daemon=True)
        self.chunks, self.queue, self.stop = chunks, queue.Queue(maxsize=depth), threading.Event()

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                while not self.stop.is_set():
                    try:
                        self.queue.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, which re-raises it)
            self.queue.put(exc)
            return
        self.queue.put(_DONE)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def csv_text(df: pd.DataFrame, header: bool, float_format: str | None = None) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=header, float_format=float_format, lineterminator="\n")
    return buf.getvalue().encode()


class _ResumableOutput:
    """`<path>.partial` appended chunk by chunk, with `<path>.partial.json` recording what is done."""

    def __init__(self, path: Path, header: bytes) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.header = header

    def open(self, done_bytes: int | None):
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if done_bytes is None:
            fh = open(self.partial, "wb")
            fh.write(self.header)
        else:
            fh = open(self.partial, "r+b")
            fh.truncate(done_bytes)
            fh.seek(done_bytes)
        return fh


def _partial_state(state_path: Path, signature: dict, outs: list[_ResumableOutput]) -> dict | None:
    """The state of an interrupted run, when it is this very run's (model, input, chunking) and its
    partial files still hold every byte it recorded; else None (start afresh)."""
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError:
        return None
    if state.get("signature") != signature or not all(
            o.partial.exists() and o.partial.stat().st_size >= b for o, b in zip(outs, state["bytes"])):
        return None
    return state


def _choose_model(model: Path, provider: str, outputs: dict, inputs: dict) -> tuple[Path, str | None]:
    """The graph to run (export's choice when `model` is models/export.json) and why; no output may be
    an input or that graph."""
    refuse_overwrite(outputs, {**inputs, "--model": model}, partial_suffixes=PARTIAL_SUFFIXES)
    chosen, why = resolve_model(model, provider)
    if why:
        _logger.info("predict with %s (%s)", chosen, why)
        refuse_overwrite(outputs, {"--model": chosen}, partial_suffixes=PARTIAL_SUFFIXES)
    return chosen, why


def _write_durably(handles: list, texts: list[bytes]) -> None:
    """One chunk's rows to each output, flushed to disk before its state is recorded."""
    for fh, text in zip(handles, texts):
        fh.write(text)
    for fh in handles:
        fh.flush()
        os.fsync(fh.fileno())


def predict_file(model: str | os.PathLike, input_path: str | os.PathLike, output: str | os.PathLike,
                 ids_path: str | os.PathLike | None = None, sample: str | os.PathLike | None = None,
                 batch_size: int = 256, provider: str = "auto", threads: int | None = None,
                 probs_output: str | os.PathLike | None = None, chunk_rows: int = 4096,
                 require_gpu: bool = False, engine: Predictor | None = None,
                 progress: Callable[[int, int | None], None] | None = None,
                 stop: threading.Event | None = None) -> PredictResult:
    """Run the model over `input_path`; write `id,label` to `output` (and probabilities if asked).

    `engine`: run on this one instead of opening a session (the server shares its own);
    `progress(rows_done, rows_total or None)` after every finished chunk; `stop` set: raise
    `Interrupted` after the current chunk, leaving the partial files for a later resume."""
    if batch_size < 1 or chunk_rows < 1:
        raise UserError(f"--batch-size and --chunk-rows must be at least 1, got {batch_size}, {chunk_rows}")
    input_path, output = Path(input_path), Path(output)
    model, why = _choose_model(Path(model), provider, {"--output": output, "--probs": probs_output},
                               {"--input": input_path, "--ids": ids_path, "--sample": sample})
    if engine is None:
        engine = Engine(model, provider=provider, threads=threads, require_gpu=require_gpu, data_parallel=True)
    info = engine.info
    if not input_path.exists():
        raise UserError(f"{input_path}: file not found")
    reader = open_reader(engine, input_path, Path(ids_path) if ids_path else None)
    state_path = output.with_name(output.name + ".partial.json")
    signature = _signature(model, input_path, chunk_rows, probs_output is not None)
    row_ids = _row_ids_from_sample(reader, Path(sample) if sample else None, input_path)
    headers = output_headers(info, probs_output is not None)
    outs = [_ResumableOutput(path, head) for path, head in zip([output, probs_output], headers)]
    state = _partial_state(state_path, signature, outs)
    done_rows = state["rows"] if state else 0
    if state:
        _logger.info("resuming %s after %d rows (%d chunks)", output, done_rows, state["chunks"])
    handles = [o.open(state["bytes"][i] if state else None) for i, o in enumerate(outs)]
    producer = _Producer(reader.chunks(chunk_rows, skip=done_rows))
    total = len(getattr(reader, "files", getattr(reader, "array", []))) or None
    chunks_done, rows, t0, last_log = ((state["chunks"] if state else 0), done_rows, time.perf_counter(),
                                       time.monotonic())
    try:
        producer.start()
        with tqdm(desc=f"predict ({engine.provider})", unit="img", total=total, initial=done_rows,
                  disable=not sys.stderr.isatty() or bool(os.environ.get("FOLDWISE_QUIET")), file=sys.stderr,
                  smoothing=0.1) as bar:
            for chunk in producer:
                probs = engine.predict_batched(chunk.images, batch_size)
                ids = [row_ids(i) for i in chunk.ids] if row_ids else chunk.ids
                _write_durably(handles, format_rows(info, ids, probs, len(handles) > 1))
                chunks_done += 1
                rows += len(chunk.ids)
                write_json(state_path, {"signature": signature, "chunks": chunks_done, "rows": rows,
                                        "bytes": [fh.tell() for fh in handles]})
                bar.update(len(chunk.ids))
                if progress is not None:
                    progress(rows, total)
                if stop is not None and stop.is_set():
                    raise Interrupted(f"{output}: stopped after {rows} rows ({chunks_done} chunks); "
                                      "run again to resume")
                if bar.disable and time.monotonic() - last_log >= 10:  # no terminal: a log line every 10 s
                    last_log = time.monotonic()
                    _logger.info("predict: %d images, %.0f images/s", rows,
                                 (rows - done_rows) / (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        for fh in handles:
            fh.close()
        finish_outputs([(o.partial, o.path) for o in outs], sample, info, input_path)
    except UserError:  # bad input: nothing of this run may stay behind
        for fh in handles:
            fh.close()
        for path in (*(o.partial for o in outs), state_path):
            path.unlink(missing_ok=True)
        raise
    finally:
        producer.stop.set()
        for fh in handles:
            fh.close()
    state_path.unlink(missing_ok=True)
    speed = (rows - done_rows) / max(seconds, 1e-9)
    _logger.info("%d rows -> %s (%.0f images/s on %s)", rows, output, speed, engine.provider)
    return PredictResult(rows=rows, seconds=seconds, images_per_second=speed, provider=engine.provider,
                         resumed_rows=done_rows, model=str(model), why=why)


def output_headers(info: ModelInfo, with_probs: bool) -> list[bytes]:
    """Header lines of the submission CSV (and of the probabilities CSV)."""
    heads = [(",".join(info.submission.header) + "\n").encode()]
    return heads + [(",".join([info.id_column, *info.classes]) + "\n").encode()] if with_probs else heads


def format_rows(info: ModelInfo, ids: list[str], probs: np.ndarray, with_probs: bool) -> list[bytes]:
    """CSV rows (no header) of the submission (and of the probabilities) for one chunk of images."""
    texts = [csv_text(info.submission.frame(ids, probs), header=False, float_format=PROB_FORMAT)]
    if with_probs:
        pdf = pd.DataFrame(probs, columns=info.classes)
        pdf.insert(0, info.id_column, ids)
        texts.append(csv_text(pdf, header=False, float_format=PROB_FORMAT))
    return texts


def finish_outputs(files: list[tuple[Path, Path]], sample, info, input_path) -> None:
    """Move finished (partial, final) files into place, labels first; with a sample submission,
    reorder the labels like it and validate them before they replace the output."""
    from serve.submission import validate_submission

    if sample is None:
        for partial, final in files:
            os.replace(partial, final)
        return
    (label_partial, output), rest = files[0], files[1:]
    sample_df = read_csv_strings(sample)
    df = read_csv_strings(label_partial)
    by_id = df.set_index(df.columns[0])
    if by_id.index.duplicated().any():
        raise UserError(f"{input_path}: id '{by_id.index[by_id.index.duplicated()][0]}' appears twice")
    order = sample_df.iloc[:, 0]
    extra = by_id.index[~by_id.index.isin(set(order))]
    if len(extra):
        raise UserError(f"{input_path}: id '{extra[0]}' is not in {sample} ({len(extra)} such ids)")
    missing = order[~order.isin(by_id.index)]
    if len(missing):
        raise UserError(f"{input_path}: id '{missing.iloc[0]}' of {sample} has no image ({len(missing)} ids missing)")
    df = by_id.loc[order].reset_index()
    df.columns = list(sample_df.columns)
    with atomic_path(output) as tmp:
        tmp.write_bytes(csv_text(df, header=True))
        validate_submission(tmp, sample, info.submission, name=str(output))
    label_partial.unlink()
    for partial, final in rest:
        os.replace(partial, final)
