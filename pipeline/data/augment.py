"""Training augmentation declared in params.yaml in Albumentations' own serialised form.

    train:
      augment:
        transform:
          __class_fullname__: Compose
          transforms:
            - {__class_fullname__: HorizontalFlip, p: 0.5}

The spec is exactly what `A.to_dict(pipeline)` writes (the `__version__` key is optional), so a
pipeline built in a notebook can be pasted in. An empty mapping means no augmentation.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

# albumentations asks PyPI for its latest version at every import (a 2 s timeout offline, as in a
# Kaggle notebook without internet; ~0.2 s and a request per training process online): not ours to send
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A

from serve.errors import UserError

_logger = logging.getLogger(__name__)


def build_augment(spec: dict[str, Any], err: Callable[..., UserError] | None = None) -> A.BasicTransform | None:
    """Albumentations pipeline from its dict form; None when `spec` is empty.

    Unknown transforms, unknown arguments and invalid values all raise a UserError naming
    `train.augment` (via `err`, which prefixes the params file and key).
    """
    if err is None:
        def err(msg: str, key: str | None = None) -> UserError:
            return UserError(f"train.augment: {msg}")
    if not spec:
        return None
    transform = spec.get("transform", spec) if isinstance(spec, dict) else None
    if not isinstance(transform, dict) or "__class_fullname__" not in transform:
        raise err("must be an Albumentations A.to_dict() mapping with a 'transform' holding "
                  "'__class_fullname__'", "augment")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline = A.from_dict({"transform": transform})
        except KeyError as exc:
            raise err(f"unknown Albumentations transform {exc}", "augment") from None
        except (ValueError, TypeError) as exc:
            first = " ".join(str(exc).split())[:240]
            raise err(f"invalid Albumentations spec ({first})", "augment") from None
    for w in caught:
        text = str(w.message)
        if "are not valid for transform" in text or "Unknown" in text:
            raise err(f"invalid Albumentations spec ({text})", "augment")
    return pipeline
