"""Typed experiment configuration with strict YAML loading and ``--set`` overrides.

A YAML file maps onto :class:`ExperimentConfig` (sections ``model``, ``loss``,
``data``, ``train``). Unknown keys and wrong types are errors that name the key
and suggest the closest valid one. A file may start from another with
``base: other.yaml`` (resolved relative to the file); its keys are deep-merged
over the base. ``--set train.lr=1e-4`` overrides one value (parsed as YAML).
The resolved config is saved with each run and inside each checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aerialct.errors import ConfigError
from aerialct.losses.config import LossConfig
from aerialct.models.config import ModelConfig


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


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------
# Generic strict conversion between dicts and dataclasses


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


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: expected a mapping for section {tp.__name__}, got {value!r}"
            )
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed; expected {_type_name(tp)}")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}{hint}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}: expected {len(args)} values ({_type_name(tp)}), got {value!r}"
                )
            return tuple(
                _convert(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            prefix = f"{where}." if where else ""
            hint = (
                f"did you mean {prefix + close[0]!r}?"
                if close
                else f"valid keys: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key {path!r}; {hint}")
        kwargs[key] = _convert(value, hints[key], path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e


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
        data = yaml.safe_load(p.read_text())
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
            value = yaml.safe_load(raw) if raw.strip() else ""
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
    return from_dict(ExperimentConfig, data)


def dump_yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
