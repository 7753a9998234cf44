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


def _environment_names(tree: ast.AST) -> set[int]:
    """ids of string constants used as environment variable names (os.environ, getenv, or a
    mapping named env), directly or through a constant name (``NAME = "AERIALCT_X"``)."""
    ids = set()
    for node in ast.walk(tree):
        args: list[ast.AST] = []
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f, "value", None)
            if name == "getenv" or (
                name in ("get", "pop", "setdefault")
                and isinstance(owner, ast.Attribute | ast.Name)
                and ("environ" in ast.unparse(owner) or ast.unparse(owner) == "env")
            ):
                args = node.args[:1]
        elif isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
            args = [node.slice]
        elif isinstance(node, ast.Compare) and any(
            "environ" in ast.unparse(c) for c in node.comparators
        ):
            args = [node.left]
        ids.update(id(a) for a in args)
    names = {a.id for a in ast.walk(tree) if isinstance(a, ast.Name) and id(a) in ids}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts, strict=False))
                ids.update(id(v) for t, v in pairs if isinstance(t, ast.Name) and t.id in names)
    return ids


def test_every_aerialct_tag_is_spelled_in_one_module():
    """Dataset tags (AERIALCT_*) have one owner, geo/tags.py: no other module spells one, as a
    string or as a keyword argument (environment variables such as AERIALCT_WEIGHTS_DIR aside)."""
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel == "aerialct/geo/tags.py":
            continue
        tree = ast.parse(path.read_text())
        env = _environment_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("AERIALCT_")
                and node.value.replace("_", "").isalnum()
                and id(node) not in env
            ) or (isinstance(node, ast.keyword) and (node.arg or "").startswith("AERIALCT_")):
                spelled.append(f"{rel}:{node.lineno}")
    assert not spelled, "spell these tags through aerialct.geo.tags: " + ", ".join(spelled)
