"""Vector labels agree with masks: the same ground trained from road lines and from masks.

The cil-2022 map mosaics (``roadseg maps``: each map's pixels and its known labels, 255
road, 0 background, 128 unlabelled) are given a georeference (0.5 m, UTM 32N; the
competition publishes none) and trained as scenes twice, with the same blocks (one
block per 200 m tile), the same held-out blocks and the same windows and budget:

- **masks**: the label mosaic as a mask raster (128 is its nodata: ignored);
- **lines**: the label mosaic turned into centre lines with a width by ``roadseg
  vectorize``, the labelled tiles as the AOI (outside it: ignored, not background).

Both models are then scored on the held-out blocks against the masks (``roadseg evaluate
--ckpt <masks model> --baseline <lines model>``): patch F1 with bootstrap intervals and
the paired difference. Writes ``benchmarks/out/vector-vs-mask/scores.json``.

    python benchmarks/vector_vs_mask.py [--maps data/maps] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

RES, CRS = 0.5, "EPSG:32632"


def run(args: list[str]) -> None:
    print("$ roadseg " + " ".join(args), flush=True)
    if subprocess.run([sys.executable, "-m", "roadseg", *args]).returncode:
        sys.exit(1)


def georeferenced(src_path: Path, out: Path, k: int) -> Path:
    """A copy of ``src_path`` with a georeference (maps 10 km apart)."""
    if out.exists():
        return out
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "driver": "GTiff", "crs": CRS, "tiled": True,
                   "compress": "deflate",
                   "transform": from_origin(400_000 + k * 10_000, 5_200_000, RES, RES)}  # fmt: skip
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read())
    return out


def aoi(labels: Path, out: Path) -> Path:
    """The labelled ground of a label mosaic (not nodata) as polygons."""
    if out.exists():
        return out
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(labels) as src:
        valid = (src.read_masks(1) > 0).astype(np.uint8)
        polygons = [shape(g) for g, v in shapes(valid, transform=src.transform) if v == 1]
    gpd.GeoDataFrame(geometry=polygons, crs=CRS).to_file(out, engine="pyogrio")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=Path, default=Path("data/maps"),
                        help="roadseg maps data/cil-2022 --out data/maps")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/vector-vs-mask"))
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    if not (args.maps / "map_0_labels.tif").exists():
        run(["maps", "data/cil-2022", "--out", str(args.maps)])
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    masks, lines = [], []
    for k in range(2):
        image = georeferenced(args.maps / f"map_{k}_image.tif", out / f"map_{k}.tif", k)
        labels = georeferenced(args.maps / f"map_{k}_labels.tif", out / f"labels_{k}.tif", k)
        roads = out / f"roads_{k}.gpkg"
        if not roads.exists():
            run(["vectorize", str(labels), "--out", str(roads), "--quiet"])
        area = aoi(labels, out / f"aoi_{k}.gpkg")
        masks.append(f"- image: {image.name}\n  labels: {labels.name}\n")
        lines.append(f"- image: {image.name}\n  labels: {roads.name}\n  width_column: width\n"
                     f"  aoi: {area.name}\n")  # fmt: skip
    (out / "masks.yaml").write_text("".join(masks))
    (out / "lines.yaml").write_text("".join(lines))
    for name in ("masks", "lines"):
        run_dir = out / f"run-{name}"
        if not (run_dir / "checkpoints" / "best.ckpt").exists():
            run(["fit", "--config", "configs/cpu.yaml", "--data.scenes", str(out / f"{name}.yaml"),
                 "--data.block", "200", "--data.context", "false", "--data.samples_per_epoch",
                 "320", "--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir",
                 str(run_dir), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    scores = out / "scores.json"
    run(["evaluate", "--ckpt", str(out / "run-masks" / "checkpoints" / "best.ckpt"),
         "--baseline", str(out / "run-lines" / "checkpoints" / "best.ckpt"), "--out",
         str(scores), "--quiet"])  # fmt: skip
    result = json.loads(scores.read_text())
    m, v = result["after"], result["before"]
    d = result["difference"]["patch_f1"]
    print(f"held-out patch F1 (against the masks): trained on masks {m['patch_f1']:.4f} "
          f"{m['interval']['patch_f1']}, on lines {v['patch_f1']:.4f} {v['interval']['patch_f1']}; "
          f"masks - lines {d['after_minus_before']:+.4f} (paired 95%: {d['interval']})")  # fmt: skip


if __name__ == "__main__":
    main()
