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


ENVIRONMENT = {"AERIALCT_SHARD_COUNT", "AERIALCT_WEIGHTS_DIR"}
"""Environment variables aerialct reads: AERIALCT_ names that are not dataset tags."""


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
                and node.value not in ENVIRONMENT
            ) or (isinstance(node, ast.keyword) and (node.arg or "").startswith("AERIALCT_")):
                spelled.append(f"{rel}:{node.lineno}")
    assert not spelled, "spell these tags through aerialct.geo.tags: " + ", ".join(spelled)


def _modules() -> dict[str, Path]:
    """Every aerialct module by dotted name (a package by its own name)."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(mods: dict[str, Path]):
    """(importing module, line, imported module, name or None) for every `import`/`from`
    node of the package, at any depth (deferred, TYPE_CHECKING and conditional ones too)."""
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        yield mod, node.lineno, alias.name, None
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    if f"{base}.{alias.name}" in mods:  # a submodule
                        yield mod, node.lineno, f"{base}.{alias.name}", None
                    elif base in mods:
                        yield mod, node.lineno, base, alias.name


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_aerialct_modules():
    """Every import counts, deferred (function-level) ones included: a cycle hidden inside a
    function is still a cycle between the two modules' concerns."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, _, target, _ in _imports(mods):
        if target != mod:
            graph[mod].add(target)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_from_another_aerialct_module():
    """A `_name` is its module's own: promote it (drop the underscore) or keep it home."""
    mods = _modules()
    crossing = [
        f"{mods[mod].relative_to(PACKAGE.parent)}:{line} imports {target}.{name}"
        for mod, line, target, name in _imports(mods)
        if name and name.startswith("_") and not name.startswith("__") and target != mod
    ]
    assert not crossing, "private names crossing modules: " + ", ".join(crossing)


def test_benchmarks_and_examples_import_names_that_exist():
    # benchmark scripts are not run by the suite (minutes each, peers not installed): a name
    # moved inside aerialct must not leave one of them failing at its first line
    import importlib

    root = Path(__file__).resolve().parent.parent
    missing = []
    for path in sorted([*root.glob("benchmarks/*.py"), *root.glob("examples/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aerialct")
            ):
                continue
            mod = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(mod, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(
                        f"{path.relative_to(root)}:{node.lineno} {node.module}.{alias.name}"
                    )
    assert not missing, missing
