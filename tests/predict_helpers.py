"""Oracle bundles and synthetic scenes for the predict tests.

The oracle model's class at a pixel is a known function of that pixel's raw
values, so the exact expected class raster is computable in numpy: any window
placed at the wrong offset, any seam or unweighted hole changes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rasterio
import torch
from affine import Affine
from torch import nn

from aerialct.classes import POTSDAM, ClassTable

K = len(POTSDAM)
TRANSFORM = Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5807000.0)
CRS = "EPSG:32633"


def oracle_classes(img: np.ndarray) -> np.ndarray:
    """Expected class ids (H, W) of raw pixels (C, H, W): (b0 + 2 b1 + 3 b2) mod K."""
    v = img[0].astype(np.int64) + 2 * img[1].astype(np.int64) + 3 * img[2].astype(np.int64)
    return (v % K).astype(np.uint8)


class Oracle(nn.Module):
    """One-hot logits (scaled by ``sharpness``) of :func:`oracle_classes`; checks the window size."""

    def __init__(self, chip_size: int, sharpness: float = 20.0, fail_after: int | None = None):
        super().__init__()
        self.chip_size = chip_size
        self.sharpness = sharpness
        self.fail_after = fail_after
        self.calls = 0
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (self.chip_size, self.chip_size), x.shape
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("forced failure in the middle of a scene")
        raw = x.round().long()  # the test bundle normalises with mean 0, std 1
        v = raw[:, 0] + 2 * raw[:, 1] + 3 * raw[:, 2]
        onehot = nn.functional.one_hot(v % K, K).permute(0, 3, 1, 2).float()
        return onehot * self.sharpness + self.anchor


@dataclass
class OracleBundle:
    """Duck-typed InferenceBundle around an oracle model."""

    model: nn.Module
    classes: ClassTable = POTSDAM
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    in_chans: int = 3
    chip_size: int = 32
    gsd: float | None = 0.05
    _unused: dict = field(default_factory=dict, repr=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std


def oracle_bundle(
    chip_size: int = 32, sharpness: float = 20.0, fail_after: int | None = None, **kw
) -> OracleBundle:
    return OracleBundle(Oracle(chip_size, sharpness, fail_after), chip_size=chip_size, **kw)


def random_image(h: int, w: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 250, (bands, h, w), dtype=np.uint8)


def write_scene(
    path,
    img: np.ndarray,
    *,
    crs: str | None = CRS,
    transform: Affine = TRANSFORM,
    nodata: float | None = None,
    alpha: np.ndarray | None = None,
    **creation: str,
) -> None:
    count = img.shape[0] + (1 if alpha is not None else 0)
    profile = {
        "driver": "GTiff",
        "width": img.shape[2],
        "height": img.shape[1],
        "count": count,
        "dtype": img.dtype.name,
        "nodata": nodata,
        **creation,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(img, indexes=list(range(1, img.shape[0] + 1)))
        if alpha is not None:
            from rasterio.enums import ColorInterp

            ds.write(alpha, count)
            ds.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]


# --- a tiny real model and a cut synthetic city (catalog tests) ----------------


def tiny_model(chip_size: int = 32, seed: int = 0) -> nn.Module:
    """A random-init tiny CNN + FPN, the smallest real segmentation model aerialct builds."""
    from aerialct.config import config_from_dict
    from aerialct.models import build_model

    torch.manual_seed(seed)
    cfg = config_from_dict(
        {
            "model": {
                "backbone": "tiny_cnn",
                "decoder": "fpn",
                "decoder_channels": 16,
                "img_size": chip_size,
            }
        }
    )
    return build_model(cfg.model, num_classes=K, in_chans=3).eval()


TINY_MEAN, TINY_STD = (120.0, 110.0, 100.0), (50.0, 45.0, 40.0)


def tiny_bundle(chip_size: int = 32, seed: int = 0) -> OracleBundle:
    """The tiny CNN in a bundle, normalised like a trained checkpoint."""
    return OracleBundle(
        tiny_model(chip_size, seed), chip_size=chip_size, mean=TINY_MEAN, std=TINY_STD, gsd=0.5
    )


def save_tiny_checkpoint(path, chip_size: int = 32, seed: int = 0):
    """A checkpoint file of :func:`tiny_model` (what `aerialct predict` loads)."""
    from aerialct.config import config_from_dict
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint

    cfg = config_from_dict(
        {"model": {"backbone": "tiny_cnn", "decoder": "fpn", "decoder_channels": 16,
                   "img_size": chip_size}}
    )  # fmt: skip
    save_checkpoint(
        path,
        make_checkpoint(
            config=cfg,
            classes=POTSDAM,
            mean=TINY_MEAN,
            std=TINY_STD,
            in_chans=3,
            chip_size=chip_size,
            model_state=tiny_model(chip_size, seed).state_dict(),
            gsd=0.5,
        ),
    )
    return path


def city(size: tuple[int, int] = (288, 288), seed: int = 3):
    """A synthetic city at 0.5 m: its RGB image (3, H, W) and transform."""
    from aerialct.data.synth.render import generate_scene

    scene = generate_scene(size, seed, gsd=0.5)
    return scene.image, scene.transform


def cut_tiles(folder, image: np.ndarray, transform: Affine, tile: int = 96, skip=(), **kw):
    """Cut ``image`` into exactly adjacent tiles ``t_<row>_<col>.tif`` (as gdal_translate
    -srcwin would) in ``folder``; ``skip`` leaves (row, col) tiles out. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    _, h, w = image.shape
    for r, y in enumerate(range(0, h, tile)):
        for c, x in enumerate(range(0, w, tile)):
            if (r, c) in skip:
                continue
            p = folder / f"t_{r}_{c}.tif"
            part = np.ascontiguousarray(image[:, y : y + tile, x : x + tile])
            write_scene(p, part, transform=transform @ Affine.translation(x, y), **kw)
            paths.append(p)
    return paths
