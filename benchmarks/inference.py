"""Inference speed, side by side in one run: each backend's bare network against the scene
pipeline that feeds it, and against the scene pipeline of an earlier commit.

    python benchmarks/inference.py [--ckpt runs/cpu/checkpoints/best.ckpt]
        [--scenes data/maps/map_0_image.tif,16000] [--baseline 77a6125] [--tiles]

1. network: megapixels per second of the network alone on the windows the scene
   pipeline runs (``--window`` side, batch 1, and 1024-px windows in batches of 4), per
   backend: PyTorch eager, PyTorch channels-last (what a cpu.yaml checkpoint runs), ONNX
   Runtime;
2. scene: seconds and megapixels per second of ``Predictor.predict_scene`` (start-up
   excluded: reading, windows, network, blending, writing, merging) per backend and
   output, the ratio to that backend's bare network, and the same scene through the
   ``--baseline`` commit's pipeline (a git worktree of it, same checkpoint), the speed-up
   over it;
3. tiles (``--tiles``): wall time of ``roadseg submit --tta`` on the 144 cil-2022 test
   tiles, the baseline commit's against this one's.

A scene given as a number is a synthetic GeoTIFF of that side (benchmarks/bench.py).
Run with nothing else on the machine: two jobs on two cores distort every ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BASELINE = "77a6125"  # the scene pipeline before the ONNX backend and the pipeline rework

# Times predict_scene alone in a fresh process; runs against this checkout or a worktree
# of the baseline (whose options know neither backend nor prob8).
DRIVER = """
import contextlib, io, json, sys, time
from roadseg.options import PredictOptions
scene, out, ckpt, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
output = extra.pop("output")
options = PredictOptions(ckpt=(ckpt,), quiet=True, **extra)
with contextlib.redirect_stdout(io.StringIO()):
    predictor, decision = options.predictor()
    start = time.perf_counter()
    predictor.predict_scene(scene, out, output=output, decision=decision)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def network_rows(ckpt: str, window: int, int8: Path | None = None) -> list[dict]:
    """Bare network throughput per backend on the pipeline's windows (and of the int8
    export, ``int8``, in ONNX Runtime)."""
    import torch

    from roadseg.backends import OnnxBackend, TorchBackend
    from roadseg.exported import read_exported
    from roadseg.task import RoadSegTask

    task = RoadSegTask.from_checkpoint(ckpt)
    eager = task.model  # the wrapped network without channels-last
    backends = {
        "torch eager": TorchBackend([eager], torch.device("cpu"), "fp32"),
        "torch channels-last": TorchBackend([task], torch.device("cpu"), "fp32"),
        "onnx": OnnxBackend.from_models([task]),
    }
    if int8:
        backends["onnx int8"] = OnnxBackend.from_file(read_exported(int8))
    rows = []
    for side, batch in ((window, 1), (1024, 4)):
        x = np.random.default_rng(0).random((batch, 3, side, side), dtype=np.float32)
        for name, run in backends.items():
            run(x, 1, False)  # warm-up
            seconds = []
            for _ in range(5):
                start = time.perf_counter()
                run(x, 1, False)
                seconds.append(time.perf_counter() - start)
            s = float(np.median(seconds))
            rows.append({"backend": name, "window": f"{side}² x {batch}", "seconds": s,
                         "megapixels_per_s": batch * side * side / 1e6 / s})  # fmt: skip
    return rows


def time_scene(root: Path, scene: Path, out: Path, ckpt: str, extra: dict) -> float:
    seconds = time_scene_kept(root, scene, out, ckpt, extra)
    out.unlink(missing_ok=True)
    return seconds


def time_plain_loop(scene: Path, model: Path, out: Path) -> dict:
    """The peers' way (benchmarks/light_predict.py's loop: 512 px tiles, 10% overlap, one
    at a time through ONNX Runtime): seconds from its first tile to its mask written."""
    from benchmarks.light_predict import PLAIN_LOOP

    run = subprocess.run([sys.executable, "-c", PLAIN_LOOP, str(scene), str(out), str(model)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def mask_iou(a: Path, b: Path) -> float:
    """IoU of the road pixels of two masks of one scene."""
    import rasterio

    inter = union = 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        for _, win in x.block_windows(1):
            p, q = x.read(1, window=win) == 1, y.read(1, window=win) == 1
            inter, union = inter + int((p & q).sum()), union + int((p | q).sum())
    return inter / union if union else 1.0


def exported_rows(scenes: list[Path], files: dict[str, Path], net: dict, tmp: Path) -> list[dict]:
    """Each scene through the exported files (``{"fp32": path, "int8": path}``) and the plain
    loop, with their share of the fp32 network, and the int8 mask's IoU with fp32's."""
    import rasterio

    rows = []
    for scene in scenes:
        with rasterio.open(scene) as src:
            mpx = src.width * src.height / 1e6
            name = f"{scene.name} {src.width}x{src.height}"
        masks = {}
        for kind, model in files.items():
            masks[kind] = tmp / f"mask-{kind}.tif"
            extra = {"output": "mask"}
            s = time_scene_kept(REPO, scene, masks[kind], str(model), extra)
            rows.append({"scene": name, "pipeline": f"this, exported {kind}", "output": "mask",
                         "seconds": s, "megapixels_per_s": mpx / s,
                         "of_network": f"{mpx / s / net['onnx']:.0%}", "x_plain_loop": "",
                         "iou_with_fp32": ""})  # fmt: skip
        loop = time_plain_loop(scene, files["fp32"], tmp / "loop.tif")
        rows.append({"scene": name, "pipeline": "plain 512 px loop, exported fp32", "output": "mask",
                     "seconds": loop["loop"], "megapixels_per_s": mpx / loop["loop"],
                     "of_network": f"{mpx / loop['loop'] / net['onnx']:.0%}", "x_plain_loop": "",
                     "iou_with_fp32": ""})  # fmt: skip
        for row in rows[-len(files) - 1 :]:
            row["x_plain_loop"] = f"{loop['loop'] / row['seconds']:.2f}"
        if "int8" in masks:
            rows[-2]["iou_with_fp32"] = f"{mask_iou(masks['fp32'], masks['int8']):.4f}"
        for path in masks.values():
            path.unlink(missing_ok=True)
    return rows


def time_scene_kept(root: Path, scene: Path, out: Path, ckpt: str, extra: dict) -> float:
    """:func:`time_scene`, the output kept."""
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(scene), str(out), ckpt, json.dumps(extra)],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"scene run failed in {root}:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["seconds"]


def baseline_tree(rev: str, tmp: Path) -> Path:
    """A git worktree of ``rev`` (removed with ``tmp``)."""
    tree = tmp / f"baseline-{rev}"
    subprocess.run(["git", "worktree", "add", "-f", "--detach", str(tree), rev], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    for linked in (REPO / "data").iterdir():  # the datasets (make data), so tiles have context
        if linked.is_dir():
            (tree / "data" / linked.name).symlink_to(linked.resolve())
    return tree


def scene_rows(
    scenes: list[Path], ckpt: str, net: dict, base: Path | None, tmp: Path
) -> list[dict]:
    """Each scene per backend and output (this checkout) and through the baseline."""
    import rasterio

    rows = []
    for scene in scenes:
        with rasterio.open(scene) as src:
            mpx = src.width * src.height / 1e6
            name = f"{scene.name} {src.width}x{src.height}"
        before = (
            time_scene(base, scene, tmp / "out.tif", ckpt, {"output": "prob"}) if base else None
        )
        if before:
            rows.append({"scene": name, "pipeline": f"baseline {BASELINE}, torch", "output": "prob",
                         "seconds": before, "megapixels_per_s": mpx / before, "of_network": "",
                         "speed_up": 1.0})  # fmt: skip
        for backend in ("torch", "onnx"):
            for output in ("prob", "prob8"):
                s = time_scene(
                    REPO, scene, tmp / "out.tif", ckpt, {"output": output, "backend": backend}
                )
                rows.append({"scene": name, "pipeline": f"this, {backend}", "output": output,
                             "seconds": s, "megapixels_per_s": mpx / s,
                             "of_network": f"{mpx / s / net[backend]:.0%}",
                             "speed_up": before / s if before else float("nan")})  # fmt: skip
    return rows


def tile_rows(data: Path, ckpt: str, base: Path | None, tmp: Path) -> list[dict]:
    """Wall time of submit --tta on the 144 cil-2022 test tiles, baseline and this."""
    rows = []
    for label, root, extra in (
        (f"baseline {BASELINE}", base, []), ("this, onnx", REPO, ["--backend", "onnx"]),
        ("this, torch", REPO, ["--backend", "torch"]),
    ):  # fmt: skip
        if root is None:
            continue
        command = [sys.executable, "-m", "roadseg", "submit", "--ckpt", ckpt, "--data",
                   str(data / "cil-2022"), "--tta", "--quiet", "--out", str(tmp / f"{len(rows)}.csv"), *extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                       check=True, capture_output=True)  # fmt: skip
        rows.append({"tiles": "144 cil-2022 test tiles, 8-view TTA, in context", "pipeline": label,
                     "wall_s": time.perf_counter() - start})  # fmt: skip
    csvs = sorted(tmp.glob("*.csv"))
    if len(csvs) > 1:
        first = csvs[0].read_text().splitlines()
        for row, path in zip(rows, csvs, strict=True):
            other = path.read_text().splitlines()
            row["patches_as_baseline"] = (
                f"{np.mean([a == b for a, b in zip(first, other, strict=True)]):.4%}"
            )
    return rows


def exported_files(args, ckpt: str, tmp: Path) -> dict[str, Path]:
    """``{"fp32": file, "int8": file}``: ``--exported`` and ``--int8`` when given, else
    exported here from ``ckpt`` (the int8 one only when its checkpoint's tiles are here:
    it calibrates and validates on them)."""
    files = {}
    for kind, given in (("fp32", args.exported), ("int8", args.int8)):
        if given and Path(given).exists():
            files[kind] = Path(given)
            continue
        out = tmp / f"{kind}.onnx"
        command = [sys.executable, "-m", "roadseg", "export", "--ckpt", ckpt, "--out", str(out),
                   *(["--int8"] if kind == "int8" else [])]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"no {kind} export: {done.stderr.strip().splitlines()[-1]}")
            continue
        files[kind] = out
    return files


def synthetic_checkpoint(tmp: Path) -> str:
    """cpu.yaml's network with random weights (speed does not depend on the weights)."""
    from benchmarks.bench import MODELS, random_checkpoint

    return str(random_checkpoint(tmp / "cpu-random.ckpt", MODELS["cpu"][0], channels_last=True))


def run(args) -> dict:
    from benchmarks.bench import table, write_scene
    from roadseg.options import PredictOptions

    window = PredictOptions.__dataclass_fields__["window"].default
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt if args.ckpt and Path(args.ckpt).exists() else synthetic_checkpoint(tmp)
        print(f"checkpoint: {ckpt}")
        files = exported_files(args, ckpt, tmp)
        result["network"] = network_rows(ckpt, window, files.get("int8"))
        print(table("bare network, per backend", result["network"]), flush=True)
        net = {"torch": max(r["megapixels_per_s"] for r in result["network"] if r["backend"] == "torch channels-last"),
               "onnx": max(r["megapixels_per_s"] for r in result["network"] if r["backend"] == "onnx")}  # fmt: skip
        base = baseline_tree(args.baseline, tmp) if args.baseline else None
        try:
            scenes = []
            for spec in filter(None, args.scenes.split(",")):
                if spec.isdigit():
                    path = tmp / f"scene_{spec}.tif"
                    write_scene(path, int(spec))
                    scenes.append(path)
                elif Path(spec).exists():
                    scenes.append(Path(spec))
                else:
                    print(f"skipped {spec}: not found (make data; roadseg maps data/cil-2022)")
            result["scene"] = scene_rows(scenes, ckpt, net, base, tmp)
            print(table("scene pipeline per backend and output; of_network: its share of the bare "
                        "network's best throughput", result["scene"]), flush=True)  # fmt: skip
            if files:
                result["exported"] = exported_rows(scenes, files, net, tmp)
                print(table("exported files and the plain loop (masks); of_network: share of the "
                            "fp32 ONNX network's best; x_plain_loop: speed over the loop",
                            result["exported"]), flush=True)  # fmt: skip
            if args.tiles:
                result["tiles"] = tile_rows(args.data, ckpt, base, tmp)
                print(table("test tiles with TTA", result["tiles"]), flush=True)
        finally:
            if base:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False
                )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt",
        default=str(REPO / "runs" / "cpu" / "checkpoints" / "best.ckpt"),
        help="checkpoint (default runs/cpu's; absent: cpu.yaml's network, random weights)",
    )
    parser.add_argument(
        "--scenes",
        default=str(REPO / "data" / "maps" / "map_0_image.tif") + ",4000",
        help="comma-separated: GeoTIFFs, or sides of synthetic scenes (16000)",
    )
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with ('' for none)")
    parser.add_argument(
        "--tiles", action="store_true", help="also submit --tta on the 144 test tiles"
    )
    parser.add_argument(
        "--exported",
        default=str(REPO / "benchmarks" / "out" / "cpu.onnx"),
        help="the checkpoint's fp32 export (exported here when missing)",
    )
    parser.add_argument(
        "--int8",
        default=str(REPO / "benchmarks" / "out" / "cpu.int8.onnx"),
        help="its export --int8 (made here when missing)",
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "inference.json")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
