"""Model export for deployment (``aerialct export``) and loading of exported models.

A training checkpoint holds the inference model plus everything needed to resume
(projection heads, optimiser, scheduler, RNG states, the metric history). For
deployment only the inference model and what feeds it are kept:

* ``pt``: a slim aerialct checkpoint (model weights, config, class table,
  normalisation, chip size, GSD, final metrics) that
  :func:`aerialct.predict.bundle.load_inference_model` and ``predict`` read
  like any checkpoint; ``train --resume`` refuses it.
* ``onnx``: the network as an ONNX graph, batch size free, windows of the chip
  size. Input ``image``: normalised float32 ``(B, C, S, S)`` =
  ``(clip(raw, low, high) - mean) / std``; output ``logits``: float32 ``(B, K, S, S)``.
  The metadata (``metadata_props``) holds the class table, the per-band clip bounds
  and mean/std, chip size and GSD (:func:`export_metadata`).
  ``predict`` runs it on the CPU through onnxruntime (:class:`OnnxRunner`).
* ``torchscript``: the traced network, same input and output, with the same
  metadata as the extra file ``aerialct.json``.

No format carries the projection heads: they exist only for the training loss.

This module depends on the checkpoint format (:mod:`aerialct.engine.checkpoint`)
and the model (:mod:`aerialct.models`) only; :func:`read_exported` gives an
exported model back with its metadata, which :mod:`aerialct.predict.bundle` wraps
for ``predict``.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aerialct import __version__
from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.config import ExperimentConfig, to_dict
from aerialct.engine.checkpoint import load_checkpoint, local_model, make_checkpoint
from aerialct.errors import CheckpointError, InputError
from aerialct.geo.outputs import atomic_output, check_output
from aerialct.modelfiles import EXTRA_FILE, METADATA_FORMAT, is_torchscript
from aerialct.models.restore import model_from_checkpoint

if TYPE_CHECKING:
    import torch

FORMATS = ("onnx", "torchscript", "pt")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "pt": ".pt"}
ONNX_OPSET = 17
MIN_OPSET = 11
"""The oldest opset the models export to (bilinear Resize with half-pixel centres)."""
OUTPUT_KINDS = {"onnx": "onnx", "torchscript": "torchscript", "pt": "checkpoint"}
"""What ``--overwrite`` may replace for each format (:func:`aerialct.geo.outputs.file_is_kind`)."""
INPUT_NAME, OUTPUT_NAME = "image", "logits"

__all__ = [
    "FORMATS",
    "ExportResult",
    "OnnxRunner",
    "export_metadata",
    "export_model",
    "exported_metadata",
    "is_torchscript",
    "read_exported",
    "slim_checkpoint",
]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    source: str
    output: str
    format: str
    source_bytes: int
    output_bytes: int
    parameters: int
    chip_size: int
    classes: list[str]
    max_abs_diff: float | None  # exported vs torch logits on a random batch (onnx, torchscript)
    seconds: float

    @property
    def size_ratio(self) -> float:
        """Exported size over checkpoint size."""
        return self.output_bytes / self.source_bytes if self.source_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (what ``--json`` prints)."""
        return {**vars(self), "size_ratio": round(self.size_ratio, 4)}


def export_metadata(
    ckpt: dict[str, Any], config: ExperimentConfig | None, source: str
) -> dict[str, str]:
    """Everything needed to feed the network of the (checked) checkpoint ``ckpt``, as
    ``{str: str}`` (JSON values)."""
    norm, gsd = ckpt["normalization"], ckpt.get("gsd")
    low, high = norm.get("low"), norm.get("high")
    meta: dict[str, Any] = {
        "aerialct_format": METADATA_FORMAT,
        "aerialct_version": __version__,
        "classes": ClassTable.from_list(ckpt["classes"]).to_list(),
        "ignore_index": int(ckpt.get("ignore_index", IGNORE_INDEX)),
        "mean": [float(v) for v in norm["mean"]],
        "std": [float(v) for v in norm["std"]],
        "low": [float(v) for v in low] if low else None,
        "high": [float(v) for v in high] if high else None,
        "in_chans": int(ckpt["in_chans"]),
        "chip_size": int(ckpt["chip_size"]),
        "gsd": None if gsd is None else float(gsd),
        "input": input_formula(bool(low) and bool(high)),
        "output": f"{OUTPUT_NAME}: float32 (B, classes, chip_size, chip_size); argmax = class id",
        "source": source,
    }
    if config is not None:
        meta["model"] = to_dict(config.model)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def input_formula(clipped: bool) -> str:
    """What the exported network's input is, in words and symbols (the ``input`` metadata)."""
    per_band = "(clip(raw, low, high) - mean) / std" if clipped else "(raw - mean) / std"
    return (
        f"{INPUT_NAME}: float32 (B, in_chans, chip_size, chip_size) = {per_band}, per band, "
        "with raw the pixel values of the scene's bands in training order"
        + (
            " and low/high/mean/std the lists in this metadata (clip first: values outside "
            "[low, high] are set to the bound)"
            if clipped
            else " and mean/std the lists in this metadata"
        )
    )


def _parse_metadata(meta: dict[str, str], path: Path) -> dict[str, Any]:
    if meta.get("aerialct_format") != METADATA_FORMAT:
        raise CheckpointError(
            f"{path}: no aerialct metadata in this model; export it with `aerialct export`"
        )
    try:
        out: dict[str, Any] = {k: v if k in ("aerialct_format", "aerialct_version", "input", "output", "source")
               else json.loads(v) for k, v in meta.items()}  # fmt: skip
        out["classes_table"] = ClassTable.from_list(out["classes"])
        missing = [k for k in ("mean", "std", "in_chans", "chip_size") if k not in out]
        if missing:
            raise KeyError(", ".join(missing))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: the aerialct metadata is incomplete or invalid ({e}); export it again"
        ) from e
    n = out["in_chans"]
    if len(out["mean"]) != n or len(out["std"]) != n:
        raise CheckpointError(f"{path}: metadata has no mean/std per band; export it again")
    for key in ("low", "high"):
        bounds = out.get(key)
        if bounds is not None and len(bounds) != n:
            raise CheckpointError(
                f"{path}: metadata {key!r} has no value per band; export it again"
            )
    return out


def slim_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The inference part of a checkpoint: no heads, optimiser, scheduler, scaler or RNG."""
    metrics = ckpt.get("metrics") or {}
    norm = ckpt["normalization"]
    return make_checkpoint(
        config=ckpt["config"],
        classes=ClassTable.from_list(ckpt["classes"]),
        mean=norm["mean"],
        std=norm["std"],
        in_chans=ckpt["in_chans"],
        chip_size=ckpt["chip_size"],
        model_state=ckpt["model"],
        gsd=ckpt.get("gsd"),
        ignore_index=ckpt.get("ignore_index", IGNORE_INDEX),
        step=ckpt.get("step") or 0,
        epoch=ckpt.get("epoch") or 0,
        best_miou=ckpt.get("best_miou"),
        metrics={k: metrics[k] for k in ("last", "best_epoch") if k in metrics},
        low=norm.get("low"),
        high=norm.get("high"),
        exported=True,
    )


def export_model(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    format: str = "onnx",
    *,
    overwrite: bool = False,
    opset: int = ONNX_OPSET,
    check: bool = True,
) -> ExportResult:
    """Export ``checkpoint`` (a ``best.pt``/``last.pt``) to ``out`` as ``format``.

    ``check`` runs the exported network on a random batch and records the largest
    absolute difference of its logits from the torch model's (``max_abs_diff``).
    """
    import torch

    t0 = time.perf_counter()
    fmt = (format or "").strip().lower()
    if fmt not in FORMATS:
        raise InputError(f"--format {format!r}: unknown; use one of {', '.join(FORMATS)}")
    src, dst = local_model(checkpoint), Path(out)
    if fmt == "onnx":
        check_opset(opset)
    if (fmt == "onnx") != (dst.suffix.lower() == ".onnx"):
        raise InputError(
            f"{dst}: an {fmt} model "
            + ("needs a .onnx name" if fmt == "onnx" else "must not be named .onnx")
            + "; predict tells ONNX models by that suffix"
        )
    if src.resolve() == dst.resolve():
        raise InputError(f"{dst}: is the checkpoint itself; give another output file")
    _check_source(src)
    kind = OUTPUT_KINDS[fmt]
    check_output(dst, overwrite, kind=kind, inputs=[src])
    diff: float | None = None
    if fmt == "pt":
        slim = slim_checkpoint(load_checkpoint(src))
        with atomic_output(dst, overwrite, kind=kind, inputs=[src]) as tmp, open(tmp, "wb") as f:
            torch.save(slim, f)
        ckpt = load_checkpoint(dst)  # proves the slim file loads for predict
        model, _ = model_from_checkpoint(ckpt, dst)
    else:
        ckpt = load_checkpoint(src)
        model, cfg = model_from_checkpoint(ckpt, src)
        meta = export_metadata(ckpt, cfg, src.name)
        model = model.float()
        S, C = int(ckpt["chip_size"]), int(ckpt["in_chans"])
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(2, C, S, S, generator=gen)
        with torch.inference_mode():
            expected = model(example)
        with atomic_output(dst, overwrite, kind=kind, inputs=[src]) as tmp:
            if fmt == "onnx":
                _write_onnx(model, example, tmp, meta, opset)
                if check:
                    got = OnnxRunner(tmp)(example)
            else:
                _write_torchscript(model, example, tmp, meta)
                if check:
                    with warnings.catch_warnings(), torch.inference_mode():
                        warnings.simplefilter("ignore", FutureWarning)
                        got = torch.jit.load(str(tmp), map_location="cpu")(example)
            if check:
                diff = float((got - expected).abs().max())
    params = sum(p.numel() for p in model.parameters())
    return ExportResult(
        source=str(src),
        output=str(dst),
        format=fmt,
        source_bytes=src.stat().st_size,
        output_bytes=dst.stat().st_size,
        parameters=int(params),
        chip_size=int(ckpt["chip_size"]),
        classes=[c["name"] for c in ckpt["classes"]],
        max_abs_diff=diff,
        seconds=time.perf_counter() - t0,
    )


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset that torch's exporter cannot write for these models."""
    import torch.onnx

    constants = getattr(torch.onnx, "_constants", None)  # private: a fallback if it moves
    top = int(getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    if not MIN_OPSET <= int(opset) <= top:
        raise InputError(
            f"--opset {opset}: this torch exports opsets {MIN_OPSET}..{top} of these models; "
            f"use one of them (the default, {ONNX_OPSET}, runs on onnxruntime 1.14 and later)"
        )


def _check_source(src: Path) -> None:
    """Refuse an exported model given as the model to export (it holds no checkpoint)."""
    if src.suffix.lower() == ".onnx" or is_torchscript(src):
        what = "an ONNX" if src.suffix.lower() == ".onnx" else "a TorchScript"
        raise InputError(
            f"{src}: is {what} model exported by aerialct, not a checkpoint; export takes the "
            "best.pt / last.pt that aerialct train wrote (predict takes the exported model as is)"
        )


def _write_onnx(model: Any, example: Any, path: Path, meta: dict[str, str], opset: int) -> None:
    import onnx
    import torch

    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the tracing exporter: no onnxscript needed, fixed-size windows
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's deprecation and tracing notes
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]  # a file object works (torch docs); stubs say path
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            **kwargs,
        )
    proto = onnx.load_model_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = "aerialct segmentation model; see the metadata for classes and inputs"
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def _write_torchscript(model: Any, example: Any, path: Path, meta: dict[str, str]) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings, torch.jit's deprecation notice
        traced = torch.jit.trace(model, example, check_trace=False)
        # into memory, then written from Python: torch's own file writer aborts the process
        # (a C++ exception, exit 134) on a full disk, where Python's write raises ENOSPC
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(meta)})
    with open(path, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------
# Loading exported models (the model runners ``predict`` calls like a torch module)


class OnnxRunner:
    """An ONNX model behind onnxruntime on the CPU, called like the torch model.

    ``runner(x)`` takes a normalised float tensor ``(B, C, S, S)`` and returns the
    logits as a tensor, so the streaming core of ``predict`` (weighting, blending,
    argmax) runs unchanged. ``to``/``eval``/``parameters`` answer as a CPU module does.
    """

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        # no busy-waiting between runs: blending and argmax need the same cores meanwhile
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            first = (str(e).splitlines() or ["unreadable"])[0][:160]
            raise CheckpointError(
                f"{self.path}: onnxruntime cannot load this model ({first}); "
                "export it again with `aerialct export --format onnx`"
            ) from e
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run([OUTPUT_NAME], {self.input_name: arr})
        return torch.from_numpy(logits)

    def to(self, device: Any) -> OnnxRunner:
        """Itself on the CPU; InputError for any other device."""
        import torch

        if torch.device(device).type != "cpu":
            raise InputError(
                f"{self.path}: ONNX models run on the CPU through onnxruntime; use --device cpu "
                "(or predict on the GPU with the .pt checkpoint)"
            )
        return self

    def eval(self) -> OnnxRunner:
        """Itself (an exported model is always in eval mode)."""
        return self

    def parameters(self) -> Any:
        """No parameters (predict asks for the model's device through them)."""
        return iter(())


def read_exported(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """An exported ``.onnx`` (an :class:`OnnxRunner`) or TorchScript model, in eval mode on
    ``device``, and its checked metadata (``classes_table`` holds the parsed class table).

    CheckpointError naming the file when it is missing, unreadable or has no aerialct
    metadata.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file; give a .onnx or .pt file")
    model: Any
    if p.suffix.lower() == ".onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise CheckpointError(
                f"{p}: predicting with an ONNX model needs onnxruntime; pip install onnxruntime"
            ) from e
        model = OnnxRunner(p)
        meta = _parse_metadata(model.metadata, p)
        model.to(device)
        return model, meta
    model, meta = _load_torchscript(p)
    model.eval().to(torch.device(device))
    return model, meta


def exported_metadata(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """The parsed aerialct metadata of an exported model and its number of weights
    (``aerialct info``), without onnxruntime."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        import numpy as np
        import onnx

        try:
            proto = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError and its own types
            first = (str(e).splitlines() or ["unreadable"])[0][:160]
            raise CheckpointError(f"{p}: not a readable ONNX model ({first})") from e
        raw = {prop.key: prop.value for prop in proto.metadata_props}
        count = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
        return _parse_metadata(raw, p), count
    model, meta = _load_torchscript(p)
    return meta, sum(t.numel() for t in model.parameters())


def _load_torchscript(p: Path) -> tuple[Any, dict[str, Any]]:
    """A TorchScript model (on the CPU) and its parsed aerialct metadata."""
    import torch

    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            model = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:
        first = (str(e).splitlines() or ["unreadable"])[0][:160]
        raise CheckpointError(f"{p}: not a readable TorchScript model ({first})") from e
    try:
        raw = json.loads(extra[EXTRA_FILE] or "{}")
    except ValueError:
        raw = {}
    return model, _parse_metadata(raw, p)
