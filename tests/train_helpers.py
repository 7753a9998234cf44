"""Tiny chips folders for the training tests, written by code per the chips contract.

``write_chips`` lays out ``dataset.json``, ``index.gpkg`` and the chip GeoTIFFs the
way ``aerialct tile`` does (CONTRACTS.md), from arrays given by the test, so the
dataset/loop tests can also build broken folders (mixed sizes, band counts).
``synth_chips`` cuts a synthetic city (aerialct.data.synth) into such chips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aerialct.classes import POTSDAM, ClassTable


def write_chips(
    root: Path,
    chips: list[tuple[str, np.ndarray, np.ndarray | None]],
    classes: ClassTable = POTSDAM,
    gsd: float = 0.5,
) -> Path:
    """chips: (split, image (C, H, W) uint8, mask (H, W) uint8 or None) -> a chips folder."""
    import geopandas as gpd
    import rasterio
    from affine import Affine
    from shapely.geometry import box

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    counts: dict[str, int] = {}
    for i, (split, img, msk) in enumerate(chips):
        c, h, w = img.shape
        r0, c0 = 0, i * w  # chips side by side along one row of a virtual scene
        name = f"scene_r{r0}_c{c0}"
        tr = Affine(gsd, 0.0, 368000.0 + c0 * gsd, 0.0, -gsd, 5808000.0)
        img_rel = Path(split) / "images" / f"{name}.tif"
        (root / img_rel).parent.mkdir(parents=True, exist_ok=True)
        prof = dict(driver="GTiff", width=w, height=h, crs="EPSG:32633", transform=tr)
        with rasterio.open(root / img_rel, "w", count=c, dtype="uint8", **prof) as ds:
            ds.write(img)
        mask_rel = None
        if msk is not None:
            mask_rel = Path(split) / "masks" / f"{name}.tif"
            (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                root / mask_rel, "w", count=1, dtype="uint8", nodata=255, **prof
            ) as ds:
                ds.write(msk[None].astype(np.uint8))
        row = {
            "chip_id": name,
            "image": img_rel.as_posix(),
            "mask": None if mask_rel is None else mask_rel.as_posix(),
            "scene": "scene",
            "split": split,
            "row_off": r0,
            "col_off": c0,
            "width": w,
            "height": h,
            "geometry": box(tr.c, tr.f - h * gsd, tr.c + w * gsd, tr.f),
        }
        for cl in classes:
            row[f"px_{cl.name}"] = 0 if msk is None else int((msk == cl.id).sum())
        row["px_ignore"] = 0 if msk is None else int((msk == 255).sum())
        rows.append(row)
        counts[split] = counts.get(split, 0) + 1
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32633").to_file(
        root / "index.gpkg", layer="chips", driver="GPKG"
    )
    c, h, w = chips[0][1].shape
    meta = {
        "format": "aerialct-chips",
        "version": 1,
        "classes": classes.to_list(),
        "ignore_index": 255,
        "chip_size": h,
        "bands": c,
        "dtype": "uint8",
        "gsd": gsd,
        "crs": "EPSG:32633",
        "source": "geotiff",
        "splits": counts,
        "label_mode": "raster",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def synth_chips(
    root: Path, size: int = 64, n_side: int = 4, seed: int = 0, gsd: float = 0.5, val_every: int = 4
) -> Path:
    """A synthetic city of (size*n_side)^2 px cut into chips; every val_every-th chip is val."""
    from aerialct.data.synth import generate_scene

    scene = generate_scene(size * n_side, seed=seed, gsd=gsd)
    chips = []
    i = 0
    for r in range(n_side):
        for c in range(n_side):
            sl = (slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size))
            split = "val" if i % val_every == val_every - 1 else "train"
            chips.append((split, scene.image[:, sl[0], sl[1]], scene.labels[sl]))
            i += 1
    return write_chips(root, chips, gsd=gsd)


def tiled_synth(
    root: Path, size: int = 256, chip: int = 64, gsd: float = 0.5, seed: int = 0
) -> Path:
    """The real pipeline: a synthetic city (synth_scene) cut by tile_scenes, a quarter to val."""
    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    root.mkdir(parents=True, exist_ok=True)
    image, labels = root / "scene.tif", root / "labels.tif"
    synth_scene(image, labels, size=size, gsd=gsd, seed=seed)
    out = root / "chips"
    tile_scenes([image], out, labels=[labels], size=chip, val_fraction=0.25, seed=seed, workers=1)
    return out


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained tiny-cpu checkpoint (Potsdam classes, 3 bands, 64 px chips at 0.25 m):
    enough for the plumbing of workflows that predict."""
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.models import build_model

    torch.manual_seed(seed)
    cfg = load_config(resolve_config_path("tiny-cpu"))
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    ckpt = make_checkpoint(
        config=cfg,
        classes=POTSDAM,
        mean=(120.0, 120.0, 120.0),
        std=(50.0, 50.0, 50.0),
        in_chans=3,
        chip_size=64,
        model_state=model.state_dict(),
        gsd=0.25,
    )
    save_checkpoint(path, ckpt)
    return path
