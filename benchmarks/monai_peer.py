"""The peer of ``bench_predict.py --monai``: MONAI's ``sliding_window_inference`` on a whole scene.

    python benchmarks/monai_peer.py CHECKPOINT SCENE OUT.tif [--batch 8] [--overlap 0.25]

What a segmentation script built on MONAI does: read the whole scene, normalise it as the
model was trained (the checkpoint's statistics), run ``sliding_window_inference`` with
windows of the model's chip size, Gaussian blending and the same batch and overlap as
``aerialct predict``, take the argmax, write a GeoTIFF with the scene's grid. MONAI is a
benchmark dependency only (``pip install monai``), not one of aerialct's.
"""

from __future__ import annotations

import argparse

import numpy as np
import rasterio
import torch
from monai.inferers import sliding_window_inference

from aerialct.predict.bundle import load_inference_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("scene")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--overlap", type=float, default=0.25)
    args = ap.parse_args()
    bundle = load_inference_model(args.checkpoint, device="cpu")
    with rasterio.open(args.scene) as ds:
        image = ds.read()
        profile = ds.profile
    x = bundle.normalize(torch.from_numpy(image).float()[None])
    size = bundle.chip_size
    with torch.inference_mode():
        logits = sliding_window_inference(
            x, roi_size=(size, size), sw_batch_size=args.batch, predictor=bundle.model,
            overlap=args.overlap, mode="gaussian",
        )  # fmt: skip
    classes = logits.argmax(1)[0].numpy().astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True,
                   blockxsize=512, blockysize=512, photometric="MINISBLACK")  # fmt: skip
    profile.pop("interleave", None)
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(classes, 1)


if __name__ == "__main__":
    main()
