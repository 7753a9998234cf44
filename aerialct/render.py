"""JSON rendering of results: what ``--json`` prints and what report files hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy values and non-finite floats (-> null) as JSON-safe values;
    URLs without their secrets (query strings, ``user:password@``)."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        obj = str(obj)
    if isinstance(obj, str):
        if "://" not in obj and "/vsi" not in obj:
            return obj
        from aerialct.geo.inputs import redact

        return redact(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON text with a final newline (via :func:`jsonable`)."""
    return json.dumps(jsonable(obj), indent=2) + "\n"
