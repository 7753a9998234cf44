"""timm backbone adapter: any hierarchical timm model -> list of channel-first stage maps.

The adapter wraps ``timm.create_model(name, features_only=True, pretrained=False)``
(never a network call), normalises channel-last outputs (Swin and other
transformer families return NHWC under ``features_only``) to NCHW, exposes the
channels and reductions of the selected stages, checks them against a real
forward pass at construction, and validates input sizes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aerialct.errors import ConfigError, InputError

log = logging.getLogger("aerialct")

SWIN_BASE = "swin_tiny_patch4_window7_224"

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # The CT paper's Swin encoder (DCSwin / UNetFormer): embed 64, depths 2-2-8-2, heads 2-4-8-16.
    "swin_ct": (
        SWIN_BASE,
        {"embed_dim": 64, "depths": (2, 2, 8, 2), "num_heads": (2, 4, 8, 16), "window_size": 7},
    ),
    # PoolFormer-S12 (MetaFormer v1: pooling token mixer, 12 blocks, dims 64-128-320-512).
    "poolformer_s12": ("poolformer_s12", {}),
    # Tiny encoders for tests and smoke runs. With CT at 64 px chips, tiny_swin's last stage
    # (stride 32) has 2x2 tokens per image: in the tests' 2-image batches a class never has
    # 5 positive and 5 negative tokens there, so that stage's (stage, class) groups are always
    # skipped and its 16 of the 65 backbone tensors get no contrastive gradient (the
    # segmentation loss still trains them). Use ct_stages (0, 1, 2) or larger chips/batches
    # for a CT signal on every stage.
    "tiny_swin": (
        SWIN_BASE,
        {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 4},
    ),
    "tiny_cnn": ("convnext_atto", {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}),
}
"""Preset name -> (timm model name, keyword arguments for ``timm.create_model``)."""


def resolve_backbone(name: str, kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Preset or timm name -> (timm name, kwargs); ``kwargs`` override the preset's."""
    if name in PRESETS:
        timm_name, preset_kwargs = PRESETS[name]
        return timm_name, {**preset_kwargs, **(kwargs or {})}
    return name, dict(kwargs or {})


def _accepts(fn: Any, arg: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return arg in params


def _sized_model_class(timm_name: str) -> Any:
    """The model class behind a timm name if it takes ``img_size`` (Swin-like), else None."""
    import timm

    try:
        entry = timm.models.model_entrypoint(timm_name)
    except (RuntimeError, KeyError):
        return None
    module = __import__(entry.__module__, fromlist=["_"])
    # Entry points call a _create_<family> helper that builds a class defined in the module;
    # a class taking ``img_size`` (preferably also ``dynamic_img_size``) is the one that
    # builds size-dependent buffers (attention masks, position tables).
    found = None
    for obj in vars(module).values():
        is_local_module = (
            isinstance(obj, type)
            and issubclass(obj, nn.Module)
            and obj.__module__ == module.__name__
        )
        if is_local_module and _accepts(obj.__init__, "img_size"):
            if _accepts(obj.__init__, "dynamic_img_size"):
                return obj
            found = found or obj
    return found


@dataclass
class WeightsReport:
    """What loading pretrained weights into the backbone did, and where they came from."""

    path: str
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    adapted: str | None = None
    """The first convolution adapted to the band count (``conv1: 3 -> 4 bands``), if it was."""
    source: dict[str, Any] = field(default_factory=dict)
    """:meth:`aerialct.models.weights.ResolvedWeights.record`: name, file, sha256, ..."""

    def summary(self) -> str:
        """One line: what was loaded, missing, unexpected and shape-mismatched."""
        name = self.source.get("name")
        named = f"{name} ({self.path})" if name and name != self.path else self.path
        adapted = f"; {self.adapted}" if self.adapted else ""
        return (
            f"{named}: loaded {self.loaded}/{self.total} backbone tensors; "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched{adapted}"
        )

    def record(self) -> dict[str, Any]:
        """The checkpoint's ``encoder_weights``: the source, and what the load did."""
        return {
            **self.source,
            "file": self.source.get("file", self.path),
            "loaded": self.loaded,
            "total": self.total,
            "adapted": self.adapted,
        }


class BackboneAdapter(nn.Module):
    """A timm ``features_only`` model that returns NCHW maps with known channels/reductions.

    Shape:
        input ``(B, C_in, H, W)`` with ``H``, ``W`` multiples of ``max(reductions)``;
        output list of ``(B, channels[i], H / reductions[i], W / reductions[i])``.
    """

    def __init__(
        self,
        name: str,
        *,
        in_chans: int = 3,
        img_size: int = 512,
        out_indices: tuple[int, ...] | None = None,
        num_levels: int = 4,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        timm_name, kw = resolve_backbone(name, kwargs)
        if not timm.is_model(timm_name):
            close = timm.list_models(f"*{timm_name.split('_')[0]}*")[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"model.backbone {name!r} is neither a preset ({', '.join(PRESETS)}) "
                f"nor a timm model{hint}; pick one of those"
            )
        cls = _sized_model_class(timm_name)
        # Swin-like models build attention masks for a fixed size: give them the training
        # chip size, and where timm supports it let them accept any multiple of 32.
        self.fixed_size = False
        if cls is not None:
            kw.setdefault("img_size", img_size)
            if _accepts(cls.__init__, "dynamic_img_size"):
                kw.setdefault("dynamic_img_size", True)
            else:
                self.fixed_size = True
        self.name = name
        self.timm_name = timm_name
        self.img_size = img_size
        base = dict(pretrained=False, features_only=True, in_chans=in_chans, **kw)
        body: Any  # timm's FeatureListNet (feature_info is its attribute, not a submodule)
        try:
            body = timm.create_model(timm_name, **base)
        except TypeError as e:
            raise ConfigError(
                f"model.backbone_kwargs for {timm_name!r} rejected by timm ({e}); "
                "remove or rename the offending key"
            ) from e
        except RuntimeError as e:
            raise ConfigError(
                f"model.backbone {timm_name!r} has no features_only mode in timm ({e}); "
                "pick a hierarchical (CNN / Swin / MetaFormer) model"
            ) from e
        infos = body.feature_info.get_dicts()
        available = self._available_levels(body)
        indices = self._select_indices(out_indices, available, num_levels, name)
        if tuple(body.feature_info.out_indices) != indices:
            body = timm.create_model(timm_name, **base, out_indices=indices)
            infos = body.feature_info.get_dicts()
        self.body = body
        self.out_indices = indices
        self.channels: list[int] = [int(d["num_chs"]) for d in infos]
        self.reductions: list[int] = [int(d["reduction"]) for d in infos]
        fmt = getattr(body, "output_fmt", None)
        self._channels_last = str(getattr(fmt, "value", fmt or "NCHW")).upper() == "NHWC"
        for i in range(1, len(self.reductions)):
            if self.reductions[i] <= self.reductions[i - 1]:
                raise ConfigError(
                    f"model.out_indices {indices} of {timm_name!r} give reductions "
                    f"{self.reductions}, which do not increase; pick strictly deeper stages"
                )
        self._probe(in_chans)

    @staticmethod
    def _available_levels(body: Any) -> int:
        # FeatureListNet holds only the requested levels; default out_indices are all levels
        # for most families (ResNet: 5 incl. the stride-2 stem; Swin/ConvNeXt/PoolFormer: 4).
        idx = body.feature_info.out_indices
        return max(idx) + 1

    @staticmethod
    def _select_indices(
        out_indices: tuple[int, ...] | None, available: int, num_levels: int, name: str
    ) -> tuple[int, ...]:
        if out_indices is None:
            if available < num_levels:
                raise ConfigError(
                    f"model.backbone {name!r} has {available} feature levels, the decoders need "
                    f"{num_levels}; pick a hierarchical backbone"
                )
            return tuple(range(available - num_levels, available))
        norm = []
        for i in out_indices:
            if not isinstance(i, int) or not -available <= i < available:
                raise ConfigError(
                    f"model.out_indices {tuple(out_indices)}: {i!r} is not a level of "
                    f"{name!r} (it has {available}: 0..{available - 1})"
                )
            norm.append(i % available)
        if len(set(norm)) != len(norm) or norm != sorted(norm):
            raise ConfigError(
                f"model.out_indices {tuple(out_indices)} must be distinct and increasing, "
                f"e.g. {tuple(range(available - num_levels, available))}"
            )
        return tuple(norm)

    def _probe(self, in_chans: int) -> None:
        """Run a tiny forward pass and check channels/reductions against the real outputs."""
        size = self.img_size if self.fixed_size else self.max_reduction * 2
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.forward(torch.zeros(1, in_chans, size, size))
        except Exception as e:  # a model family the adapter does not know how to size
            raise ConfigError(
                f"model.backbone {self.name!r} failed on a {size}x{size} probe input ({e}); "
                "use a hierarchical timm model that accepts variable input sizes"
            ) from e
        finally:
            self.train(was_training)
        for i, f in enumerate(feats):
            expect = (self.channels[i], size // self.reductions[i], size // self.reductions[i])
            if tuple(f.shape[1:]) != expect:
                raise ConfigError(
                    f"model.backbone {self.name!r}: stage {i} gave {tuple(f.shape[1:])}, "
                    f"feature_info says {expect}; this model is not supported by the adapter"
                )

    @property
    def max_reduction(self) -> int:
        """The coarsest stride; inputs must be multiples of it."""
        return max(self.reductions)

    def check_input_size(self, h: int, w: int) -> None:
        """Raise InputError naming the nearest valid size when (h, w) does not fit."""
        step = self.max_reduction

        def nearest(v: int) -> int:
            """The multiple of ``step`` nearest to ``v`` (at least ``step``)."""
            return max(step, round(v / step) * step)

        if self.fixed_size and (h, w) != (self.img_size, self.img_size):
            raise InputError(
                f"input size {h}x{w} does not fit backbone {self.name!r}, which takes exactly "
                f"{self.img_size}x{self.img_size} with this timm version; resize the input "
                "or set model.img_size"
            )
        if h % step or w % step or h < step or w < step:
            raise InputError(
                f"input size {h}x{w} does not fit backbone {self.name!r}: height and width must "
                f"be multiples of {step}; nearest valid size is {nearest(h)}x{nearest(w)}"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Channel-first maps ``[(B, C_i, H/r_i, W/r_i)]`` whatever the timm layout."""
        feats = self.body(x)
        out = []
        for i, f in enumerate(feats):
            if self._channels_last or (
                f.shape[1] != self.channels[i] and f.shape[-1] == self.channels[i]
            ):
                f = f.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
            out.append(f.contiguous())
        return out


_PREFIXES = ("module.", "model.", "backbone.", "body.", "encoder.")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: weights file not found; give a local .pt/.pth/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(
            f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "give a torch state dict saved with torch.save"
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"{path}: not a state dict of tensors; save model.state_dict() instead")
    return obj


def _normalise_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
                changed = True
    # timm features_only flattens sequential stages: "layers.0.x" -> "layers_0.x"
    return re.sub(r"^([A-Za-z]+)\.(\d+)\.", r"\1_\2.", key)


def _adapt_first_conv(
    backbone: BackboneAdapter, remapped: dict[str, Tensor], target: dict[str, Tensor]
) -> str | None:
    """Pretrained RGB stem weights -> the backbone's band count, the way timm adapts them.

    timm's ``adapt_input_conv``: one band sums the RGB kernels; more bands repeat them
    (R, G, B, R, ...) scaled by 3 / bands, so the layer's response to grey input is kept.
    """
    from timm.models import get_pretrained_cfg
    from timm.models._manipulate import adapt_input_conv

    try:
        cfg = get_pretrained_cfg(backbone.timm_name)
    except RuntimeError:
        cfg = None
    convs = getattr(cfg, "first_conv", None) if cfg is not None else None
    done = []
    for conv in [convs] if isinstance(convs, str) else list(convs or ()):
        key = _normalise_key(f"{conv}.weight")
        w, want = remapped.get(key), target.get(key)
        if w is None or want is None or w.ndim != 4 or tuple(w.shape) == tuple(want.shape):
            continue
        if tuple(w.shape[:1]) + tuple(w.shape[2:]) != tuple(want.shape[:1]) + tuple(want.shape[2:]):
            continue
        try:
            remapped[key] = adapt_input_conv(int(want.shape[1]), w, base_chans=int(w.shape[1]))
        except (NotImplementedError, ValueError):
            continue
        done.append(f"{conv}: {w.shape[1]} -> {want.shape[1]} bands")
    return ", ".join(done) or None


def load_backbone_weights(
    backbone: BackboneAdapter, path: str | Path, *, source: dict[str, Any] | None = None
) -> WeightsReport:
    """Load a state dict file into ``backbone.body``; partial loads are reported, none refused.

    A pretrained RGB stem is adapted to the backbone's band count (:func:`_adapt_first_conv`).
    ``source`` (where the file came from) is kept in the report for the checkpoint. A
    classifier's head, which the feature backbone has not, is expected in weights published
    for classification (``timm:`` weights) and reported without a warning.
    """
    path = Path(path)
    src = _read_state_dict(path)
    target = backbone.body.state_dict()
    remapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for k, v in src.items():
        nk = k if k in target else _normalise_key(k)
        if nk not in target and k.replace(".", "_", 1) in target:
            nk = k.replace(".", "_", 1)
        if nk in target:
            remapped[nk] = v
        else:
            unexpected.append(k)
    adapted = _adapt_first_conv(backbone, remapped, target)
    mismatched = [k for k, v in remapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    for k in mismatched:
        del remapped[k]
    if not remapped:
        shapes = f" ({len(mismatched)} match by name but not by shape)" if mismatched else ""
        raise InputError(
            f"{path}: none of its {len(src)} tensors match backbone {backbone.name!r} "
            f"({backbone.timm_name}){shapes}; give weights for this architecture"
        )
    missing = [k for k in target if k not in remapped]
    backbone.body.load_state_dict(remapped, strict=False)
    report = WeightsReport(
        path=str(path),
        loaded=len(remapped),
        total=len(target),
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
        adapted=adapted,
        source=dict(source or {}),
    )
    published = str((source or {}).get("name", "")).startswith("timm:")
    surprising = missing or mismatched or (unexpected and not published)
    log.log(
        logging.WARNING if surprising else logging.INFO, "backbone weights %s", report.summary()
    )
    return report
