"""Peak memory of training on scenes (data.scenes) whatever the scenes' size.

Writes two 0.5 m UTM scenes with textured ground and a road grid, 1,000 px and 16,000 px
square (0.5 km and 8 km; the large one 768 MB of pixels), their roads as lines in a
GeoPackage, and runs the same short ``roadseg fit`` on each in a fresh process: the same
steps, the same held-out blocks validated (the first 8). Prints each run's peak resident
memory (the process's maximum RSS) and wall time, side by side; run it with nothing else
on the machine.

    python benchmarks/scene_training_memory.py [--out benchmarks/out/scene-memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RES, X0, Y0, CRS = 0.5, 465_000.0, 5_250_000.0, "EPSG:32632"
SPACING = 300  # px between roads (150 m)


def write_scene(folder: Path, side: int) -> Path:
    """The scene, its lines and its scene list in ``folder`` (kept when already there)."""
    import cv2
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from shapely import LineString

    scenes = folder / "scenes.yaml"
    if scenes.exists():
        return scenes
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": CRS, "transform": from_origin(X0, Y0, RES, RES), "tiled": True,
               "compress": "deflate"}  # fmt: skip
    rng = np.random.default_rng(0)
    strip = 1024
    with rasterio.open(folder / "scene.tif", "w", **profile) as dst:
        for top in range(0, side, strip):
            h = min(strip, side - top)
            noise = rng.random((h // 8 + 1, side // 8 + 1, 3)).astype(np.float32)
            img = cv2.resize(noise, (side, h), interpolation=cv2.INTER_LINEAR)
            img = (img * 120 + 60).astype(np.uint8)
            rows = np.arange(top, top + h)
            img[(rows % SPACING) < 12] = 150
            img[:, (np.arange(side) % SPACING) < 12] = 150
            dst.write(img.transpose(2, 0, 1), window=Window(0, top, side, h))
    centres = np.arange(6, side, SPACING) * RES
    lines = [LineString([(X0, Y0 - c), (X0 + side * RES, Y0 - c)]) for c in centres]
    lines += [LineString([(X0 + c, Y0), (X0 + c, Y0 - side * RES)]) for c in centres]
    gpd.GeoDataFrame(geometry=lines, crs=CRS).to_file(folder / "roads.gpkg", engine="pyogrio")
    scenes.write_text("- image: scene.tif\n  labels: roads.gpkg\n  width: 6\n")
    return scenes


def fit(scenes: Path, run: Path, steps: int) -> dict:
    """One short fit in a fresh process: its peak RSS (MB) and wall seconds."""
    args = [sys.executable, "-m", "roadseg", "fit", "--config", "configs/quick.yaml",
            "--data.scenes", str(scenes), "--data.block", "256", "--data.crop_size", "384",
            "--data.batch_size", "4", "--data.samples_per_epoch", str(4 * steps),
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "8",
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], "
             "stdout=subprocess.DEVNULL); print(done.returncode, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    code, kb = out.stdout.split()
    if int(code):
        sys.exit(f"fit failed on {scenes}:\n{out.stderr[-2000:]}")
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/scene-memory"))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = {}
    for side in (1_000, 16_000):
        scenes = write_scene(args.out / f"scene-{side}", side)
        run = args.out / f"run-{side}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        rows[side] = fit(scenes, run, args.steps)
        print(f"{side:>6,} px scene: peak RSS {rows[side]['peak_rss_mb']:,.0f} MB, "
              f"{rows[side]['wall_s']:.0f} s ({args.steps} steps of 4 x 384 px)", flush=True)  # fmt: skip
    ratio = rows[16_000]["peak_rss_mb"] / rows[1_000]["peak_rss_mb"]
    print(f"16,000 px / 1,000 px peak memory: {ratio:.3f}x")
    (args.out / "scene-memory.json").write_text(
        json.dumps({"runs": rows, "ratio": ratio}, indent=2)
    )


if __name__ == "__main__":
    main()
