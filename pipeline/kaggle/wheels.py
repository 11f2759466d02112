"""Wheels for the Kaggle dataset: `serve/` as a wheel, and dependency wheels for an offline install.

    build_serve_wheel(Path("kaggle/dataset"))                  # foldwise_serve-0.1.0+<src hash>-py3-none-any.whl
    download_wheels(["onnxruntime"], Path("kaggle/dataset"), "3.11")   # pip download, manylinux x86_64

The serve wheel is built by pip (setuptools backend, no build isolation, no index: nothing is
fetched) from a copy of the installed `serve` package; its version's local label is the hash of
the sources and SOURCE_DATE_EPOCH pins the zip timestamps, so the same sources give the same
bytes. Dependency wheels come from `pip download` for Kaggle's platform (CPython, manylinux
x86_64, `submit.wheels_python`): that needs PyPI here, never on Kaggle.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from serve.errors import UserError

_logger = logging.getLogger(__name__)
DIST = "foldwise-serve"
SERVE_REQUIRES = ["numpy>=1.26", "pandas>=2.2", "pillow>=10", "tqdm>=4.66", "onnxruntime>=1.20"]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")


def serve_sources() -> Path:
    """The folder of the `serve` package this process runs."""
    import serve

    return Path(serve.__file__).resolve().parent


def source_hash(root: Path) -> str:
    """sha256 over the package's .py files (relative path and bytes, sorted)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _version() -> str:
    try:
        return metadata.version("foldwise")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _pip(args: Sequence[str], what: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input", "-q"]
    _logger.info("%s: %s", what, " ".join(cmd[3:]))
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise UserError(f"{what} failed: pip says: {last[:300]}")


def build_serve_wheel(out_dir: Path) -> Path:
    """Build the serve wheel into `out_dir` and return its path."""
    src = serve_sources()
    digest = source_hash(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="foldwise-serve-wheel-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(src, project / "serve", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        requires = ", ".join(f'"{r}"' for r in SERVE_REQUIRES)
        (project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{DIST}"\nversion = "{_version()}+{digest[:12]}"\n'
            'description = "foldwise batch inference (onnxruntime + numpy): the serve/ package"\n'
            f'requires-python = ">=3.10"\ndependencies = [{requires}]\n\n'
            '[tool.setuptools]\npackages = ["serve"]\n')
        built = Path(tmp) / "wheel"
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(built), str(project)],
             "building the serve wheel", env={"SOURCE_DATE_EPOCH": "315532800"})
        wheels = sorted(built.glob("*.whl"))
        if len(wheels) != 1:
            raise UserError(f"building the serve wheel gave {len(wheels)} wheels, expected 1")
        target = out_dir / wheels[0].name
        shutil.move(str(wheels[0]), target)
    return target


def default_requirements(gpu: bool) -> list[str]:
    """What the notebook may need to install offline: onnxruntime (its GPU build for a GPU session)."""
    return ["onnxruntime-gpu" if gpu else "onnxruntime"]


def download_wheels(requirements: Sequence[str], out_dir: Path, python_version: str) -> list[Path]:
    """`pip download` the wheels of `requirements` (and what they need) for Kaggle's platform."""
    if not requirements:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    args = ["download", "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(out_dir), *requirements]
    try:
        _pip(args, f"downloading wheels of {', '.join(requirements)} for Python {python_version}")
    except UserError as exc:
        raise UserError(f"{exc} (PyPI must be reachable from here; or set submit.wheels: [] when Kaggle's image "
                        "already has them)") from None
    return sorted(set(out_dir.glob("*.whl")) - before)
