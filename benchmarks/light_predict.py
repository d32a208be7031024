"""The exported file as a model, side by side in one run (#35, must-show 2).

    python benchmarks/light_predict.py --model model.onnx --scenes data/maps/map_0_image.tif,1200
        [--light benchmarks/out/light-venv] [--repeat 3]

For each scene, the wall time of, each in a fresh process, median of ``--repeat`` runs:

- ``light``: ``roadseg predict SCENE --ckpt model.onnx --output mask`` in the light install
  (``pip install -e '.[predict]'`` into a fresh virtual environment, made here when missing);
- ``full``: the same command in this (full) install;
- ``plain loop``: what QGIS plugins do, in the light install's Python: the whole scene read,
  square 512 px tiles overlapping by 10% (the last one moved in to end at the edge), each run
  alone through ONNX Runtime, the overlaps averaged, thresholded at the file's pixel
  threshold, written as a GeoTIFF;

and the time to the first chunk (roadseg: its first part file appears; the loop: its first
tile is predicted), the masks' agreement with the light install's, and the installs' sizes.
A scene given as ``PATH,SIDE`` is the top-left SIDE x SIDE of PATH. Run it with nothing else
on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The peers' way: run by the light install's Python, prints JSON timings.
PLAIN_LOOP = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np, onnxruntime as ort, rasterio
scene, out, model = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
threshold = json.loads(meta["roadseg_decision"])["pixel"]
with rasterio.open(scene) as src:
    image = src.read([1, 2, 3]).astype(np.float32) / 255
    profile = src.profile
_, h, w = image.shape
tile, step = 512, 512 - 51
def starts(n):
    return sorted({min(s, max(n - tile, 0)) for s in range(0, n, step)})
total = np.zeros((h, w), np.float32)
count = np.zeros((h, w), np.float32)
first = None
loop_start = time.perf_counter()
for r in starts(h):
    for c in starts(w):
        win = image[:, r:r + tile, c:c + tile]
        th, tw = win.shape[1:]
        if th < tile or tw < tile:  # a scene smaller than a tile: zero-padded
            win = np.pad(win, ((0, 0), (0, tile - th), (0, tile - tw)))
        (prob,) = sess.run(["probability"], {"image": win[None]})
        total[r:r + th, c:c + tw] += prob[0, 0, :th, :tw]
        count[r:r + th, c:c + tw] += 1
        first = first or time.perf_counter() - start
mask = (total / count > threshold).astype(np.uint8)
profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True)
with rasterio.open(out, "w", **profile) as dst:
    dst.write(mask[None])
print(json.dumps({"first": first, "loop": time.perf_counter() - loop_start}))
"""


def light_install(path: Path) -> Path:
    """The Python of the light install at ``path`` (made when missing)."""
    python = path / "bin" / "python"
    if not python.exists():
        print(f"making the light install in {path} (pip install -e '.[predict]') ...")
        venv.EnvBuilder(with_pip=True).create(path)
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{REPO}[predict]"],
                       check=True)  # fmt: skip
    return python


def size(path: Path) -> float:
    """GB of an environment's files."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def crop(scene: str, folder: Path) -> Path:
    """``PATH`` itself, or for ``PATH,SIDE`` its top-left SIDE x SIDE as a GeoTIFF."""
    if "," not in scene:
        return Path(scene)
    import rasterio
    from rasterio.windows import Window

    path, side = scene.rsplit(",", 1)
    out = folder / f"{Path(path).stem}_{side}.tif"
    with rasterio.open(path) as src:
        win = Window(0, 0, int(side), int(side))
        profile = {**src.profile, "width": int(side), "height": int(side),
                   "transform": src.window_transform(win)}  # fmt: skip
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


def timed_roadseg(roadseg: Path, scene: Path, model: Path, out: Path) -> dict:
    """Wall time of one ``roadseg predict``, and when its first part file appeared."""
    parts = out.with_name(out.name + ".parts")
    start = time.perf_counter()
    proc = subprocess.Popen([roadseg, "predict", scene, "--ckpt", model, "--out", out,
                             "--output", "mask", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    first = None
    while proc.poll() is None:
        if first is None and any(parts.glob("chunk_*.tif")):
            first = time.perf_counter() - start
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{roadseg} failed: {proc.stderr.read().decode()[-500:]}")
    return {"wall": wall, "first": first or wall}


def timed_loop(python: Path, scene: Path, model: Path, out: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([python, "-c", PLAIN_LOOP, scene, out, model], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return {"wall": time.perf_counter() - start, **json.loads(done.stdout)}


def agreement(a: Path, b: Path) -> float:
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return float(np.mean(x.read(1) == y.read(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported file (roadseg export)")
    parser.add_argument(
        "--scenes", default="data/maps/map_0_image.tif,1200,data/maps/map_0_image.tif"
    )
    parser.add_argument("--light", default=str(REPO / "benchmarks" / "out" / "light-venv"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    light = light_install(Path(args.light))
    full_roadseg = Path(sys.executable).with_name("roadseg")
    print(f"installs: light {size(Path(args.light)):.2f} GB, full {size(Path(sys.prefix)):.2f} GB "
          f"({Path(args.light)}, {sys.prefix})")  # fmt: skip
    scenes = _scene_args(args.scenes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for given in scenes:
            scene = crop(given, folder)
            rows.append(
                _scene_row(scene, Path(args.model), light, full_roadseg, folder, args.repeat)
            )
    print(f"\n{'scene':<22}{'way':<12}{'wall s':>8}{'first s':>9}{'agrees':>9}")
    for row in rows:
        for way in ("light", "full", "plain loop"):
            r = row[way]
            print(
                f"{row['scene']:<22}{way:<12}{r['wall']:>8.2f}{r['first']:>9.2f}{r['agrees']:>9.4f}"
            )
    out = REPO / "benchmarks" / "out" / "light_predict.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


def _scene_args(text: str) -> list[str]:
    """``a.tif,1200,b.tif`` -> ``["a.tif,1200", "b.tif"]``: a number belongs to the path
    before it."""
    scenes: list[str] = []
    for part in text.split(","):
        if part.isdigit() and scenes:
            scenes[-1] += f",{part}"
        else:
            scenes.append(part)
    return scenes


def _scene_row(scene: Path, model: Path, light: Path, full: Path, folder: Path, repeat: int):
    import rasterio

    with rasterio.open(scene) as src:
        name = f"{src.width} x {src.height}"
    runs: dict[str, list[dict]] = {"light": [], "full": [], "plain loop": []}
    outs = {way: folder / f"{way.replace(' ', '_')}.tif" for way in runs}
    for _ in range(repeat):  # interleaved, so that drift hits each way alike
        for way, out in outs.items():
            for stale in (out, out.with_name(out.name + ".parts"), out.with_suffix(".qml")):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(
                    missing_ok=True
                )
            if way == "plain loop":
                runs[way].append(timed_loop(light, scene, model, out))
            else:
                roadseg = light.with_name("roadseg") if way == "light" else full
                runs[way].append(timed_roadseg(roadseg, scene, model, out))
    row = {"scene": name}
    for way, timings in runs.items():
        row[way] = {
            "wall": statistics.median(t["wall"] for t in timings),
            "first": statistics.median(t["first"] for t in timings),
            "agrees": agreement(outs[way], outs["light"]),
        }
    return row


if __name__ == "__main__":
    main()
