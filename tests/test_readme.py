"""The README runs as written: its session blocks are extracted and run literally.

Every ```bash block of the named README sections runs in an empty folder, in order, at the
sizes the README gives, under ``set -euo pipefail``. Blocks whose first line is a
``# GPU only`` comment are skipped (no GPU here). If the README and the code drift apart,
this test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def section_blocks(title: str) -> list[str]:
    """The ```bash blocks of the README section ``## <title>``, GPU-only blocks left out."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    return [b for b in blocks if not b.lstrip().startswith("# GPU only")]


def run_blocks(blocks: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "2")
    script = "set -euo pipefail\n" + "\n".join(blocks)
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_session_runs_as_written(tmp_path):
    blocks = section_blocks("A session, step by step")
    assert blocks, "the README lost its session blocks"
    r = run_blocks(blocks, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # every output the session names exists
    for name in ("pred/district_classes.tif", "buildings.gpkg", "pixels.json", "review.gpkg"):
        assert (tmp_path / name).exists(), name


def test_gpu_only_blocks_are_marked_and_skipped():
    text = README.read_text()
    start = text.index("## A session, step by step\n")
    body = text[start : text.find("\n## ", start + 1)]
    every = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    cuda = [b for b in every if "--device cuda" in b or "dcswin" in b]
    assert cuda, "the session should show its GPU-sized variant"
    assert all(b.lstrip().startswith("# GPU only") for b in cuda)


def _layout_picture() -> dict[str, str]:
    """The README's layout picture: each top-level entry of aerialct/ and its description."""
    text = README.read_text()
    body = text[text.index("\naerialct/\n") + len("\naerialct/\n") :]
    body = body[: body.index("\nconfigs/")]
    entries: dict[str, str] = {}
    name = ""
    for line in body.splitlines():
        m = re.match(r"  (\S+)(.*)", line)
        if m:
            name = m.group(1)
            entries[name] = m.group(2)
        else:
            entries[name] += " " + line.strip()
    return entries


def test_layout_picture_matches_the_tree():
    """Every module and package of aerialct/ is in the picture, and the picture names no module
    that does not exist (cli/ is summed up as "one module per command")."""
    pkg = ROOT / "aerialct"
    entries = _layout_picture()
    tree = {
        p.name + ("/" if p.is_dir() else "")
        for p in pkg.iterdir()
        if (p.is_dir() and (p / "__init__.py").is_file())
        or (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
    }
    assert set(entries) == tree
    for name, text in entries.items():
        if not name.endswith("/"):
            continue
        files = {q.name for q in (pkg / name).rglob("*.py")}
        subpackages = {q.parent.name + "/" for q in (pkg / name).rglob("*/__init__.py")}
        for mentioned in re.findall(r"\b([a-z_0-9]+\.py)\b", text):
            assert mentioned in files, f"{name}{mentioned} is in the README picture, not the tree"
        for mentioned in re.findall(r"\b([a-z_0-9]+/) \(", text):
            assert mentioned in subpackages, f"{name}{mentioned} is in the picture, not the tree"
        if name != "cli/":
            own = {q.name for q in (pkg / name).glob("*.py")} - {"__init__.py"}
            missing = own - set(re.findall(r"\b([a-z_0-9]+\.py)\b", text))
            assert not missing, f"{name}: {sorted(missing)} missing from the README picture"
