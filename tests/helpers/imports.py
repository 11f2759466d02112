"""What a DVC stage really imports of the project, computed from the code: the import graph that
import-linter checks (grimp; imports inside functions count, `if TYPE_CHECKING:` ones do not).

    modules = stage_modules("python -m pipeline.stages.train --fold 0")   # {'pipeline.training.fold', ...}
    module_file("pipeline.core")                                          # Path('pipeline/core/__init__.py')
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
STAGE_CMD = re.compile(r"^python\s+-m\s+(pipeline\.stages\.\w+)\b")


@functools.lru_cache(maxsize=1)
def project_graph() -> grimp.ImportGraph:
    return grimp.build_graph("pipeline", "serve", include_external_packages=False,
                             exclude_type_checking_imports=True, cache_dir=None)


def module_file(module: str) -> Path:
    """The source file of a project module, relative to the repository root."""
    base = ROOT / module.replace(".", "/")
    return (base / "__init__.py" if base.is_dir() else base.with_suffix(".py")).relative_to(ROOT)


def imported_by(module: str) -> set[str]:
    """`module` and every project module it imports, directly or not, with the packages above each
    (importing pipeline.core.paths runs pipeline/__init__.py and pipeline/core/__init__.py too)."""
    found = {module} | set(project_graph().find_upstream_modules(module))
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


def stage_module(cmd: str) -> str:
    """The module a dvc.yaml command runs (`python -m pipeline.stages.<name> ...`)."""
    m = STAGE_CMD.match(cmd.strip())
    if not m:
        raise ValueError(f"not `python -m pipeline.stages.<name>`: {cmd!r}")
    return m.group(1)


def stage_modules(cmd: str) -> set[str]:
    return imported_by(stage_module(cmd))


def covers(dep: str, path: Path) -> bool:
    """True when dvc.yaml dep `dep` (a file or a folder) holds `path`."""
    dep = dep.rstrip("/")
    return str(path) == dep or str(path).startswith(dep + "/")


def code_files(dep: str) -> set[Path]:
    """The Python sources a dep names (itself, or every one under the folder)."""
    p = ROOT / dep
    if p.is_file():
        return {Path(dep)} if p.suffix == ".py" else set()
    return {f.relative_to(ROOT) for f in p.rglob("*.py") if "__pycache__" not in f.parts}
