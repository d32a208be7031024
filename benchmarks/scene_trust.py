"""Scene runs a user can trust (#32, must-shows 3 and 4), run as a user runs them.

1. ``predict scenes/ --out scenes/``, ``--out scenes/sub/`` and a list whose output
   folder holds a listed scene: each refused before any work, inputs byte-identical.
2. A 20-scene folder with a 0-byte and a truncated file: 18 done, 2 failed named, exit 1.
   Then the two are fixed, one scene is replaced by another under the same name, and the
   model is copied elsewhere and touched: the rerun predicts exactly those 3, and every
   output equals a clean run's. The same with ``--ray``.

    python benchmarks/scene_trust.py --ckpt runs/cpu/checkpoints/best.ckpt [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROADSEG = str(Path(sys.executable).with_name("roadseg"))


def write_scene(path: Path, tiles: list[Path], k: int) -> None:
    """Two real test tiles side by side, georeferenced in UTM 32N at 0.5 m."""
    data = []
    for tile in tiles:
        with rasterio.open(tile) as src:
            data.append(src.read([1, 2, 3]))
    image = np.concatenate(data, axis=2)
    with rasterio.open(path, "w", driver="GTiff", width=image.shape[2], height=image.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500_000 + 1_000 * k, 5_200_000, 0.5, 0.5)) as dst:  # fmt: skip
        dst.write(image)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in sorted(folder.iterdir()) if p.is_file()}  # fmt: skip


def roadseg(*args: str) -> tuple[int, str]:
    run = subprocess.run([ROADSEG, "predict", *args, "--quiet"], capture_output=True, text=True)
    return run.returncode, run.stdout + run.stderr


def show(what: str, code: int, text: str, keep=("roadseg:", "scenes:", "done before", "wrote")):
    lines = [ln for ln in text.splitlines() if any(k in ln for k in keep)]
    print(f"$ {what}\n  exit {code}")
    for line in lines[-4:]:
        print(f"  {line[:220]}")


def refusals(scenes: Path, ckpt: str, folder: Path) -> None:
    before = digests(scenes)
    (folder / "list.txt").write_text("".join(f"scenes/{n}\n" for n in sorted(before)[:3]))
    for what, args in [
        ("predict scenes/ --out scenes/", [str(scenes), "--out", str(scenes)]),
        ("predict scenes/ --out scenes/sub/", [str(scenes), "--out", str(scenes / "sub")]),
        ("predict list.txt --out . (the folder holding the listed scenes' folder)",
         [str(folder / "list.txt"), "--out", str(folder)]),
        ("predict scenes/s00.tif scenes/s01.tif --out scenes/ (an output inside a listed folder)",
         [str(scenes / "s00.tif"), str(scenes / "s01.tif"), "--out", str(scenes)]),
    ]:  # fmt: skip
        code, text = roadseg(*args, "--ckpt", ckpt)
        show(what, code, text)
    same = digests(scenes) == before and not (scenes / "sub").exists()
    print(f"inputs byte-identical after: {same} ({len(before)} files)\n")


def faults(scenes: Path, tiles: list[Path], ckpt: str, folder: Path, ray: bool) -> bool:
    extra = ["--ray", "--workers", "2"] if ray else []
    out = folder / ("out-ray" if ray else "out")
    shutil.copy(scenes / "s18.tif", folder / "s18.good")
    shutil.copy(scenes / "s19.tif", folder / "s19.good")
    (scenes / "s18.tif").write_bytes(b"")
    data = (folder / "s19.good").read_bytes()
    (scenes / "s19.tif").write_bytes(data[: len(data) // 3])
    code, text = roadseg(str(scenes), "--out", str(out), "--ckpt", ckpt, *extra)
    show(f"first run{' --ray' if ray else ''}: 0-byte s18, truncated s19", code, text)
    shutil.copy(folder / "s18.good", scenes / "s18.tif")
    shutil.copy(folder / "s19.good", scenes / "s19.tif")
    write_scene(scenes / "s05.tif", tiles[60:62], 5)  # another image under the same name
    moved = folder / "elsewhere" / "model.ckpt"
    moved.parent.mkdir(exist_ok=True)
    shutil.copy(ckpt, moved)
    os.utime(moved)  # copied and touched: the same model
    code, text = roadseg(str(scenes), "--out", str(out), "--ckpt", str(moved), *extra)
    show(f"rerun{' --ray' if ray else ''}: s18/s19 fixed, s05 replaced, model copied+touched",
         code, text, keep=("roadseg:", "scenes:", "done before", "predicting it again", "] s"))  # fmt: skip
    clean = folder / "clean"
    if not clean.exists():
        roadseg(str(scenes), "--out", str(clean), "--ckpt", ckpt)
    tifs = lambda d: {k: v for k, v in digests(d).items() if k.endswith(".tif")}  # noqa: E731
    equal = tifs(out) == tifs(clean)
    print(f"  every output equals a clean run's: {equal} ({len(tifs(out))} GeoTIFFs)\n")
    write_scene(scenes / "s05.tif", tiles[10:12], 5)  # back to the first image for the next run
    return equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    tiles = sorted((Path(args.data) / "cil-2022" / "test" / "images").glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scenes = folder / "scenes"
        scenes.mkdir()
        for k in range(20):
            write_scene(scenes / f"s{k:02d}.tif", tiles[2 * k : 2 * k + 2], k)
        refusals(scenes, args.ckpt, folder)
        ok = faults(scenes, tiles, args.ckpt, folder, ray=False)
        if not args.no_ray:
            shutil.rmtree(folder / "clean")
            ok = faults(scenes, tiles, args.ckpt, folder, ray=True) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
