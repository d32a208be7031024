"""One scene in several encodings, predicted by one model: do the masks agree?

    python benchmarks/encodings.py MOSAIC.tif --ckpt runs/cpu/checkpoints/best.ckpt

writes the scene (8-bit RGB, e.g. a map mosaic of ``roadseg maps``) as GeoTIFFs at 0.5 m in
EPSG:32632: 8-bit RGB, 12-bit values in uint16, float reflectance (0..0.3), BGR, and
12-bit with a colour cast (bands of other gains and offsets); predicts each with
``roadseg predict --output mask`` (BGR with ``--bands 3,2,1``) and prints what roadseg
said it did and the IoU of each mask with the 8-bit one, over valid pixels.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def versions(a: np.ndarray) -> dict[str, tuple[np.ndarray, list[str]]]:
    rng = np.random.default_rng(0)
    gain = np.array([13.1, 14.2, 15.0])[:, None, None]
    offset = np.array([90, 120, 150])[:, None, None]
    return {
        "8-bit RGB": (a, []),
        "12-bit in uint16 (x 4095/255, finer detail as noise)":
            (np.clip(a * (4095 / 255) + rng.uniform(0, 16, a.shape), 0, 4095).astype(np.uint16), []),
        "float reflectance 0..0.3": ((a.astype(np.float32) / 255 * 0.3).astype(np.float32), []),
        "BGR, --bands 3,2,1": (a[::-1].copy(), ["--bands", "3,2,1"]),
        "12-bit with a colour cast (gains 13.1/14.2/15.0, offsets 90/120/150)":
            (np.clip(a * gain + offset + rng.uniform(0, gain, a.shape), 0, 4095).astype(np.uint16), []),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scene", help="an 8-bit RGB raster (its mask, if any, is kept)")
    p.add_argument("--ckpt", default="runs/cpu/checkpoints/best.ckpt")
    p.add_argument("--work", default="runs/encodings")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with rasterio.open(args.scene) as src:
        a, valid = src.read()[:3], src.dataset_mask()
    masks, said = {}, {}
    for k, (name, (data, flags)) in enumerate(versions(a).items()):
        path, out = work / f"scene{k}.tif", work / f"mask{k}.tif"
        profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 3,
                   "dtype": data.dtype, "crs": "EPSG:32632", "tiled": True, "compress": "deflate",
                   "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.write_mask(valid)
        run = subprocess.run([sys.executable, "-m", "roadseg", "predict", str(path), "--ckpt", args.ckpt,
                              "--out", str(out), "--output", "mask", "--quiet", *flags],
                             capture_output=True, text=True)  # fmt: skip
        if run.returncode:
            sys.exit(run.stderr)
        said[name] = [
            line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("pixels:")
        ]
        with rasterio.open(out) as m:
            masks[name] = m.read(1)
        print(f"{name}: {said[name][0]}", flush=True)
    base = masks["8-bit RGB"]
    print("\n| version | IoU with the 8-bit mask |\n|---|---:|")
    for name, mask in masks.items():
        ok = (base != 255) & (mask != 255)
        a_, b_ = (base == 1) & ok, (mask == 1) & ok
        same = " (identical)" if np.array_equal(base, mask) else ""
        print(f"| {name} | {(a_ & b_).sum() / max((a_ | b_).sum(), 1):.4f}{same} |")


if __name__ == "__main__":
    main()
