"""aerialct's DCSwin and UNetFormer decoders against the reference code, module by module.

Takes a checkout of GeoSeg (github.com/WangLibo1995/GeoSeg) and, optionally, of the CT
authors' fork of it (github.com/Sjyhne/ContrastiveGeoSeg); imports their decoder files
from there (never copied into aerialct; they need ``timm`` and ``einops``) and for each
decoder and encoder width set (the CT paper's Swin, embed 64: 64-128-256-512; PoolFormer
S12: 64-128-320-512):

1. counts parameters per module, aerialct's against the reference's;
2. transfers the reference's (random) weights into aerialct's decoder, key by key, and
   checks that every tensor of both is used exactly once with the same shape;
3. runs both in float64, eval mode, on the same random encoder maps of a 512 px input
   and compares the feature map of every stage and the logits at full size.

Writes ``benchmarks/results/decoders.md``.

    python benchmarks/compare_decoders.py --geoseg ../GeoSeg --ct ../ContrastiveGeoSeg
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

WIDTHS = {"swin_ct": (64, 128, 256, 512), "poolformer_s12": (64, 128, 320, 512)}
NUM_CLASSES, SIZE, DIM = 6, 512, 64

# aerialct key -> reference key, applied in order (each a regex substitution)
DCSWIN_KEYS: list[tuple[str, str]] = [
    (r"^conv32\.", "dcfam.conv4.0."),
    (r"^conv4\.", "dcfam.conv1.0."),
    (r"^long32\.conv1\.", "dcfam.lf4.0."),  # lf: conv, upsample, conv, upsample
    (r"^long32\.conv2\.", "dcfam.lf4.2."),
    (r"^long16\.conv1\.", "dcfam.lf3.0."),
    (r"^long16\.conv2\.", "dcfam.lf3.2."),
    (r"^ca\.", "dcfam.ca."),
    (r"^pa\.q\.", "dcfam.pa.query_conv."),
    (r"^pa\.k\.", "dcfam.pa.key_conv."),
    (r"^pa\.v\.", "dcfam.pa.value_conv."),
    (r"^pa\.gamma$", "dcfam.pa.gamma"),
    (r"^down4_8\.", "dcfam.down12."),
    (r"^down8_16a\.", "dcfam.down231."),
    (r"^down8_16b\.", "dcfam.down232."),
    (r"^down16_32\.", "dcfam.down34."),
    (r"^(dcfam\.down\d+)\.conv([12])\.", "{0}.convbn{1}."),
    (r"^(dcfam\.down\d+)\.skip\.", "{0}.downsample."),
    (r"^up\.", "up.0."),
    (r"^head\.0\.", "segmentation_head.0."),
    (r"^head\.1\.", "segmentation_head.1.0."),
]
UNETFORMER_KEYS: list[tuple[str, str]] = [
    (r"^pre\.", "pre_conv."),
    (r"^f([23])\.", "p{0}."),
    (r"^frh\.", "p1."),
    (r"\.attn\.qkv\.", ".attn.qkv.0."),
    (r"\.attn\.local([13])\.", ".attn.local_{0}."),
    (r"\.attn\.local_3\.", ".attn.local1."),
    (r"\.attn\.local_1\.", ".attn.local2."),
    (r"\.attn\.bias_table$", ".attn.relative_position_bias_table"),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.2\.", ".mlp.fc2."),
    (r"^(p[123])\.pre\.", "{0}.pre_conv.0."),
    (r"^(p[123])\.post\.", "{0}.post_conv."),
    (r"^p1\.spatial\.", "p1.pa."),
    (r"^p1\.channel\.([13])\.", "p1.ca.{0}.0."),
    (r"^head\.0\.", "segmentation_head.0."),
    (r"^head\.2\.", "segmentation_head.2.0."),
]
KEYS = {"dcswin": DCSWIN_KEYS, "unetformer": UNETFORMER_KEYS}


def reference_key(decoder: str, key: str) -> str:
    """The reference's name for aerialct's state-dict ``key`` of ``decoder``."""
    for pattern, repl in KEYS[decoder]:
        m = re.search(pattern, key)
        if m:
            key = key[: m.start()] + repl.format(*m.groups()) + key[m.end() :]
    return key


def load_reference(root: Path, name: str):
    """Import ``geoseg/models/<name>.py`` of a checkout as a standalone module.

    The CT fork's ``DCSwin.py`` imports its pretrained-weight loader
    (``tools.load_pretrained``, which needs mmcv); the decoder never calls it, so an
    empty stand-in module takes its place when mmcv is absent.
    """
    import types

    path = root / "geoseg" / "models" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(
            f"{path}: not found; give the root of a GeoSeg checkout (it holds geoseg/models/)"
        )
    if "tools.load_pretrained" not in sys.modules and importlib.util.find_spec("mmcv") is None:
        stub = types.ModuleType("tools.load_pretrained")
        stub.load_checkpoint = None  # type: ignore[attr-defined]
        sys.modules["tools"] = types.ModuleType("tools")
        sys.modules["tools.load_pretrained"] = stub
    spec = importlib.util.spec_from_file_location(f"ref_{root.name}_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root))  # the fork's own top-level imports (tools/)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(root))
    return module


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def top_modules(state_keys: list[str], sizes: dict[str, int], key_map: Callable[[str], str]):
    """Parameter counts per aerialct top-level module, with the reference prefixes they map to."""
    rows: dict[str, list] = {}
    for k in state_keys:
        top = k.split(".")[0]
        ref_top = ".".join(key_map(k).split(".")[: 2 if key_map(k).startswith("dcfam.") else 1])
        row = rows.setdefault(top, [0, set()])
        row[0] += sizes[k]
        row[1].add(ref_top)
    return rows


def compare(decoder: str, widths: tuple[int, ...], ref_module, ref_name: str) -> dict:
    """Parameter counts, weight transfer and float64 outputs of one decoder against a reference."""
    import torch
    import torch.nn.functional as F

    from aerialct.models.decoders import build_decoder

    torch.manual_seed(0)
    if decoder == "dcswin":
        ref = ref_module.Decoder(encoder_channels=widths, dropout=0.05, num_classes=NUM_CLASSES)
    else:
        ref = ref_module.Decoder(encoder_channels=widths, decode_channels=DIM, dropout=0.05,
                                 window_size=8, num_classes=NUM_CLASSES)  # fmt: skip
    ours = build_decoder(decoder, list(widths), NUM_CLASSES, DIM)
    randomise(ref)
    ref_state = {k: v for k, v in ref.state_dict().items() if "relative_position_index" not in k}
    our_state = ours.state_dict()
    trainable = {n for n, _ in ours.named_parameters()}
    mapped = {k: reference_key(decoder, k) for k in our_state}
    missing = [k for k, r in mapped.items() if r not in ref_state]
    shape = [
        k for k, r in mapped.items() if r in ref_state and ref_state[r].shape != our_state[k].shape
    ]
    unused = sorted(set(ref_state) - set(mapped.values()))
    ref_params = dict(ref.named_parameters())
    unused_params = sum(ref_params[k].numel() for k in unused if k in ref_params)
    sizes = {k: our_state[k].numel() if k in trainable else 0 for k in our_state}
    per_module = top_modules(list(our_state), sizes, lambda k: mapped[k])
    out = {
        "decoder": decoder, "widths": widths, "reference": ref_name,
        "ours": params(ours), "ref": params(ref), "ref_unused": unused, "ref_unused_params": unused_params,
        "missing": missing, "shape": shape, "per_module": per_module,
    }  # fmt: skip
    if missing or shape:
        return out
    ours.load_state_dict({k: ref_state[mapped[k]] for k in our_state})
    ours, ref = ours.double().eval(), ref.double().eval()
    if hasattr(ref, "aux_head"):
        ref.training = False  # GeoSeg's UNetFormer: the eval path (no auxiliary head)
    g = torch.Generator().manual_seed(1)
    feats = [
        torch.randn(1, c, SIZE // r, SIZE // r, generator=g, dtype=torch.float64)
        for c, r in zip(widths, (4, 8, 16, 32), strict=True)
    ]
    stages = reference_stages(decoder, ref, feats)
    with torch.no_grad():
        logits, maps = ours.forward_features(feats)
        corners = getattr(ours, "align_corners", False)
        full = F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=corners)
    out["stages"] = [
        (tuple(m.shape), tuple(r.shape), float((m - r).abs().max()) if m.shape == r.shape else None)
        for m, r in zip(maps, stages["maps"], strict=True)
    ]
    ref_logits = stages["logits"]
    out["logits"] = (tuple(full.shape), tuple(ref_logits.shape), float((full - ref_logits).abs().max()),
                     float(ref_logits.abs().max()))  # fmt: skip
    return out


def randomise(module) -> None:
    """Every parameter and BatchNorm statistic of ``module`` drawn at random (seeded).

    Initial values hide differences: attention scales (``gamma``) start at 0, fusion
    weights at 1, BatchNorm statistics at 0 and 1. Variances and fusion weights stay
    positive, as training keeps them.
    """
    import torch

    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=g, dtype=t.dtype)
            if name.endswith(("running_var", "weights")):
                r = 0.5 + r.abs()
            t.copy_(r * (0.1 if t.ndim > 1 else 1.0))


def reference_stages(decoder: str, ref, feats) -> dict:
    """The reference's logits and its maps at strides 4, 8, 16, 32 (forward hooks)."""
    import torch

    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, pre: bool = False):
        def hook(_m, args, output=None):
            seen[name] = (args[0] if pre else output).detach()

        return hook

    handles = []
    if decoder == "dcswin":
        handles.append(ref.dcfam.lf4.register_forward_pre_hook(keep("32", pre=True)))
        handles.append(ref.dcfam.lf3.register_forward_pre_hook(keep("16", pre=True)))
        handles.append(ref.up.register_forward_pre_hook(keep("8", pre=True)))
        handles.append(ref.dcfam.conv1.register_forward_hook(keep("conv1")))
        handles.append(ref.dcfam.lf3.register_forward_hook(keep("lf3")))
    else:
        for name, mod in (("32", ref.b4), ("16", ref.b3), ("8", ref.b2), ("4", ref.p1)):
            handles.append(mod.register_forward_hook(keep(name)))
    with torch.no_grad():
        out = ref(*feats) if decoder == "dcswin" else ref(*feats, SIZE, SIZE)
    for h in handles:
        h.remove()
    logits = out[0] if isinstance(out, tuple) else out
    if decoder == "dcswin":
        seen["4"] = seen["lf3"] + seen["conv1"]  # out1 = lf3(out3) + conv1(x1)
    return {"logits": logits, "maps": [seen["4"], seen["8"], seen["16"], seen["32"]]}


def report(results: list[dict], argv: str, sources: dict[str, str]) -> str:
    """The results section (``results/decoders.md``)."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip()  # fmt: skip
    lines = [
        "## Decoders against the reference code (`compare_decoders.py`)",
        "",
        f"{dt.date.today().isoformat()}, {platform.machine()}, torch {torch.__version__}, aerialct "
        f"commit {commit or 'unknown'}. `{argv}`. References: "
        + "; ".join(f"{k} at {v}" for k, v in sources.items())
        + ".",
        "",
        f"Float64, eval mode, {NUM_CLASSES} classes, decoder width {DIM} (UNetFormer). Every "
        "parameter and BatchNorm statistic of the reference drawn at random (so that no "
        "zero-initialised attention scale hides a branch), transferred key by key; random "
        f"encoder maps of a {SIZE} px input. Max |diff| of the logits is at full size (after "
        "each one's upsampling).",
        "",
        "| decoder | encoder widths | reference | params aerialct | params reference | "
        "unused reference tensors | stage maps (4, 8, 16, 32) max abs diff | logits max abs diff (max abs) |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in results:
        unused = ", ".join(sorted({k.split(".")[0] for k in r["ref_unused"]})) or "none"
        if r["ref_unused_params"]:
            unused += f" ({r['ref_unused_params']:,} params)"
        if r["missing"] or r["shape"]:
            stages = logits = (
                f"no transfer: {len(r['missing'])} keys missing, {len(r['shape'])} shapes differ"
            )
        else:
            stages = ", ".join("-" if d is None else f"{d:.1e}" for _, _, d in r["stages"])
            logits = f"{r['logits'][2]:.1e} ({r['logits'][3]:.2f})"
        lines.append(
            f"| {r['decoder']} | {'-'.join(map(str, r['widths']))} | {r['reference']} | "
            f"{r['ours']:,} | {r['ref']:,} | {unused} | {stages} | {logits} |"
        )
    lines += ["", "Parameters per module (aerialct module: count -> reference module):", ""]
    for r in results:
        if r["reference"] != results[0]["reference"]:
            continue
        mods = "; ".join(
            f"`{m}` {n:,} -> `{'`, `'.join(sorted(refs))}`"
            for m, (n, refs) in r["per_module"].items()
        )
        lines.append(f"- {r['decoder']} ({'-'.join(map(str, r['widths']))}): {mods}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--geoseg", required=True, type=Path, help="root of a GeoSeg checkout")
    ap.add_argument("--ct", type=Path, help="root of a ContrastiveGeoSeg checkout (the CT fork)")
    ap.add_argument("--name", default="decoders", help="results/<name>.md")
    args = ap.parse_args()
    refs = {"GeoSeg": args.geoseg, **({"CT fork": args.ct} if args.ct else {})}
    results = []
    for label, root in refs.items():
        modules = {
            "dcswin": load_reference(root, "DCSwin"),
            "unetformer": load_reference(root, "UNetFormer"),
        }
        for decoder, module in modules.items():
            for backbone, widths in WIDTHS.items():
                if decoder == "unetformer" and backbone != "swin_ct":
                    continue  # the paper pairs PoolFormer with DCSwin's decoder only
                results.append(compare(decoder, widths, module, label))
                print(results[-1], file=sys.stderr, flush=True)
    sources = {k: source_line(v) for k, v in refs.items()}
    argv = "python benchmarks/compare_decoders.py --geoseg GEOSEG" + (
        " --ct CT_FORK" if args.ct else ""
    )
    text = report(results, argv, sources)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.name}.md").write_text(text)
    print(text)


def source_line(root: Path) -> str:
    """The checkout's commit when it is a git work tree, else its folder name."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root
    )
    return f"commit {out.stdout.strip()}" if out.returncode == 0 else f"a copy ({root.name})"


if __name__ == "__main__":
    main()
