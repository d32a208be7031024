"""make region-demo: fine-tune the competition model on a region of one's own, judged on
held-out ground of that region, before and after, in one command.

1. The 100 Massachusetts tiles of ``../shared/data`` (1 m aerial photographs, 400 x 400) are
   laid out as four 1 m GeoTIFF scenes of 5 x 5 tiles (2,000 m square) in the Massachusetts
   State Plane (EPSG:26986, metres); their masks likewise, turned into centre lines with a
   width by ``roadseg vectorize``, one GeoPackage per scene: what a GIS user brings.
2. ``roadseg fit --config configs/region-demo.yaml`` fine-tunes the ``configs/cpu.yaml``
   model on the ground of about 80 tiles (400 m blocks; a seeded 20% held out).
3. ``roadseg evaluate --ckpt <fine-tuned> --baseline <cpu model>`` scores both on the
   held-out blocks, with bootstrap intervals, into ``runs/region-demo/scores.json``.

Each step is skipped when its output is there and complete (a rerun resumes training from
its last checkpoint); the tiles are never copied into the project (``data/`` is ignored).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

GRID, TILE, RES, CRS = 5, 400, 1.0, "EPSG:26986"  # 5 x 5 tiles of 400 m per scene
ORIGIN = (200_000.0, 900_000.0)  # west, north of the first scene; scenes 3 km apart


def number(path: Path) -> int:
    return int(re.findall(r"\d+", path.stem)[-1])


def layout(tiles: Path, out: Path) -> Path:
    """Scenes, masks and centre lines in ``out``; returns the scene list (YAML)."""
    images = sorted((tiles / "images").glob("*.png"), key=number)
    if len(images) < GRID * GRID:
        sys.exit(f"region-demo: {tiles}: {len(images)} tiles, at least {GRID * GRID} needed")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(len(images) // (GRID * GRID)):
        scene, mask, lines = out / f"scene_{k}.tif", out / f"mask_{k}.tif", out / f"roads_{k}.gpkg"
        if not lines.exists():
            rgb = np.zeros((3, GRID * TILE, GRID * TILE), np.uint8)
            grey = np.zeros((1, GRID * TILE, GRID * TILE), np.uint8)
            for i, path in enumerate(images[k * GRID * GRID : (k + 1) * GRID * GRID]):
                r, c = divmod(i, GRID)
                cut = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
                with rasterio.open(path) as src:
                    rgb[:, cut[0], cut[1]] = src.read([1, 2, 3])
                with rasterio.open(tiles / "groundtruth" / path.name) as src:
                    grey[:, cut[0], cut[1]] = np.where(src.read(1) > 127, 255, 0)
            west = ORIGIN[0] + k * (GRID * TILE * RES + 1000)
            profile = {"driver": "GTiff", "crs": CRS, "transform": from_origin(west, ORIGIN[1], RES, RES),
                       "width": GRID * TILE, "height": GRID * TILE, "dtype": "uint8",
                       "tiled": True, "compress": "deflate"}  # fmt: skip
            with rasterio.open(scene, "w", count=3, **profile) as dst:
                dst.write(rgb)
            with rasterio.open(mask, "w", count=1, **profile) as dst:
                dst.write(grey)
            run(["vectorize", str(mask), "--out", str(lines), "--quiet"])
        entries.append(f"- image: {scene.name}\n  labels: {lines.name}\n  width_column: width\n")
    scenes = out / "scenes.yaml"
    scenes.write_text("".join(entries))
    return scenes


def run(args: list[str]) -> None:
    print("$ roadseg " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "roadseg", *args])
    if done.returncode:
        sys.exit(done.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", default="../shared/data/massachusetts-400", type=Path)
    parser.add_argument("--out", default="data/region-demo", type=Path, help="scenes and lines")
    parser.add_argument("--base", default="runs/cpu/checkpoints/best.ckpt",
                        help="the model to fine-tune (make train CONFIG=configs/cpu.yaml)")  # fmt: skip
    parser.add_argument("--config", default="configs/region-demo.yaml")
    parser.add_argument("--run", default="runs/region-demo", type=Path)
    args = parser.parse_args()
    if not Path(args.base).is_file():
        sys.exit(
            f"region-demo: {args.base}: no model to fine-tune; make train CONFIG=configs/cpu.yaml"
        )
    scenes = layout(args.tiles, args.out)
    best, last = args.run / "checkpoints" / "best.ckpt", args.run / "checkpoints" / "last.ckpt"
    timing = args.run / "fine-tune-seconds.txt"
    if not timing.exists():
        start = time.perf_counter()
        run(["fit", "--config", args.config, "--model.init_from", str(args.base),
             "--data.scenes", str(scenes), "--trainer.default_root_dir", str(args.run),
             *(["--ckpt_path", "last"] if last.exists() else [])])  # fmt: skip
        timing.write_text(f"{time.perf_counter() - start:.0f}\n")
    scores = args.run / "scores.json"
    run(["evaluate", "--ckpt", str(best), "--baseline", str(args.base), "--out", str(scores),
         "--quiet"])  # fmt: skip
    result = json.loads(scores.read_text())
    print(f"fine-tuning took {timing.read_text().strip()} s (this run, or the run it resumed); "
          f"patch F1 {result['before']['patch_f1']:.4f} -> {result['after']['patch_f1']:.4f} "
          f"on {result['heldout']['blocks']} held-out blocks; {scores}")  # fmt: skip


if __name__ == "__main__":
    main()
