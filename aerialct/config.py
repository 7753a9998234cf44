"""Typed experiment configuration with strict YAML loading and ``--set`` overrides.

A YAML file maps onto :class:`ExperimentConfig` (sections ``model``, ``loss``,
``data``, ``train``). Unknown keys and wrong types are errors that name the key
and suggest the closest valid one. A file may start from another with
``base: other.yaml`` (resolved relative to the file); its keys are deep-merged
over the base. ``--set train.lr=1e-4`` overrides one value (parsed as YAML, with
YAML 1.2 numbers: ``1e-4`` is a number, not a string). The sections stay plain
dataclasses; pydantic validates a dict against them (strict: no ``true`` for an
integer) and each error becomes one ConfigError line naming the dotted key, the
value, what is expected and the default. The resolved config is saved with each
run and inside each checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, with_config

from aerialct.errors import ConfigError
from aerialct.losses.config import LossConfig
from aerialct.models.config import ModelConfig

STRICT = ConfigDict(extra="forbid", strict=True)
"""How every config section is validated (see :func:`from_dict`)."""


@with_config(STRICT)
@dataclass
class DataConfig:
    """How chips are read and augmented."""

    train_split: str = "train"
    val_split: str = "val"
    """Validation split name; when the index has none, ``test`` is used, else no validation."""
    classes: tuple[str, ...] | None = None
    """Expected class names in id order; training refuses chips with another table. None: any."""
    exclude_from_mean: tuple[str, ...] = ("clutter",)
    """Classes left out of mean IoU / F1 (ignore pixels are never counted)."""
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] | None = None
    """Random rescale range, e.g. [0.75, 1.25]; None disables it."""
    num_workers: int = 2
    """DataLoader worker processes (0 reads chips in the training process)."""
    cache_gb: float | None = None
    """Training from a chips folder: hold the decoded chips in memory when they take at most
    this many GB (None: a quarter of the memory available at the start; 0: never)."""
    stats_chips: int = 256
    oversample_rare: float = 1.0
    """Chips holding a rare class are drawn this many times more often (1: plain shuffling)."""
    rare_share: float = 0.1
    """A class is rare below this share of the training split's labelled pixels."""
    """Training chips sampled (evenly spaced) to compute the per-band mean/std."""
    mean: tuple[float, ...] | None = None
    """Per-band mean (in raw pixel units); None takes the chips' statistics (dataset.json)."""
    std: tuple[float, ...] | None = None
    low: tuple[float, ...] | None = None
    """Per-band clip range in raw units (robust percentiles of the training pixels, from
    dataset.json); values are clipped to [low, high] before ``(x - mean) / std``."""
    high: tuple[float, ...] | None = None


@with_config(STRICT)
@dataclass
class TrainConfig:
    """Optimisation settings (defaults follow the CT paper)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 8e-5
    weight_decay: float = 0.01
    scheduler: Literal["cosine", "poly", "constant"] = "cosine"
    """Learning-rate decay after warm-up, per optimiser step, down to ``lr * min_lr_ratio``."""
    warmup_steps: int = 0
    """Linear warm-up from ``lr / 100`` over this many optimiser steps."""
    min_lr_ratio: float = 0.0
    poly_power: float = 0.9
    grad_clip: float = 1.0
    accumulate: int = 1
    """Gradient accumulation: one optimiser step every N batches (effective batch N x batch_size)."""
    eval_batch_size: int | None = None
    """Validation batch size; None uses ``batch_size``."""
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    """auto: bf16 on a GPU that supports it, none on the CPU."""
    device: str = "auto"
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many optimiser steps (for quick runs); None trains all epochs."""
    checkpoint_every: int = 0
    """Write ``last.pt`` every N optimiser steps as well as at each epoch end (0: epochs only)."""
    val_every: int = 1
    """Validate every N epochs."""
    save_every: int = 1
    """Write ``last.pt`` and the plots every N epochs (and at every best and the final epoch)."""
    find_unused_parameters: bool = False
    """DDP option for models with parameters that some steps do not use (slower when on)."""
    compile: bool = False
    """Compile the model's forward with ``torch.compile`` (the losses stay eager). Pays on
    GPUs for long runs; the first steps are slower while it compiles (needs a C compiler)."""


@with_config(STRICT)
@dataclass
class ExperimentConfig:
    """A whole experiment: the sections of a YAML config (see ``configs/``)."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------
# Strict conversion from dicts (pydantic) and back


@functools.cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def from_dict(cls: type, data: dict) -> Any:
    """Build config dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Validation is pydantic's strict JSON mode (the data are YAML/JSON values): an integer
    stays an integer (no ``true`` -> 1, no ``"5"`` -> 5), a number may be an integer, a
    list becomes a tuple. The error names the dotted key, the value and what is expected.
    """
    from pydantic import ValidationError

    try:
        text = json.dumps(data, default=str, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config: not a mapping of YAML values ({e})") from e
    try:
        return _adapter(cls).validate_json(text)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(_explain(dict(errors[0]), cls) + more) from None


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _explain(err: dict[str, Any], cls: type) -> str:
    """One line for one pydantic error: the dotted key, the value, what is expected."""
    kind, loc, value = err["type"], list(err["loc"]), err.get("input")
    if kind == "missing" and loc and isinstance(loc[-1], int):
        loc = loc[:-1]  # a fixed-length list with too few values: blame the list
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    section, tp, default = _locate(cls, loc)
    shown = _show(value)
    if kind == "unexpected_keyword_argument" and section is not None:
        names = [f.name for f in dataclasses.fields(section)]
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.5)
        prefix = key.rpartition(".")[0] + "." if "." in key else ""
        hint = (
            f"did you mean {prefix + close[0]!r}?" if close else f"valid keys: {', '.join(names)}"
        )
        return f"unknown config key {key!r}; {hint}"
    if kind == "literal_error" and tp is not None:
        allowed = _literal_args(tp)
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key}: {shown} is not one of {', '.join(_show(a) for a in allowed)}{hint}"
    if kind in ("missing", "too_short", "too_long") and typing.get_origin(_strip_none(tp)) is tuple:
        args = typing.get_args(_strip_none(tp))
        if Ellipsis not in args:
            return f"{key}: expected {len(args)} values ({_type_name(tp)}), got {shown}"
    if kind == "dataclass_type":
        return f"{key or 'config'}: expected a mapping of keys, got {shown}"
    default_hint = "" if default is _NO_DEFAULT else f" (default: {_show(default)})"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {shown}{default_hint}"
    expected = _type_name(tp) if tp is not None else "value"
    return f"{key}: {shown} is not a valid {expected} ({err['msg']}){default_hint}"


_NO_DEFAULT = object()


def _locate(cls: type, loc: list) -> tuple[Any, Any, Any]:
    """(dataclass holding the last key, the type at ``loc``, its default) along ``loc``."""
    section: Any = None
    tp: Any = cls
    default: Any = cls()
    for part in loc:
        tp = _strip_none(tp)
        if isinstance(part, str) and dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return tp, None, _NO_DEFAULT
            section, tp = tp, hints[part]
            default = getattr(default, part, _NO_DEFAULT)
        elif isinstance(part, int) and typing.get_origin(tp) in (tuple, list):
            args = typing.get_args(tp)
            fixed = typing.get_origin(tp) is tuple and Ellipsis not in args
            tp = (args[part] if part < len(args) else None) if fixed else (args or (Any,))[0]
            default = _NO_DEFAULT
        else:
            return None, None, _NO_DEFAULT
    return section, tp, default


def _strip_none(tp: Any) -> Any:
    """``X | None`` -> ``X`` (other unions unchanged)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _literal_args(tp: Any) -> list[Any]:
    out: list[Any] = []
    for arg in typing.get_args(tp):
        out.extend(_literal_args(arg) if typing.get_origin(arg) is Literal else [arg])
    return [None if a is type(None) else a for a in out]


def _show(v: Any) -> str:
    """A value as YAML spells it (null, true, lists)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of YAML/JSON-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------
# YAML files and overrides


_YAML12_FLOAT = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)$"
)


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader, reading ``1e-4`` as a number (YAML 1.2) rather than a string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.yaml_implicit_resolvers = resolvers
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    for special in (r"^[-+]?\.(?:inf|Inf|INF)$", r"^\.(?:nan|NaN|NAN)$"):
        Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(special), list("-+."))
    return Loader


def _load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``base:`` chains."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; give a YAML file (see configs/)")
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: 'base' chain loops back to itself")
    try:
        data = _load_yaml(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from e
    if data is None:
        raise ConfigError(
            f"{p}: the config file is empty; write the sections to set (see configs/) or "
            "pass a preset name such as --config tiny-cpu"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(read_yaml_tree(p.parent / base, (*_seen, p.resolve())), data)
    return data


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a config dict."""
    import yaml

    out = _deep_merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key part; use section.key=value")
        try:
            value = _load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The presets shipped in the repository's ``configs/`` folder."""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or a preset name (``tiny-cpu``) looked up in ``configs/``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    known = sorted(q.stem for q in PRESETS_DIR.glob("*.yaml")) if PRESETS_DIR.is_dir() else []
    close = difflib.get_close_matches(str(name_or_path), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"config {str(name_or_path)!r}: no such file or preset; {hint}"
        f"give a YAML path or one of: {', '.join(known) or '(no presets found)'}"
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Load a YAML config (or defaults when ``path`` is None), apply overrides, validate."""
    data = read_yaml_tree(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return from_dict(ExperimentConfig, data)


def config_from_dict(data: dict) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a plain dict (e.g. the one inside a checkpoint)."""
    return from_dict(ExperimentConfig, data)


def dump_yaml(cfg: Any) -> str:
    """A config dataclass as YAML, keys in declaration order (what ``config.yaml`` holds)."""
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
