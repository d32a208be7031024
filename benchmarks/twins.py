"""The twin table (#32): every variant of roadseg.twins predicted with a real checkpoint,
its roads IoU with the plain twin, its line-length ratio, and what roadseg printed.

    python benchmarks/twins.py --ckpt runs/cpu/checkpoints/best.ckpt [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from roadseg.options import PredictOptions
from roadseg.scenes import predict_scene_run
from roadseg.twins import HOLE, VARIANTS, around_hole, compare, masked, plain_twin


def said(text: str) -> str:
    """The lines about reading the scene, joined: how pixels and resolution were taken."""
    keep = [
        ln.strip() for ln in text.splitlines() if ln.startswith(("pixels:", "resolution:", "band"))
    ]
    return "; ".join(keep).replace("|", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--tiles", type=int, default=4, help="real tiles in the twin (2 per row)")
    parser.add_argument("--tta", action="store_true", help="predict every scene with 8-view TTA")
    args = parser.parse_args()
    images = sorted((Path(args.data) / "cil-2022" / "training" / "images").glob("*.png"))
    options = PredictOptions(ckpt=(args.ckpt,), quiet=True, tta=args.tta)
    threshold = options.decision(args.ckpt)[0].pixel
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        twin = plain_twin(images[: args.tiles], folder / "twin.tif")
        twin_pred = folder / "twin-pred.tif"
        with contextlib.redirect_stdout(io.StringIO()):
            predict_scene_run(options, twin, twin_pred, output="prob8")
        print(f"twin: {args.tiles} cil-2022 tiles, EPSG:32619 0.5 m; pixel threshold {threshold}"
              f"; TTA {'on (8 views)' if args.tta else 'off'}")  # fmt: skip
        print("| variant | roads IoU | least | length ratio | allowed | roadseg printed |")
        print("|---|---:|---:|---:|---:|---|")
        for k, v in enumerate(VARIANTS):
            scene = v.build(twin, folder / f"v{k}.tif")
            pred = folder / f"v{k}-pred.tif"
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                predict_scene_run(options, scene, pred, output="prob8", **v.options)
            holes = "hole" in v.name
            ref = masked(twin_pred, HOLE, folder / f"t{k}.tif") if holes else twin_pred
            m = compare(ref, pred, twin, threshold, exclude=around_hole() if holes else None)
            ok = "" if m.iou >= v.iou and abs(m.ratio - 1) <= v.length else " **below**"
            print(f"| {v.name} | {m.iou:.3f}{ok} | {v.iou} | {m.ratio:.3f} | ±{v.length:.0%} | "
                  f"{said(out.getvalue())} |", flush=True)  # fmt: skip
        controls(twin, twin_pred, options, threshold, folder)
    sys.exit(0)


def controls(twin: Path, twin_pred: Path, options, threshold: float, folder: Path) -> None:
    """What bounds the warped rows: the network's stability under a small turn in pixel
    space (no CRS involved), and the twin's own roads warped into each CRS (ground units
    alone)."""
    import numpy as np
    import rasterio
    from scipy import ndimage

    from roadseg.twins import reprojected, road_length, warped_prediction, write

    print("\n| control | roads IoU | length ratio |\n|---|---:|---:|")
    with rasterio.open(twin) as src, rasterio.open(twin_pred) as pred:
        image, geo = src.read(), {"crs": src.crs, "transform": src.transform}
        base = pred.read(1) * pred.scales[0]
    inner = np.zeros(base.shape, bool)
    inner[48:-48, 48:-48] = True
    for angle in (0.5, 1.4):
        turned = np.stack([ndimage.rotate(b.astype(np.float32), angle, reshape=False, order=3,
                                          mode="reflect") for b in image]).clip(0, 255)  # fmt: skip
        scene = write(folder / "turned.tif", turned.astype(np.uint8), **geo)
        with contextlib.redirect_stdout(io.StringIO()):
            predict_scene_run(options, scene, folder / "turned-pred.tif", output="prob8")
        with rasterio.open(folder / "turned-pred.tif") as src:
            back = ndimage.rotate(src.read(1) * src.scales[0], -angle, reshape=False, order=1)
        a, b = (base > threshold) & inner, (back > threshold) & inner
        print(f"| the twin turned {angle} deg in pixel space (no CRS), prediction turned back "
              f"| {(a & b).sum() / (a | b).sum():.3f} | |")  # fmt: skip
    length = road_length(twin_pred, threshold)
    for crs in ("EPSG:3857", "EPSG:4326", "EPSG:2249"):
        like = reprojected(crs)(twin, folder / "like.tif")
        warped = warped_prediction(twin_pred, like, folder / "warped.tif")
        print(
            f"| the twin's own prediction warped into {crs} (ground units alone) | | "
            f"{road_length(warped, threshold) / length:.4f} |"
        )


if __name__ == "__main__":
    main()
