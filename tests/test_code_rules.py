"""House rules that the linters do not cover (complexity <= 15 is ruff's C901, in pyproject)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aerialct"


def test_no_function_is_over_100_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 100:
                    long.append(f"{path.relative_to(PACKAGE.parent)}::{node.name} ({lines})")
    assert not long, "split these functions: " + ", ".join(long)


def test_the_class_tag_is_spelled_once():
    """The class-raster tag has one owner (geo/io.py); every writer and reader goes through it."""
    spelled = [
        str(p.relative_to(PACKAGE.parent))
        for p in sorted(PACKAGE.rglob("*.py"))
        if '"AERIALCT_CLASSES"' in p.read_text() or "AERIALCT_CLASSES=" in p.read_text()
    ]
    assert spelled == ["aerialct/geo/io.py"]
