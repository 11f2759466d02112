"""params.yaml `train`: one fold's training run, typed and validated (the defaults are the shipped params.yaml's).

    params = load_section("train", TrainParams)     # the train@k stage, parallel folds, bench train

Model names are checked against our networks' registry (pipeline/modeling/nets.py) and, for any
other name, timm's; the augmentation is built once with Albumentations to check it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.config import params_hash
from pipeline.modeling.nets import OWN_MODELS

COMMON_OPTIMIZERS = {"sgd", "nesterov", "momentum", "adam", "adamw"}  # in every timm's optimizer registry


@dataclass
class PseudoLabelParams:
    """params.yaml `train.pseudo_labels`: rounds of retraining each fold with the test images,
    labelled by that fold's own model of the round before, never by the ensemble
    (docs/pseudo-labels-and-distillation.md)."""
    rounds: int = 0                      # 0: off; the pseudo@k stage trains rounds 1..rounds
    targets: Literal["soft", "hard"] = "soft"  # the teacher's probabilities, or its most probable class
    threshold: float = 0.0               # test images whose teacher's top probability is lower stay out
    weight: float = 1.0                  # a pseudo-labelled image's loss weight (a training image's: 1)

    def validate(self, err) -> None:
        if self.rounds < 0:
            raise err(f"must be 0 (off) or more, got {self.rounds}", "rounds")
        if not 0 <= self.threshold <= 1:
            raise err(f"must be in [0, 1], got {self.threshold}", "threshold")
        if self.weight <= 0:
            raise err(f"must be > 0, got {self.weight}", "weight")




@dataclass
class TrainParams:
    """One fold's training run (fold index and seed come from dvc.yaml's foreach, via the CLI)."""
    folds: list[dict] = field(default_factory=lambda: [{"fold": k, "seed": k} for k in range(5)])
    model: str = "foldwise_air"          # any timm model name (ours: pipeline/modeling/nets.py)
    model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model kwargs
    pretrained: bool = False
    pretrained_file: str | None = None  # local weights (.safetensors / .pth) instead of the hub's
    drop_rate: float = 0.1               # dropout before the classifier
    drop_path_rate: float | None = None  # stochastic depth, for models that have it
    img_size: int | None = None       # resize inside the model (e.g. 32 or 64); None: native
    epochs: int = 6                      # chosen by OOF (docs/results.md)
    steps: int | None = None             # a budget in optimizer steps instead: epochs = ceil(steps / batches per epoch)
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
    patience: int | None = None       # early stopping: epochs without a better validation score
    grad_clip: float | None = None    # max gradient norm
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16
    channels_last: bool = True
    compile: bool = False                # torch.compile (opt-in)
    deterministic: bool = False          # torch.use_deterministic_algorithms
    num_workers: int = 0                 # DataLoader worker processes for augmentation
    device: Literal["auto", "cpu", "cuda"] = "auto"
    augment: dict = field(default_factory=lambda: {  # Albumentations A.to_dict() form; {} for none
        "transform": {"__class_fullname__": "Compose", "p": 1.0,
                      "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}})
    pseudo_labels: PseudoLabelParams = field(default_factory=PseudoLabelParams)  # the pseudo@k stage only

    def create_kwargs(self) -> dict:
        """The model's own keyword arguments: `model_kwargs`, plus `drop_path_rate` when set."""
        kwargs = dict(self.model_kwargs)
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        return kwargs

    def recipe_hash(self) -> str:
        """A short hash of everything but `folds`: which checkpoints (tune/checkpoints/<hash>/) a run may resume."""
        return params_hash({k: v for k, v in dataclasses.asdict(self).items() if k not in ("folds", "pseudo_labels")})

    def for_rows(self, n_train: int) -> TrainParams:
        """These params for a fold of `n_train` training rows: `epochs` from `steps` when a step budget is set."""
        if self.steps is None:
            return self
        per_epoch = max(1, n_train // self.batch_size if n_train > self.batch_size else 1)
        return dataclasses.replace(self, epochs=max(1, math.ceil(self.steps / per_epoch)))

    def validate(self, err) -> None:
        if self.steps is not None and self.steps < 1:
            raise err(f"must be at least 1 (or null), got {self.steps}", "steps")
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
        if self.pseudo_labels.rounds and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            raise err("pseudo-labels are soft targets, which timm's Mixup cannot mix: set mixup_alpha and "
                      "cutmix_alpha to 0 or pseudo_labels.rounds to 0", "pseudo_labels.rounds")
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
        if self.model not in OWN_MODELS or self.optimizer.lower() not in COMMON_OPTIMIZERS:
            import timm  # ~2 s: only for names that are not ours or common
            import timm.optim

            from pipeline.modeling.classifier import register_in_timm

            register_in_timm()
            if not timm.is_model(self.model):
                near = timm.list_models(f"*{self.model.split('.')[0][:6]}*")[:5]
                hint = f" (similar: {', '.join(near)})" if near else ""
                raise err(f"unknown timm model '{self.model}'{hint}", "model")
            if self.optimizer.lower() not in set(timm.optim.list_optimizers()) | COMMON_OPTIMIZERS:
                raise err(f"unknown timm optimizer '{self.optimizer}' (e.g. adamw, sgd, lamb, lion)", "optimizer")
        from pipeline.data.augment import build_augment  # Albumentations: ~1 s, only where train is loaded

        build_augment(self.augment, err)
