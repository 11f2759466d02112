"""`foldwise init SOURCE`: look at a competition and write params.yaml's `download` and `prepare`,
a `train` recipe for its size and kind and a `tune` space around it (pipeline/tools/recipe.py).

    foldwise init ~/Downloads/cassava-leaf-disease-classification.zip
    foldwise init data/my-competition/            # a folder in Kaggle's layout
    foldwise init dog-breed-identification        # a Kaggle slug (downloads it; needs credentials)

It unpacks the source into a temporary folder (nested zips and 7z included), detects the layout
exactly as `prepare.layout: auto` does, reads the labels and the sample submission, samples
image headers for size and channels, and writes the sections with comments kept (ruamel round
trip), after validating the whole file. It prints what it found and what to confirm: the
metric is a guess from the submission kind unless the files say more.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import re
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

from pipeline.core.config import build, read_params
from pipeline.data.archive import extract_competition
from pipeline.data.layouts import detect, read_competition
from pipeline.data.layouts.common import Files, PixelArray
from pipeline.data.layouts.decode import image_spec
from pipeline.data.layouts.targets import resolve_targets
from pipeline.data.prepare import PrepareParams
from pipeline.evaluation.metrics import METRICS
from pipeline.kaggle.download import download_competition
from pipeline.tools.recipe import recipe
from pipeline.tools.sections import validate_all
from serve.atomic import write_text
from serve.errors import UserError
from serve.paths import refuse_overwrite

_logger = logging.getLogger(__name__)
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
RESET = {  # prepare keys init decides; anything the user set by hand beyond these is kept
    "layout": "auto", "train_file": None, "test_file": None, "train_images": None, "test_images": None,
    "sample_submission": None, "id_column": None, "target_column": None, "classes": None, "class_names": [],
    "submission": "auto", "positive_class": None, "metric": "auto", "image_size": None, "channels": None,
    "pixel_shape": None,
}


def inspect(source: Path, params: PrepareParams, workdir: Path) -> dict:
    """What `prepare` would find in `source` (a zip or a folder): layout, files, classes, kind, metric, size."""
    files = Files(extract_competition(source, workdir / "competition"), str(source))
    layout, why = (params.layout, "prepare.layout") if params.layout != "auto" else detect(files, params)
    raw = read_competition(files, build(PrepareParams, {**_as_dict(params), "layout": layout}, "prepare"))
    targets = resolve_targets(raw, params)
    spec, size_why = image_spec(raw, params)
    return {"layout": layout, "why": why, "raw": raw, "targets": targets, "spec": spec, "size_why": size_why,
            "n_train": len(raw.train), "n_test": len(raw.test_ids),
            "pixel_csv": isinstance(raw.train, PixelArray)}


def _as_dict(params: PrepareParams) -> dict:
    return dataclasses.asdict(params)


def prepare_section(found: dict) -> dict:
    raw, t, spec = found["raw"], found["targets"], found["spec"]
    section = dict(RESET)
    section.update({k: v for k, v in raw.found.items() if k in RESET})
    section.update({"layout": found["layout"], "submission": t.submission.kind, "metric": t.metric,
                    "image_size": [spec.height, spec.width], "channels": spec.channels})
    if t.submission.kind == "binary_prob":
        section["positive_class"] = t.submission.positive_class
    return section


def fitted_recipe(found: dict, prepare: dict, n_folds: int) -> tuple[dict, dict, list[str]]:
    """The `train` keys and `tune` section for what was found (pipeline/tools/recipe.py); may shrink image_size."""
    t, spec = found["targets"], found["spec"]
    train, tune, (h, w), why = recipe(found["n_train"], spec.height, spec.width, spec.channels,
                                      METRICS[t.metric].calibrates, n_folds)
    if (h, w) != (spec.height, spec.width):
        prepare["image_size"] = [h, w]
    return train, tune, why


def write_sections(params_path: Path, sections: dict[str, dict]) -> list[str]:
    """Set each section's keys in params.yaml (comments kept); validate before writing."""
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(params_path.read_text()) if params_path.exists() else {}
    changed = []
    for section, values in sections.items():
        doc.setdefault(section, {})
        for key, value in values.items():
            if doc[section].get(key) != value:
                changed.append(f"{section}.{key}")
            doc[section][key] = value
    buf = io.StringIO()
    yaml.dump(doc, buf)
    validate_all(buf.getvalue(), str(params_path))
    write_text(params_path, buf.getvalue())
    return changed


def run(source: str, params_path: Path = Path("params.yaml")) -> dict:
    path = Path(source).expanduser()
    current = read_params(params_path).get("prepare") if params_path.exists() else None
    base = build(PrepareParams, {k: v for k, v in (current or {}).items() if k not in RESET}, "prepare",
                 str(params_path))
    with tempfile.TemporaryDirectory(prefix=".foldwise-init-", dir=params_path.parent.resolve()) as tmp:
        if path.exists():
            refuse_overwrite({"--params": params_path}, {"SOURCE": path})
            download = {"source": "local", "path": str(source)}
            found = inspect(path, base, Path(tmp))
        elif SLUG.match(source):
            download = {"source": "kaggle", "competition": source}
            found = inspect(download_competition(source, Path(tmp)), base, Path(tmp))
        else:
            raise UserError(f"{source}: no such file or folder, and not a Kaggle competition slug")
        prepare = prepare_section(found)
        train, tune, found["recipe"] = fitted_recipe(found, prepare, base.n_folds)
        changed = write_sections(params_path, {"download": download, "prepare": prepare, "train": train,
                                               "tune": tune})
    found["changed"] = changed
    found["prepare"] = prepare
    return found


def summary(found: dict) -> list[str]:
    """The lines `foldwise init` prints: what it found, and what the user must confirm."""
    raw, t, spec = found["raw"], found["targets"], found["spec"]
    classes = ", ".join(t.classes[:8]) + (f", ... ({len(t.classes)} classes)" if len(t.classes) > 8 else "")
    lines = [f"layout        {found['layout']} ({found['why']})",
             "files         " + ", ".join(f"{k}={v}" for k, v in raw.found.items()
                                          if k not in ("id_column", "target_column")),
             f"train         {found['n_train']} images, labels from {raw.labels_file}"
             + (f" column '{raw.labels_column}'" if raw.labels_column else " (class folders)"),
             f"classes       {classes}",
             f"test          {found['n_test']} images, ids like '{raw.test_ids[0]}' (id column '{raw.id_column}')",
             f"submission    {t.submission.kind}: columns {', '.join(t.submission.columns[:6])}"
             + (" ..." if len(t.submission.columns) > 6 else "")
             + (f" (P of '{t.submission.positive_class}')" if t.submission.positive_class else ""),
             f"images        {spec.height}x{spec.width}, {spec.channels} channel(s), resize {spec.resize} "
             f"({found['size_why']})",
             f"metric        {t.metric} (a guess from the submission kind: confirm it on the competition's "
             "Evaluation page and set prepare.metric if it differs)"]
    lines += [f"recipe        {line}" for line in found.get("recipe", [])]
    lines += [f"note          {n}" for n in raw.notes]
    return lines
