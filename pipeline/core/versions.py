"""The versions foldwise supports (pyproject.toml's, the one place they are written) against what is installed.

    supported("torch")        # '<3,>=2.4' (from foldwise's installed metadata, or pyproject.toml in a source tree)
    problem("torch")          # None, or 'torch 2.1.0 is outside the range foldwise supports (torch<3,>=2.4): ...'
    check_installed()         # every process's start: a warning line for each such package (never an import)

The installed versions are read from package metadata (importlib.metadata), so checking costs no
torch import. A source tree run without `pip install` (`PYTHONPATH=. python -m pipeline.bench.gpu`)
reads the ranges from its pyproject.toml.
"""
from __future__ import annotations

import logging
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

_logger = logging.getLogger(__name__)
CHECKED = ("torch", "torchvision", "timm", "onnxruntime", "onnxruntime-gpu", "onnx", "albumentations")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower()


@cache
def _source_tree_project() -> dict:
    """pyproject.toml's [project] table, for a source tree run without `pip install` ({} without one)."""
    if not PYPROJECT.is_file():
        return {}
    import tomllib

    return tomllib.loads(PYPROJECT.read_text())["project"]


@cache
def requirements() -> dict[str, str]:
    """foldwise's own requirements: name -> the whole requirement string (environment markers included)."""
    try:
        reqs = [r for r in metadata.requires("foldwise") or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        reqs = []
    return {_name(r): r for r in reqs or _source_tree_project().get("dependencies", [])}


def python_range() -> str:
    """requires-python, from the metadata or pyproject.toml ('' when neither is there)."""
    try:
        return metadata.metadata("foldwise").get("Requires-Python") or ""
    except metadata.PackageNotFoundError:
        return _source_tree_project().get("requires-python", "")


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def supported(name: str) -> str:
    """The version range foldwise supports for `name` ('' for any version)."""
    from packaging.requirements import Requirement

    req = requirements().get(name.lower())
    return str(Requirement(req).specifier) if req else ""


def problem(name: str) -> str | None:
    """One line when `name` is installed at a version outside foldwise's range, else None."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    req, version = requirements().get(name.lower()), installed(name)
    if req is None or version is None:
        return None
    spec = Requirement(req).specifier
    try:
        ok = spec.contains(Version(version).base_version if "+" in version else version, prereleases=True)
    except InvalidVersion:
        return None
    if ok:
        return None
    return (f"{name} {version} is outside the range foldwise supports ({name}{spec}); if something breaks, "
            f"install one inside it: pip install '{name}{spec}'")


def python_problem() -> str | None:
    from packaging.specifiers import SpecifierSet

    wanted, have = python_range(), ".".join(map(str, sys.version_info[:3]))
    if wanted and not SpecifierSet(wanted).contains(have):
        return f"Python {have} is outside the range foldwise supports ({wanted})"
    return None


def check_installed() -> list[str]:
    """Log a warning for Python and each checked package outside foldwise's ranges; returns them."""
    try:
        found = [p for p in (python_problem(), *(problem(n) for n in CHECKED)) if p]
    except ImportError:  # no `packaging` (a bare machine running from a source tree): nothing to compare with
        return []
    for line in found:
        _logger.warning("%s", line)
    return found
