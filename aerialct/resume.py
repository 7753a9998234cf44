"""Work kept between runs and shared between shards: the parts folder beside an output.

A command that can be resumed or sharded (``tile``, ``vectorize --shard``) keeps its
finished pieces of work in ``<out>.parts/`` (a folder aerialct marks as its own),
each written under a temporary name and renamed when complete, together with the
*fingerprint* of the run: a hash of its inputs (path, size, modification time) and
of every setting that changes the result. A later run with the same fingerprint
takes the finished pieces over; pieces of another run are never mixed in.

When every piece is there, exactly one process writes the output: the first to
create the claim file ``join.claim`` (an exclusive create, which shared file systems
honour). A claim whose process died on this machine is taken over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aerialct.geo.inputs import is_gdal_path
from aerialct.geo.outputs import (
    MARKER,
    is_aerialct_folder,
    pid_alive,
    remove_path,
    temp_path_for,
    write_marker,
)

__all__ = ["claim", "fingerprint", "parts_dir", "prepare", "read_json", "release",
           "remove_path", "stamp", "temp_path_for", "write_json"]  # fmt: skip

log = logging.getLogger("aerialct")

CLAIM = "join.claim"


def parts_dir(out: str | os.PathLike) -> Path:
    """Where the kept work of output ``out`` lives: ``<out>.parts``."""
    return Path(f"{os.fspath(out)}.parts")


def stamp(path: str | os.PathLike) -> list[Any]:
    """What identifies an input's content cheaply: path, size and modification time."""
    s = os.fspath(path)
    if is_gdal_path(s):
        return [s]
    st = os.stat(s)
    return [s, st.st_size, st.st_mtime_ns]


def fingerprint(inputs: Sequence[str | os.PathLike], settings: dict[str, Any]) -> str:
    """A hash of the inputs (:func:`stamp`) and the settings that shape the result."""
    from aerialct import __version__

    payload = json.dumps(
        {"inputs": [stamp(p) for p in inputs], "settings": settings, "version": __version__},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def prepare(folder: Path, made_by: str) -> None:
    """Create the parts folder (marked as aerialct's) unless it is there.

    Refuses (InputError) a folder of that name that aerialct did not make.
    """
    from aerialct.errors import InputError

    if folder.exists() and not is_aerialct_folder(folder):
        raise InputError(
            f"{folder}: exists and aerialct did not make it (no {MARKER} file); aerialct keeps "
            "its resumable work there: move it away"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).exists():
        write_marker(folder, made_by)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a reader sees the whole file or none."""
    tmp = temp_path_for(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def read_json(path: Path) -> Any:
    """A JSON file, or None when it is missing or unreadable (a piece to do again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _me() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def claim(folder: Path) -> bool:
    """Whether this process is the one to write the output from ``folder``'s pieces."""
    path = folder / CLAIM
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = (read_text(path) or "").split()
            if (
                len(owner) == 2
                and owner[0] == socket.gethostname()
                and owner[1].isdigit()
                and not pid_alive(int(owner[1]))
            ):
                log.warning("%s: its process %s died; taking the join over", path, owner[1])
                remove_path(path)
                continue
            return False
        with os.fdopen(fd, "w") as f:
            f.write(_me() + "\n")
        return True
    return False


def release(folder: Path) -> None:
    """Give a claim back (the join failed: another run may take it)."""
    path = folder / CLAIM
    if (read_text(path) or "").strip() == _me():
        remove_path(path)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
