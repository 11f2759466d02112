"""Typed params: each DVC stage reads its own section of params.yaml into a dataclass.

    params = load_section("train", TrainParams)      # params.yaml -> TrainParams, validated

Unknown keys, wrong types and out-of-range values fail at load with one line naming the key
(`params.yaml: train.lr: must be > 0, got -1`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from serve.errors import UserError

PARAMS_FILE = "params.yaml"
T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check `value` against the annotation `tp` (and convert int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, src)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{src}: {key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, src)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{src}: {key}: must be a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]", src) for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{src}: {key}: must be a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{src}: {key}: must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{src}: {key}: must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{src}: {key}: must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{src}: {key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def build(cls: type[T], data: Any, prefix: str, src: str = PARAMS_FILE) -> T:
    """Make a `cls` dataclass from a mapping, rejecting unknown keys; then run its `validate`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{src}: {prefix}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UserError(f"{src}: {prefix}.{unknown[0]}: unknown key (known: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{prefix}.{f.name}", src)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{src}: {prefix}.{f.name}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(lambda msg, k=None: UserError(f"{src}: {prefix}{'.' + k if k else ''}: {msg}"))
    return obj


def read_params(path: str | Path = PARAMS_FILE) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: params file not found (run from the project root)")
    try:  # YAML 1.2 as DVC reads it (PyYAML would take `1e-05` for a string)
        data = YAML(typ="safe", pure=True).load(p.read_text())
    except YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of sections at the top level")
    return data


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Read and validate one section of params.yaml."""
    return build(cls, read_params(path).get(section), section, str(path))


def params_hash(obj: Any) -> str:
    """Short stable hash of a params dataclass (or any JSON-able value)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- sections


@dataclass
class DownloadParams:
    """Where the competition archive comes from."""
    source: Literal["embedded", "local", "kaggle", "kaggle-dataset"] = "embedded"
    path: str = "data/embedded/fashion-mnist/fashion-mnist.zip"  # embedded / local: a zip or folder
    competition: str = "fashion-mnist"  # kaggle: the competition slug
    dataset: str = "zalando-research/fashionmnist"  # kaggle-dataset: owner/name
    dataset_train_file: str = "fashion-mnist_train.csv"  # kaggle-dataset: labelled training CSV
    dataset_test_file: str = "fashion-mnist_test.csv"    # kaggle-dataset: labelled test CSV (-> solution)
    dataset_target: str = "label"                        # kaggle-dataset: the label column

    def validate(self, err) -> None:
        if self.source == "kaggle" and not self.competition.strip():
            raise err("must name a competition slug when source is kaggle", "competition")
        if self.source == "kaggle-dataset" and self.dataset.count("/") != 1:
            raise err(f"must be owner/name when source is kaggle-dataset, got {self.dataset!r}", "dataset")


@dataclass
class PrepareParams:
    """How to read the competition (layout, files, columns, classes, submission, metric, image size)
    and how to split it into folds. `null` / `auto` values are found in the data."""
    layout: Literal["auto", "pixel_csv", "labels_csv", "class_folders"] = "auto"
    train_file: Optional[str] = None         # pixel_csv: the train CSV; labels_csv: the labels CSV
    test_file: Optional[str] = None          # pixel_csv: the test CSV
    train_images: Optional[str] = None       # labels_csv: folder of training images; class_folders: their root
    test_images: Optional[str] = None        # folder of test images
    sample_submission: Optional[str] = None  # default: the one sample*submission*.csv
    id_column: Optional[str] = None          # default: the sample submission's first column
    target_column: Optional[str] = None      # the training labels' column (default: found by name)
    classes: Optional[list[Any]] = None      # declare the classes (and their order); default: from the labels
    class_names: list[Any] = field(default_factory=list)  # display names, one per class (default: the classes)
    submission: Literal["auto", "label", "binary_prob", "class_probs"] = "auto"
    positive_class: Optional[Any] = None     # binary_prob: the class whose probability is submitted
    metric: Literal["auto", "accuracy", "log_loss", "roc_auc", "f1_macro", "qwk"] = "auto"
    image_size: Optional[list[int]] = None   # [H, W] every image is resized to; default: from the images
    channels: Optional[int] = None           # 1 or 3; default: 1 if every image is grayscale
    resize: Literal["stretch", "crop", "pad"] = "stretch"
    pixel_shape: Optional[list[int]] = None  # pixel_csv: [H, W, C] of a row; default: square
    max_pixels: int = 89_478_485             # larger images are refused (decompression bombs)
    workers: Optional[int] = None            # decoding threads; default: one per core
    n_folds: int = 5
    seed: int = 42

    def validate(self, err) -> None:
        for key in ("classes", "class_names"):
            for i, v in enumerate(getattr(self, key) or []):
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise err(f"must be a string or an integer, got {v!r}", f"{key}[{i}]")
        if self.positive_class is not None and (isinstance(self.positive_class, bool)
                                                or not isinstance(self.positive_class, (str, int))):
            raise err(f"must be a class (a string or an integer), got {self.positive_class!r}", "positive_class")
        if self.classes is not None and len({str(c) for c in self.classes}) != len(self.classes):
            raise err("classes must be distinct", "classes")
        if self.class_names and len(set(self.class_names)) != len(self.class_names):
            raise err("class names must be distinct", "class_names")
        if self.n_folds < 2:
            raise err(f"must be at least 2, got {self.n_folds}", "n_folds")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 4):
            raise err(f"must be [H, W] with H, W >= 4, got {self.image_size}", "image_size")
        if self.channels is not None and self.channels not in (1, 3):
            raise err(f"must be 1 or 3 (or null), got {self.channels}", "channels")
        if self.pixel_shape is not None and (len(self.pixel_shape) != 3 or min(self.pixel_shape) < 1
                                             or self.pixel_shape[2] not in (1, 3)):
            raise err(f"must be [H, W, C] with C 1 or 3, got {self.pixel_shape}", "pixel_shape")
        if self.max_pixels < 1:
            raise err(f"must be at least 1, got {self.max_pixels}", "max_pixels")
        if self.workers is not None and self.workers < 1:
            raise err(f"must be at least 1 (or null), got {self.workers}", "workers")


COMMON_OPTIMIZERS = {"sgd", "nesterov", "momentum", "adam", "adamw"}  # in every timm's optimizer registry


@dataclass
class TrainParams:
    """One fold's training run (fold index and seed come from dvc.yaml's foreach, via the CLI)."""
    folds: list[dict] = field(default_factory=lambda: [{"fold": k, "seed": k} for k in range(5)])
    model: str = "foldwise_cnn"          # any timm model name (ours: foldwise_cnn, foldwise_mlp, ...)
    model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model kwargs
    pretrained: bool = False
    pretrained_file: Optional[str] = None  # local weights (.safetensors / .pth) instead of the hub's
    drop_rate: float = 0.1               # dropout before the classifier
    drop_path_rate: Optional[float] = None  # stochastic depth, for models that have it
    img_size: Optional[int] = None       # resize inside the model (e.g. 32 or 64); None: native
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adamw"             # timm.optim name: adamw, sgd (Nesterov momentum), lamb, ...
    momentum: float = 0.9                # sgd / momentum optimizers
    lr: float = 3e-3
    weight_decay: float = 0.05
    sched: Literal["cosine", "poly", "tanh", "step", "none"] = "cosine"  # timm.scheduler, per step
    warmup_epochs: float = 0.5
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0             # timm.data.Mixup; 0 disables
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    ema: bool = False                    # timm.utils.ModelEmaV3; validation then uses the EMA weights
    ema_decay: float = 0.999
    patience: Optional[int] = None       # early stopping: epochs without a better validation score
    grad_clip: Optional[float] = None    # max gradient norm
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16
    channels_last: bool = True
    compile: bool = False                # torch.compile (opt-in)
    deterministic: bool = False          # torch.use_deterministic_algorithms
    num_workers: int = 0                 # DataLoader worker processes for augmentation
    device: Literal["auto", "cpu", "cuda"] = "auto"
    augment: dict = field(default_factory=dict)  # Albumentations A.to_dict() form

    def validate(self, err) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise err(f"must be at least 1, got {getattr(self, name)}", name)
        if self.lr <= 0:
            raise err(f"must be > 0, got {self.lr}", "lr")
        for name in ("weight_decay", "warmup_epochs", "min_lr", "num_workers", "momentum",
                     "mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise err(f"must be >= 0, got {getattr(self, name)}", name)
        for name in ("drop_rate", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise err(f"must be in [0, 1), got {getattr(self, name)}", name)
        if self.drop_path_rate is not None and not 0 <= self.drop_path_rate < 1:
            raise err(f"must be in [0, 1), got {self.drop_path_rate}", "drop_path_rate")
        if not 0 <= self.mixup_prob <= 1:
            raise err(f"must be in [0, 1], got {self.mixup_prob}", "mixup_prob")
        if not 0 < self.ema_decay < 1:
            raise err(f"must be in (0, 1), got {self.ema_decay}", "ema_decay")
        if self.patience is not None and self.patience < 1:
            raise err(f"must be at least 1 (or null), got {self.patience}", "patience")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise err(f"must be > 0 (or null), got {self.grad_clip}", "grad_clip")
        if self.img_size is not None and self.img_size < 8:
            raise err(f"must be at least 8, got {self.img_size}", "img_size")
        seen = set()
        for i, spec in enumerate(self.folds):
            if set(spec) != {"fold", "seed"} or not all(isinstance(spec[k], int) and not isinstance(spec[k], bool)
                                                        and spec[k] >= 0 for k in spec):
                raise err(f"must be {{fold: int >= 0, seed: int >= 0}}, got {spec}", f"folds[{i}]")
            if spec["fold"] in seen:
                raise err(f"fold {spec['fold']} is listed twice", f"folds[{i}]")
            seen.add(spec["fold"])
        from pipeline.nets import OWN_MODELS  # noqa: PLC0415

        if self.model not in OWN_MODELS or self.optimizer.lower() not in COMMON_OPTIMIZERS:
            import timm  # noqa: PLC0415 (~2 s: only for names that are not ours or common)
            import timm.optim  # noqa: PLC0415

            from pipeline.models import register_in_timm  # noqa: PLC0415

            register_in_timm()
            if not timm.is_model(self.model):
                near = timm.list_models(f"*{self.model.split('.')[0][:6]}*")[:5]
                hint = f" (similar: {', '.join(near)})" if near else ""
                raise err(f"unknown timm model '{self.model}'{hint}", "model")
            if self.optimizer.lower() not in set(timm.optim.list_optimizers()) | COMMON_OPTIMIZERS:
                raise err(f"unknown timm optimizer '{self.optimizer}' (e.g. adamw, sgd, lamb, lion)", "optimizer")
        from pipeline.augment import build_augment  # noqa: PLC0415
        build_augment(self.augment, err)


@dataclass
class EnsembleParams:
    """Candidates scored on OOF predictions; the best OOF accuracy (then log-loss) is exported."""
    tta: list[str] = field(default_factory=lambda: ["hflip"])  # views besides the plain image
    methods: list[str] = field(default_factory=lambda: ["mean_prob", "mean_logit", "weighted"])
    batch_size: int = 1024

    def validate(self, err) -> None:
        from pipeline.tta import VIEWS  # noqa: PLC0415
        for i, view in enumerate(self.tta):
            if view not in VIEWS or view == "none":
                raise err(f"unknown view '{view}' (views: {', '.join(v for v in VIEWS if v != 'none')})", f"tta[{i}]")
        if len(set(self.tta)) != len(self.tta):
            raise err(f"views listed twice: {self.tta}", "tta")
        for i, method in enumerate(self.methods):
            if method not in ("mean_prob", "mean_logit", "weighted"):
                raise err(f"unknown method '{method}' (mean_prob, mean_logit, weighted)", f"methods[{i}]")
        if not self.methods:
            raise err("must list at least one method", "methods")
        if self.batch_size < 1:
            raise err(f"must be at least 1, got {self.batch_size}", "batch_size")


@dataclass
class ExportParams:
    opset: int = 18
    parity_rows: int = 512     # OOF images for the onnxruntime-vs-PyTorch gate
    max_abs_diff: float = 1e-4 # gate: max |prob difference|, and identical argmax
    rtol: float = 1e-3
    atol: float = 1e-5
    eval_rows: int = 5000      # OOF images scoring each exported variant
    calibration_rows: int = 512
    predict_tolerance: float = 0.001  # predict uses the fastest graph whose OOF accuracy is this close to fp32's
    speed_batch: int = 512     # batch for timing each graph (side by side)
    speed_seconds: float = 0.4  # each graph's time per round (3 interleaved rounds; the median counts)

    def validate(self, err) -> None:
        if not 0 <= self.predict_tolerance < 1:
            raise err(f"must be in [0, 1), got {self.predict_tolerance}", "predict_tolerance")
        for name in ("parity_rows", "eval_rows", "calibration_rows", "speed_batch"):
            if getattr(self, name) < 1:
                raise err(f"must be at least 1, got {getattr(self, name)}", name)
        if self.speed_seconds <= 0:
            raise err(f"must be > 0, got {self.speed_seconds}", "speed_seconds")
        if self.max_abs_diff <= 0:
            raise err(f"must be > 0, got {self.max_abs_diff}", "max_abs_diff")
        if self.opset < 17:
            raise err(f"must be at least 17, got {self.opset}", "opset")


@dataclass
class PredictParams:
    batch_size: int = 256
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = None

    def validate(self, err) -> None:
        if self.batch_size < 1:
            raise err(f"must be at least 1, got {self.batch_size}", "batch_size")


@dataclass
class SubmitParams:
    """How the competition gets our predictions: a CSV upload (`file`), or for a code competition a
    model dataset plus an inference notebook that Kaggle re-runs offline (`code`)."""
    mode: Literal["file", "code"] = "file"
    enabled: bool = False
    competition: Optional[str] = None  # default: the slug the data was downloaded from
    message: Optional[str] = None      # default: what produced the file (commit, params hash, OOF accuracy)
    dry_run: bool = False              # validate and check for duplicates, upload nothing
    poll_timeout: float = 900.0        # seconds to wait for Kaggle's score
    poll_interval: float = 5.0         # first wait between polls (doubles, at most 60 s)
    public_rows: Optional[int] = None  # test rows behind the public score (its 95% CI); null: unknown
    # mode: code
    dataset: Optional[str] = None      # owner/slug of the model dataset (default: <username>/<competition>-foldwise)
    kernel: Optional[str] = None       # owner/slug of the notebook (default: <username>/<competition>-foldwise-infer)
    graph: Literal["auto", "fp32", "int8", "fp16"] = "auto"  # auto: fastest graph within 0.1 point of FP32 (OOF)
    gpu: bool = False                  # run the notebook on a GPU session (onnxruntime CUDA)
    wheels: Optional[list[str]] = None # offline installs: requirements whose wheels go into the dataset
    #                                    (null: onnxruntime, or onnxruntime-gpu with gpu; []: none)
    wheels_python: str = "3.11"        # the Python of Kaggle's image, for those wheels
    hidden_scale: float = 10.0         # the notebook estimates its time on a hidden test set this many times larger
    kernel_timeout: float = 7200.0     # seconds to wait for the notebook's run on Kaggle

    def validate(self, err) -> None:
        if self.public_rows is not None and self.public_rows < 1:
            raise err(f"must be at least 1 (or null), got {self.public_rows}", "public_rows")
        if self.poll_timeout < 0:
            raise err(f"must be >= 0, got {self.poll_timeout}", "poll_timeout")
        if self.poll_interval <= 0:
            raise err(f"must be > 0, got {self.poll_interval}", "poll_interval")
        for key in ("dataset", "kernel"):
            ref = getattr(self, key)
            if ref is not None and (ref.count("/") != 1 or not all(ref.split("/"))):
                raise err(f"must be owner/slug, got {ref!r}", key)
        if self.kernel_timeout < 0:
            raise err(f"must be >= 0, got {self.kernel_timeout}", "kernel_timeout")
        if self.hidden_scale <= 0:
            raise err(f"must be > 0, got {self.hidden_scale}", "hidden_scale")
        if not re.fullmatch(r"3\.\d+", self.wheels_python):
            raise err(f"must be a Python version such as 3.11, got {self.wheels_python!r}", "wheels_python")


@dataclass
class ReportParams:
    """What the report shows."""
    grid_images: int = 48  # images in each OOF grid (misclassified, least confident correct)
    dpi: int = 110

    def validate(self, err) -> None:
        if not 1 <= self.grid_images <= 400:
            raise err(f"must be 1-400, got {self.grid_images}", "grid_images")
        if not 50 <= self.dpi <= 400:
            raise err(f"must be 50-400, got {self.dpi}", "dpi")
