"""dvc.yaml against the code: every stage's code deps are exactly the project modules it imports
(computed from the code, so they cannot drift), its data paths are those of pipeline/core/paths.py,
and the train stage's params are every train key but `folds`."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from helpers.imports import ROOT, code_files, covers, module_file, stage_module, stage_modules
from pipeline.core import paths
from pipeline.training.params import TrainParams

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = {name: (spec["do"] if "foreach" in spec else spec) for name, spec in DVC["stages"].items()}
# deps beyond the imports, each for a reason: the code-competition wheel of the submit stage packs all of serve/
DATA_CODE_DEPS = {"submit": {"serve"}}


def _deps(stage: str) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]


def _code_deps(stage: str) -> list[str]:
    return [d for d in _deps(stage) if d.split("/")[0] in ("pipeline", "serve")]


def missing_deps(stage: str, deps: list[str]) -> list[str]:
    """'<stage>: imports <module> (<file>), which its deps miss' for each imported module not covered."""
    problems = []
    for module in sorted(stage_modules(STAGES[stage]["cmd"])):
        path = module_file(module)
        if not any(covers(d, path) for d in deps):
            problems.append(f"{stage}: imports {module} ({path}), which its deps in dvc.yaml miss")
    return problems


def test_every_stage_runs_its_own_stage_module() -> None:
    for name, spec in STAGES.items():
        assert stage_module(spec["cmd"]) == f"pipeline.stages.{name}", (name, spec["cmd"])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_cover_every_module_the_stage_imports(stage: str) -> None:
    problems = missing_deps(stage, _code_deps(stage))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_name_only_modules_the_stage_imports(stage: str) -> None:
    """No stale dep: a change to a module the stage does not import must not re-run it."""
    imported = {module_file(m) for m in stage_modules(STAGES[stage]["cmd"])}
    extra = [f"{stage}: dep {dep} holds {f}, which the stage does not import"
             for dep in _code_deps(stage) if dep not in DATA_CODE_DEPS.get(stage, set())
             for f in sorted(code_files(dep) - imported)]
    assert not extra, "\n".join(extra)


def test_the_check_names_the_stage_and_the_module_when_a_dep_is_removed() -> None:
    deps = [d for d in _code_deps("train") if d != "pipeline/training/fold.py"]
    problems = missing_deps("train", deps)
    assert "train: imports pipeline.training.fold (pipeline/training/fold.py), which its deps in dvc.yaml miss" \
        in problems


def test_serve_http_docs_and_tests_never_retrain_a_fold() -> None:
    for dep in _deps("train"):
        assert not dep.startswith(("serve/http", "docs", "tests", "README")), dep
        assert dep != "serve", dep


def _data_paths() -> set[str]:
    """Every path of pipeline/core/paths.py, with fold templates as dvc.yaml writes them."""
    found = {str(v) for v in vars(paths).values() if isinstance(v, Path)}
    found |= {str(getattr(paths.Prepared(), f)) for f in dir(paths.Prepared) if isinstance(
        getattr(paths.Prepared, f), property)}
    found |= {str(paths.graph(g)) for g in paths.GRAPH_FILES}
    found |= {str(paths.fold_dir(0)).replace("0", "${item.fold}"),
              str(paths.fold_dir(0, paths.PSEUDO)).replace("0", "${item.fold}"),
              str(paths.curves_csv(0)).replace("0", "${item.fold}")}
    return found


def test_dvc_yaml_names_only_the_artifact_paths_of_core_paths() -> None:
    defined = _data_paths()
    for name, spec in STAGES.items():
        outs = [o if isinstance(o, str) else next(iter(o)) for key in ("outs", "metrics", "plots")
                for o in spec.get(key, [])]
        data = [d for d in _deps(name) + outs if d.split("/")[0] not in ("pipeline", "serve") and "${download" not in d]
        assert data and set(data) <= defined, (name, sorted(set(data) - defined))


def test_dvc_yaml_tracks_every_train_param_but_folds() -> None:
    """The train stages list train params key by key; none may be forgotten (or a change would not retrain).
    Round 0 ignores `pseudo_labels`; the pseudo rounds and the student train with the same recipe, so
    they list the same keys (plus pseudo_labels for the rounds)."""
    recipe = [f.name for f in dataclasses.fields(TrainParams) if f.name not in ("folds", "pseudo_labels")]
    listed = [re.sub(r"^train\.", "", p) for p in STAGES["train"]["params"]]
    assert listed == recipe
    assert [re.sub(r"^train\.", "", p) for p in STAGES["pseudo"]["params"]] == [*recipe, "pseudo_labels"]
    assert [re.sub(r"^train\.", "", p) for p in STAGES["distill"]["params"] if p.startswith("train.")] == recipe
