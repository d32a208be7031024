"""A scene in Web Mercator with lines in WGS84 trains and validates as its projected twin.

The first scene of ``make region-demo`` (1 m, EPSG:26986, 2 km, with its road lines in a
GeoPackage) and its twin: the same ground warped to Web Mercator (EPSG:3857, where a 1 m
pixel is 1.35 "metres" of the projection at 42 deg N) with the same lines written as a
GeoJSON in longitude/latitude. Both fine-tune the ``configs/cpu.yaml`` model the same short
way, holding out the same ground (a polygon file of five of the UTM scene's tiles, in
WGS84: ``data.holdout``), and are scored on their held-out blocks. Prints each epoch's
validation loss and patch F1 side by side, and the held-out scores with bootstrap
intervals; writes ``benchmarks/out/twin-training/twins.json``.

    python benchmarks/twin_training.py [--epochs 3]   (after make region-demo)
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio


def run(args: list[str]) -> None:
    print("$ roadseg " + " ".join(args), flush=True)
    if subprocess.run([sys.executable, "-m", "roadseg", *args]).returncode:
        sys.exit(1)


def twin(demo: Path, out: Path) -> None:
    """The Web Mercator scene, the lines in WGS84 and the holdout polygons, in ``out``."""
    import geopandas as gpd
    from rasterio.warp import calculate_default_transform, reproject
    from shapely import box

    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(demo / "scene_0.tif") as src:
        transform, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width,
                                                      src.height, *src.bounds)  # fmt: skip
        pixels = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), pixels, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs="EPSG:3857")  # fmt: skip
        profile = {"driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8",
                   "crs": "EPSG:3857", "transform": transform, "nodata": 0, "tiled": True,
                   "compress": "deflate"}  # fmt: skip
        with rasterio.open(out / "mercator.tif", "w", **profile) as dst:
            dst.write(pixels)
        west, north = src.bounds.left, src.bounds.top
        held = [box(west + c * 400 + 20, north - (r + 1) * 400 + 20, west + (c + 1) * 400 - 20,
                    north - r * 400 - 20) for r, c in ((0, 1), (1, 3), (2, 0), (3, 2), (4, 4))]  # fmt: skip
        gpd.GeoDataFrame(geometry=held, crs=src.crs).to_crs("EPSG:4326").to_file(
            out / "holdout.geojson"
        )
    gpd.read_file(demo / "roads_0.gpkg").to_crs("EPSG:4326").to_file(out / "roads.geojson")
    (out / "utm.yaml").write_text(f"- image: {(demo / 'scene_0.tif').resolve()}\n"
                                  f"  labels: {(demo / 'roads_0.gpkg').resolve()}\n"
                                  "  width_column: width\n")  # fmt: skip
    (out / "mercator.yaml").write_text("- image: mercator.tif\n  labels: roads.geojson\n"
                                       "  width_column: width\n")  # fmt: skip


def curve(run_dir: Path) -> list[tuple[float, float]]:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["val_loss"]), float(r["val_patch_f1"])) for r in rows if r.get("val_loss")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("data/region-demo"))
    parser.add_argument("--base", default="runs/cpu/checkpoints/best.ckpt")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/twin-training"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not (args.demo / "roads_0.gpkg").exists():
        sys.exit(f"{args.demo}: no region-demo scenes; run make region-demo first")
    twin(args.demo, args.out)
    result = {}
    for name in ("utm", "mercator"):
        run_dir = args.out / f"run-{name}"
        if not (run_dir / "checkpoints" / "best.ckpt").exists():
            run(["fit", "--config", "configs/region-demo.yaml", "--model.init_from", args.base,
                 "--data.scenes", str(args.out / f"{name}.yaml"), "--data.holdout",
                 str(args.out / "holdout.geojson"), "--data.samples_per_epoch", "160",
                 "--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir",
                 str(run_dir), "--trainer.enable_progress_bar", "false"])  # fmt: skip
        scores = args.out / f"{name}-scores.json"
        run(["evaluate", "--ckpt", str(run_dir / "checkpoints" / "best.ckpt"), "--out",
             str(scores), "--quiet"])  # fmt: skip
        result[name] = {"curve": curve(run_dir), **json.loads(scores.read_text())}
    print("epoch  val loss (utm / mercator)  val patch F1 (utm / mercator)")
    for k, (a, b) in enumerate(
        zip(result["utm"]["curve"], result["mercator"]["curve"], strict=False)
    ):
        print(f"{k:>5}  {a[0]:.4f} / {b[0]:.4f}          {a[1]:.4f} / {b[1]:.4f}")
    for name in ("utm", "mercator"):
        m = result[name]["model"]
        print(f"{name:>8}: held-out patch F1 {m['patch_f1']:.4f} {m['interval']['patch_f1']}, "
              f"pixel F1 {m['pixel_f1']:.4f} ({result[name]['heldout']['blocks']} blocks)")  # fmt: skip
    (args.out / "twins.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
