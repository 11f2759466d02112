"""Small files a reader takes in at once: no module of pipeline/ or serve/ past 400 lines, no function
past 80 (docs/architecture.md); split a module by what its parts do when it grows."""
from __future__ import annotations

import ast

import pytest

from helpers.cli import ROOT

SOURCES = sorted(p for pkg in ("pipeline", "serve") for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_modules_and_functions_stay_small(path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"
