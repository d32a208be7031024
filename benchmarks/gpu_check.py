"""The GPU check: one script, under 8 minutes on one GPU, that writes every GPU figure roadseg
lacks to one file.

    python benchmarks/gpu_check.py --out gpu_check/            # on a machine with a GPU
    python benchmarks/gpu_check.py --out /tmp/g --smoke --device cpu   # the same steps, tiny (tests)

1. trains ``configs/unet.yaml`` for ``--train-minutes`` (default 4; Lightning's
   ``max_time``, the best checkpoint kept), with the shared data linked;
2. predicts the 144 cil-2022 test tiles with 8-view TTA (``roadseg submit --tta``), wall
   time, and validates the CSV;
3. benchmarks that network's inference on 1024² windows, batch 8: fp32 and bf16
   autocast, with and without channels-last, ``torch.compile``; ONNX Runtime on the
   CPU beside it (this package installs no CUDA build of it); and the scene pipeline on
   a synthetic 8,000² scene per backend;
4. writes ``figures.json`` and ``figures.md`` in ``--out`` as it goes (a step that fails
   is recorded with its error and the next one runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Figures:
    """Figures written to ``out/figures.json`` and ``figures.md`` after every step."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data = out, {"meta": meta, "steps": {}}
        out.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, fn) -> None:
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as err:  # a failed step is a figure too; the next step runs
            result = {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-1500:],
            }
        self.data["steps"][name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "result": result,
        }
        print(f"{name}: {json.dumps(self.data['steps'][name]['result'])[:400]}", flush=True)
        self.write()

    def write(self) -> None:
        (self.out / "figures.json").write_text(json.dumps(self.data, indent=2) + "\n")
        lines = [f"# GPU check on {self.data['meta']['device_name']}", ""]
        for name, step in self.data["steps"].items():
            lines += [
                f"## {name} ({step['seconds']} s)",
                "",
                "```",
                json.dumps(step["result"], indent=1),
                "```",
                "",
            ]
        (self.out / "figures.md").write_text("\n".join(lines))


def roadseg(*args: str, cwd: Path = REPO) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "roadseg", *args], cwd=cwd, check=True)
    return time.perf_counter() - start


def train(args, run: Path) -> dict:
    minutes = args.train_minutes
    extra = ["--trainer.max_steps", "2", "--data.samples_per_epoch", "8", "--trainer.limit_val_batches", "1",
             "--data.num_workers", "0", "--data.batch_size", "4", "--model.model_args.encoder", "tu-tf_efficientnet_lite0"] if args.smoke else []  # fmt: skip
    seconds = roadseg(
        "fit", "--config", "configs/unet.yaml", "--data.root", str(args.data / "cil-2022"),
        "--trainer.default_root_dir", str(run), "--trainer.max_time", f"00:00:{minutes:02d}:00",
        "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu",
        "--trainer.precision", "bf16-mixed" if args.device == "cuda" else "32-true",
        "--trainer.enable_progress_bar", "false", *extra,
    )  # fmt: skip
    metrics = run / "metrics.csv"
    found = list(run.rglob("metrics.csv"))
    last = found[0].read_text().splitlines()[-1] if found else ""
    return {"seconds": seconds, "budget_minutes": minutes, "last_metrics_row": last, "run": str(run),
            "best": str(run / "checkpoints" / "best.ckpt"), "metrics_file": str(found[0] if found else metrics)}  # fmt: skip


def submit(args, ckpt: Path) -> dict:
    out = args.out / "unet-cil-2022-tta.csv"
    tiles = ["--tta"] if not args.smoke else []
    seconds = roadseg("submit", "--ckpt", str(ckpt), "--data", str(args.data / "cil-2022"),
                      "--out", str(out), "--quiet", "--device", args.device, *tiles)  # fmt: skip
    return {
        "seconds": seconds,
        "tta": not args.smoke,
        "csv": str(out),
        "rows": len(out.read_text().splitlines()) - 1,
    }


def network(args, ckpt: Path) -> list[dict]:
    """Windows per second of the trained network per precision, memory format, compile."""
    import torch

    from roadseg.backends import OnnxBackend, TorchBackend
    from roadseg.task import RoadSegTask

    device = torch.device(args.device)
    side, batch = (256, 2) if args.smoke else (1024, 8)
    x = np.random.default_rng(0).random((batch, 3, side, side), dtype=np.float32)
    rows = []

    def measure(name, run, repeat=3 if args.smoke else 10):
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        s = (time.perf_counter() - start) / repeat
        rows.append(
            {
                "setting": name,
                "window": f"{side}² x {batch}",
                "megapixels_per_s": round(batch * side * side / 1e6 / s, 2),
            }
        )

    for channels_last in (False, True):
        for precision in ("fp32", "bf16"):
            task = RoadSegTask.from_checkpoint(ckpt)
            task.hparams.channels_last = channels_last
            backend = TorchBackend([task], device, precision)
            measure(
                f"torch {precision}{' channels-last' if channels_last else ''}",
                lambda b=backend: b(x, 1, False),
            )
    task = RoadSegTask.from_checkpoint(ckpt).to(device)
    task.model = torch.compile(task.model)
    backend = TorchBackend([task], device, "bf16" if device.type == "cuda" else "fp32")
    measure(
        "torch compile, bf16 on CUDA", lambda: backend(x, 1, False), repeat=3 if args.smoke else 10
    )
    cpu = OnnxBackend.from_models([RoadSegTask.from_checkpoint(ckpt)])
    measure("onnx runtime, CPU", lambda: cpu(x[:1], 1, False), repeat=2)
    rows[-1]["window"] = f"{side}² x 1"
    return rows


def scene(args, ckpt: Path) -> list[dict]:
    from benchmarks.bench import write_scene

    side = 1000 if args.smoke else 8000
    path = args.out / f"scene_{side}.tif"
    write_scene(path, side)
    rows = []
    for backend, device in (("torch", args.device), ("onnx", "cpu")):
        out = args.out / f"scene_{backend}.tif"
        seconds = roadseg("predict", str(path), "--out", str(out), "--ckpt", str(ckpt), "--backend", backend,
                          "--device", device, "--quiet", "--output", "prob8")  # fmt: skip
        rows.append({"backend": backend, "device": device, "scene": f"{side}²", "wall_s": round(seconds, 1),
                     "megapixels_per_s_with_start_up": round(side * side / 1e6 / seconds, 2)})  # fmt: skip
        out.unlink()
    path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "gpu_check")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--train-minutes", type=int, default=4)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings: every step runs in about a minute on a CPU",
    )
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: no CUDA device here (run it where a GPU is, or --device cpu --smoke to try the steps)"
        )
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    figures = Figures(args.out, {"device_name": name, "torch": torch.__version__, "smoke": args.smoke,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
    run = args.out / "unet"
    ckpt = run / "checkpoints" / "best.ckpt"
    figures.step("train configs/unet.yaml", lambda: train(args, run))
    figures.step("submit 144 test tiles with TTA", lambda: submit(args, ckpt))
    figures.step("network throughput", lambda: network(args, ckpt))
    figures.step("scene pipeline per backend", lambda: scene(args, ckpt))
    failed = [
        n
        for n, s in figures.data["steps"].items()
        if isinstance(s["result"], dict) and "error" in s["result"]
    ]
    print(
        f"wrote {args.out / 'figures.json'} and figures.md"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
