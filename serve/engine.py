"""Batch inference with onnxruntime on a foldwise ensemble (`models/ensemble.onnx`).

    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv

The ONNX file carries what serving needs as metadata (classes, image shape, id/target column
names), so this module needs nothing from training. CUDA is used when onnxruntime has it and a
GPU is present, otherwise the CPU; `Engine.provider` says which one the session really got.
"""
from __future__ import annotations

import json
import logging
import os
import time
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serve.errors import UserError, first_line
from serve.images import ImageSpec, usable_cores
from serve.readers import Chunk
from serve.submission import SubmissionSpec

_logger = logging.getLogger(__name__)


def cpu_session(path: Path) -> ort.InferenceSession:
    """A quiet onnxruntime CPU session (export's checks and scores, the report's tables)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(path: Path, images_nchw: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """`probs` and `fold_probs` of an ensemble graph on the CPU, batch by batch (export's parity and
    OOF checks, the report's per-fold test scores)."""
    session = cpu_session(path)
    outs = [session.run(["probs", "fold_probs"], {"images": images_nchw[i:i + batch_size]})
            for i in range(0, len(images_nchw), batch_size)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


@dataclass(frozen=True)
class ModelInfo:
    """What `export` writes into the ONNX metadata."""
    classes: list[str]          # class values as the competition spells them, index = class index
    class_names: list[str]      # human-readable names
    image_shape: tuple[int, int, int]  # H, W, C of the model's input
    id_column: str
    target_column: str
    folds: list[int]
    submission: SubmissionSpec  # what a submission row holds (label, P(positive) or per-class probabilities)
    image: ImageSpec            # how any image file becomes the model's input (serve.images)
    pixel_shape: tuple[int, int, int]  # H, W, C of a pixel-CSV row (prepare's source shape)
    id_form: str                # image-folder ids: "name" (file name) or "stem" (without extension)
    metric: str


def gpu_present() -> bool:
    """True when an NVIDIA GPU device is visible to this process (Linux driver files)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


PROVIDERS = ("auto", "cpu", "cuda")  # what --provider / predict.provider may ask for
DATA_PARALLEL_BYTES = 1 << 30  # `data_parallel`: at most this much model file in copies (one per core)


def choose_providers(request: str = "auto") -> list[str]:
    """Execution providers for a session: 'auto' (CUDA if usable, else CPU), 'cuda' or 'cpu'."""
    available = ort.get_available_providers()
    if request == "cpu":
        return ["CPUExecutionProvider"]
    cuda_ok = "CUDAExecutionProvider" in available and gpu_present()
    if request == "cuda" and not cuda_ok:
        raise UserError("--provider cuda: no CUDA GPU usable by onnxruntime here "
                        f"(available providers: {', '.join(available)}; GPU present: {gpu_present()})")
    if cuda_ok:
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except (OSError, RuntimeError) as exc:  # CUDA libraries not loadable: CPU it is
                _logger.warning("could not preload CUDA libraries (%s); using the CPU", exc)
                return ["CPUExecutionProvider"]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def resolve_model(path: Path, provider: str = "auto") -> tuple[Path, str | None]:
    """An .onnx path as given; for export's report (`models/export.json`), the graph it chose for
    predict (the fastest within its OOF tolerance of fp32) with the reason, or fp32 when this run's
    execution provider is not the one export timed the graphs on."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return path, None
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run the export stage first)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    choice = report.get("predict_graph") if isinstance(report, dict) else None
    if not isinstance(choice, dict) or not isinstance(choice.get("file"), str):
        raise UserError(f"{path}: no predict_graph entry (write it with `foldwise export`, or pass an .onnx file)")
    base = path.parent.resolve()
    if Path(choice["file"]).is_absolute() or not (base / choice["file"]).resolve().is_relative_to(base):
        raise UserError(f"{path}: predict_graph.file {choice['file']!r} is outside {path.parent}")
    actual = choose_providers(provider)[0]
    if choice.get("provider") != actual:
        return path.parent / "ensemble.onnx", (f"fp32 graph: export timed the graphs on {choice.get('provider')}, "
                                               f"this run uses {actual}")
    return path.parent / choice["file"], f"{choice.get('graph')} graph: {choice.get('reason')}"


class Engine:
    """An onnxruntime session over one foldwise ensemble model."""

    def __init__(self, model_path: str | os.PathLike, provider: str = "auto",
                 threads: int | None = None, require_gpu: bool = False, spinning: bool = True,
                 small_batch: int = 0, data_parallel: bool = False) -> None:
        """`spinning=False`: onnxruntime's worker threads sleep between runs instead of spin-waiting
        (a server running many small batches leaves that CPU to its HTTP side). `small_batch=n` (CPU
        only): batches of fewer than n images run on a second, single-threaded session of the same
        model (a second copy in memory), so that small batches pay no thread barriers while other
        processes share the cores, and large ones still get `threads`. `data_parallel` (CPU only,
        offline batches): `threads` single-threaded sessions (a copy of the model each) run equal
        slices of a batch at once instead of one session splitting every operator `threads` ways;
        onnxruntime's INT8 convolution synchronises its threads once per image, which costs its graph
        ~10% (FP32 unchanged: docs/results.md, issue 25). Batches of fewer than two images per slice
        run on the first slice alone; a model whose copies would pass DATA_PARALLEL_BYTES keeps one
        session with `threads`."""
        self.path = Path(model_path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: model file not found")
        self.spinning = spinning
        cores = threads or usable_cores()
        providers, cpu = choose_providers(provider), ["CPUExecutionProvider"]
        slices = cores if (data_parallel and cores > 1 and cores * self.path.stat().st_size <= DATA_PARALLEL_BYTES
                           and providers == cpu) else 1
        self.session = self._open(providers, 1 if slices > 1 else threads)
        self.provider = self.session.get_providers()[0]
        self.slices = [self.session] + [self._open(cpu, 1) for _ in range(slices - 1)]
        self._pool = ThreadPoolExecutor(slices - 1, thread_name_prefix="foldwise-slice") if slices > 1 else None
        # the slices' thread stops on close() or when the engine is garbage-collected, whichever comes first
        self._close = weakref.finalize(self, self._pool.shutdown) if self._pool else lambda: None
        one_multithreaded_cpu_session = self.provider == "CPUExecutionProvider" and threads != 1 and slices == 1
        self.small_batch = small_batch if one_multithreaded_cpu_session else 0
        self.small_session = self._open(cpu, 1) if self.small_batch else None
        if require_gpu and self.provider != "CUDAExecutionProvider":
            raise UserError(f"--require-gpu: onnxruntime runs {self.path.name} on {self.provider}, not CUDA "
                            f"(available: {', '.join(ort.get_available_providers())}; GPU present: {gpu_present()})")
        self.info = self._read_info()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "probs" if "probs" in outputs else outputs[0]
        h, w, c = self.info.image_shape
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or list(inp.shape[1:]) != [c, h, w]:
            raise UserError(f"{self.path}: input {inp.name} is {inp.type} {inp.shape}, expected "
                            f"uint8 [N, {c}, {h}, {w}] as written by `foldwise export`")
        _logger.info("model %s on %s", self.path, self.provider)

    def _open(self, providers: list[str], threads: int | None) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), options, providers=providers)
        except (ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph,
                ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise UserError(f"{self.path}: not a valid ONNX model ({first_line(exc)})") from None

    def _read_info(self) -> ModelInfo:
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            classes = json.loads(meta["classes"])
            h, w, c = json.loads(meta["image_shape"])
            image = json.loads(meta.get("image", "{}"))
            spec = ImageSpec.from_dict({"height": h, "width": w, "channels": c, **image})
            submission = (SubmissionSpec.from_dict(json.loads(meta["submission"])) if "submission" in meta
                          else SubmissionSpec.labels(classes, meta["id_column"], meta["target_column"]))
            return ModelInfo(
                classes=classes,
                class_names=json.loads(meta["class_names"]),
                image_shape=(h, w, c),
                id_column=meta["id_column"],
                target_column=meta["target_column"],
                folds=json.loads(meta["folds"]),
                submission=submission,
                image=spec,
                pixel_shape=tuple(image.get("pixel_shape") or (h, w, c)),
                id_form=meta.get("id_form", "stem"),
                metric=json.loads(meta.get("metric", '{"name": "accuracy"}'))["name"],
            )
        except (KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise UserError(f"{self.path}: missing foldwise metadata ({exc}); "
                            "export it with `foldwise export`") from None

    def close(self) -> None:
        """Stop the data-parallel slices' thread; idempotent. `predict` still runs afterwards, on the first
        session alone (the sessions are freed with the engine)."""
        self._close()
        self._pool = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities `[N, num_classes]` for uint8 images `[N, C, H, W]`."""
        if self.provider == "CUDAExecutionProvider":  # IO binding: one copy in, one copy out
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(images))
            binding.bind_output(self.output_name)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        if self._pool is not None and len(images) >= 2 * len(self.slices):
            return self._predict_slices(images)
        session = self.small_session if len(images) < self.small_batch else self.session
        return session.run([self.output_name], {self.input_name: images})[0]

    def _predict_slices(self, images: np.ndarray) -> np.ndarray:
        """`data_parallel`: one slice of the batch per session, all at once (onnxruntime drops the GIL)."""
        parts = np.array_split(images, len(self.slices))
        run = lambda session, part: session.run([self.output_name], {self.input_name: part})[0]  # noqa: E731
        futures = [self._pool.submit(run, session, part) for session, part in zip(self.slices[1:], parts[1:])]
        first = run(self.slices[0], parts[0])
        return np.concatenate([first, *(f.result() for f in futures)])

    def predict_batched(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """`predict` over `images` in slices of `batch_size`; `[0, num_classes]` for no images."""
        probs = [self.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(probs) if probs else np.zeros((0, len(self.info.classes)), np.float32)

    def run(self, chunks: Iterable[Chunk], batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (ids, probabilities) per chunk, batching the images `batch_size` at a time."""
        for chunk in chunks:
            yield chunk.ids, self.predict_batched(chunk.images, batch_size)


class Throughput:
    """Counts images and seconds for a progress line."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def add(self, n: int) -> None:
        self.images += n

    @property
    def per_second(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)
