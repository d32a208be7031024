"""roadseg benchmarks: where the time goes, measured. Prints a table and writes JSON.

    python benchmarks/bench.py [--data ../shared/data] [--out benchmarks/out/bench.json]
                               [--device auto] [--model quick|resnet34-384] [--only data,train,...]

1. data: augmented training crops per second in one worker process (rasterio read +
   albumentations + collation), with and without the decoded-tile cache;
2. train: images per second of the whole Lightning pipeline against the same model's
   bare forward+backward loop on random tensors (the ceiling), per precision and
   memory format;
3. encoders: training steps per second of cpu.yaml's network with smp's deprecated
   ``timm-`` EfficientNet-Lite0 encoder against the ``tu-`` one roadseg now uses;
4. predict: test tiles per second without and with TTA, and seconds for a test set;
5. scene: seconds and peak memory per process of streaming GeoTIFF scenes through
   ``roadseg predict`` with 1 and 2 processes (``--scene-sizes 16000`` for the large one);
6. paper: the cost of ``make reproduce PROFILE=paper`` on this device, from a measured
   time per training step of each network of the plan (hours per run and in all);
7. inference (benchmarks/inference.py): each backend's bare network throughput, the
   scene pipeline's per backend and output, their ratio, and the speed-up over the
   pipeline of the commit before the ONNX backend, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from roadseg.datamodule import RoadDataModule  # noqa: E402
from roadseg.dataset import RandomWindowDataset, SeededSampler  # noqa: E402
from roadseg.index import scan  # noqa: E402
from roadseg.predict import Predictor  # noqa: E402
from roadseg.task import RoadSegTask  # noqa: E402

MODELS = {
    # name: (model_args, crop, batch)
    "quick": (
        {"encoder": "tu-tf_efficientnet_lite0", "decoder_channels": [64, 32, 16, 16, 8]},
        256,
        8,
    ),
    "resnet34-384": ({"encoder": "resnet34"}, 384, 32),
    # configs/cpu.yaml's network
    "cpu": (
        {
            "encoder": "tu-tf_efficientnet_lite0",
            "decoder_channels": [128, 64, 32, 16, 16],
            "input_scale": 0.5,
        },
        384,
        4,
    ),
}


def timed(fn, *, warmup: int, repeat: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - start) / repeat


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_data(data: Path, crop: int, batches: int = 20) -> list[dict]:
    frame = scan(data / "cil-2022").query("split == 'train'")
    rows = []
    for augment in ("d4", "full"):
        for cache in (False, True):
            dataset = RandomWindowDataset(frame, crop_size=crop, augment=augment, cache=cache)
            sampler = SeededSampler(len(frame), samples_per_epoch=8 * batches * 2, seed=0)
            loader = DataLoader(dataset, sampler=sampler, batch_size=8, num_workers=1)
            it = iter(loader)
            for _ in range(batches // 2):  # warm-up (and fill the cache)
                next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "augment": augment,
                    "cache": cache,
                    "crops_per_s_per_worker": 8 * batches / seconds,
                }
            )
    return rows


def bench_train(data: Path, model_name: str, device: str, steps: int) -> list[dict]:
    model_args, crop, batch = MODELS[model_name]
    on_gpu = device == "cuda"
    precisions = ["32-true", "bf16-mixed"]
    rows = []
    for precision in precisions:
        for channels_last in (False, True):
            task = RoadSegTask(model="unet", model_args=model_args, channels_last=channels_last)
            bare = bare_loop(task, batch, crop, device, precision, steps)
            dm = RoadDataModule(root=str(data / "cil-2022"), crop_size=crop, batch_size=batch,
                                samples_per_epoch=batch * (steps + 3), num_workers=8 if on_gpu else 1,
                                augment="d4")  # fmt: skip
            timer = StepTimer(skip=3)
            trainer = pl.Trainer(
                accelerator="gpu" if on_gpu else "cpu", devices=1, precision=precision, max_epochs=1,
                limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[timer],
            )  # fmt: skip
            trainer.fit(
                RoadSegTask(model="unet", model_args=model_args, channels_last=channels_last), dm
            )
            pipeline = batch / timer.seconds_per_step
            rows.append({
                "precision": precision, "channels_last": channels_last, "batch": batch, "crop": crop,
                "bare_img_per_s": bare, "pipeline_img_per_s": pipeline, "pipeline_share": pipeline / bare,
            })  # fmt: skip
    return rows


def bare_loop(
    task: RoadSegTask, batch: int, crop: int, device: str, precision: str, steps: int
) -> float:
    """Images per second of forward+backward+step on random tensors (no data, no Lightning)."""
    model = task.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, crop, crop, device=device)
    y = (torch.rand(batch, 1, crop, crop, device=device) > 0.8).float()
    bf16 = precision.startswith("bf16")

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = task.loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / timed(step, warmup=3, repeat=steps)


class StepTimer(pl.Callback):
    """Seconds per training step, after ``skip`` warm-up steps."""

    def __init__(self, skip: int):
        self.skip, self.start, self.count = skip, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.skip:
            sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.count += 1
            sync()
            self.end = time.perf_counter()

    @property
    def seconds_per_step(self) -> float:
        return (self.end - self.start) / self.count


def bench_predict(data: Path, model_name: str, device: str, tiles: int) -> list[dict]:
    model_args, _, _ = MODELS[model_name]
    task = RoadSegTask(model="unet", model_args=model_args).eval()
    rows = []
    for dataset, size, total in (("cil-2022", 400, 144), ("cil-2020", 608, 94)):
        frame = scan(data / dataset).query("split == 'test'").head(tiles)
        for tta in (False, True):
            predictor = Predictor([task], tta=tta, device=device, batch_size=8 if device == "cuda" else 4,
                                  progress=False)  # fmt: skip
            list(predictor.predict_index(frame.head(min(4, tiles))))  # warm-up
            start = time.perf_counter()
            list(predictor.predict_index(frame))
            sync()
            seconds = time.perf_counter() - start
            rows.append({"tiles": f"{dataset} {size}x{size}", "tta": tta, "tiles_per_s": len(frame) / seconds,
                         "test_set_tiles": total, "test_set_s": total * seconds / len(frame),
                         "measured_tiles": len(frame)})  # fmt: skip
    return rows


def bench_encoders(device: str, steps: int) -> list[dict]:
    """Training steps per second of cpu.yaml's network (U-Net, EfficientNet-Lite0, slim
    decoder, half-resolution input, channels-last, batch 4 of 384²) with smp's deprecated
    ``timm-`` encoder against the ``tu-`` one roadseg uses: the same timm network."""
    import warnings

    from roadseg.models import create_model

    rows = []
    x = torch.rand(4, 3, 384, 384, device=device).contiguous(memory_format=torch.channels_last)
    for encoder in ("timm-tf_efficientnet_lite0", "tu-tf_efficientnet_lite0"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = create_model("unet", encoder=encoder, encoder_weights=None,
                                 decoder_channels=[128, 64, 32, 16, 16], input_scale=0.5)  # fmt: skip
        model = model.to(device).to(memory_format=torch.channels_last)
        optim = torch.optim.AdamW(model.parameters())

        def step(model=model, optim=optim):
            loss = model(x).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()

        seconds = timed(step, warmup=3, repeat=steps)
        rows.append({"encoder": encoder, "steps/s": round(1 / seconds, 2),
                     "parameters": sum(p.numel() for p in model.parameters())})  # fmt: skip
    return rows


def run_settings(config: str, args: dict) -> dict:
    """A run's config file with the plan's dotted overrides applied (``model.lr: ...``)."""
    import yaml

    cfg = yaml.safe_load((REPO / config).read_text())
    for key, value in args.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def bench_paper(device: str, profile: str = "paper") -> list[dict]:
    """What a profile of configs/plans/paper.yaml costs on this device: for each network
    of the plan, seconds per training step (forward, backward, AdamW, at its config's crop,
    batch and precision; on a CPU measured at batch 2 and scaled by the batch), the
    optimisation steps of one run (max_epochs x samples_per_epoch / batch) and the hours
    of one run and of all its folds x seeds. The bare loop's time: data loading and
    validation come on top (section train measures the pipeline's share), early stopping
    ends some runs sooner. The linear baselines (one scikit-learn fit) are left out."""
    from roadseg.reproduce import load_reproduction

    plan = load_reproduction(REPO / "configs" / "plans" / "paper.yaml", profile)
    gpu = device == "cuda"
    per_method = len(plan["folds"]) * len(plan["seeds"])
    rows, measured = [], {}
    for run in plan["runs"]:
        if run["fold"] != plan["folds"][0] or run["seed"] != plan["seeds"][0]:
            continue
        cfg = run_settings(run["config"], run["args"])
        model, data, trainer = cfg["model"], cfg["data"], cfg.get("trainer") or {}
        if model["model"] in ("patch_logreg", "patch_svm"):
            continue
        batch, crop = int(data["batch_size"]), int(data["crop_size"])
        key = json.dumps([model, batch, crop], sort_keys=True, default=str)
        if key not in measured:
            args = {**(model.get("model_args") or {})}
            if "encoder_weights" in args:
                args["encoder_weights"] = None  # the speed is the same without a download
            task = RoadSegTask(
                **{k: v for k, v in model.items() if k not in ("model_args", "compile")},
                model_args=args,
            )
            precision = (trainer.get("precision") or "32-true") if gpu else "32-true"
            measured_batch = batch if gpu else min(batch, 2)
            img_per_s = bare_loop(task, measured_batch, crop, device, precision,
                                  steps=10 if gpu else 1)  # fmt: skip
            measured[key] = batch / img_per_s
            del task
        seconds = measured[key]
        steps = int(trainer.get("max_epochs") or 1) * -(-int(data["samples_per_epoch"]) // batch)
        rows.append({
            "method": run["method"], "batch x crop": f"{batch} x {crop}", "s/step": round(seconds, 3),
            "steps/run": steps, "h/run": round(seconds * steps / 3600, 2),
            f"h for {per_method} runs": round(seconds * steps * per_method / 3600, 2),
        })  # fmt: skip
    total = sum(r[f"h for {per_method} runs"] for r in rows)
    rows.append({"method": f"total ({profile} profile, {device})", "batch x crop": "", "s/step": "",
                 "steps/run": "", "h/run": "", f"h for {per_method} runs": round(total, 1)})  # fmt: skip
    if not gpu:
        print("paper profile: measured on this CPU; its GPU time is not measured (no GPU here): "
              "run make bench on a GPU for it")  # fmt: skip
    return rows


def write_scene(path: Path, size: int, dtype: str = "uint8", *, georeferenced: bool = True) -> None:
    """A synthetic RGB GeoTIFF of ``size`` x ``size``, written strip by strip (flat memory);
    ``uint16``: the same scene as 12-bit values (x 16, up to 4,095); without
    ``georeferenced``, no CRS or transform (predicted with ``--resolution 0.5``)."""
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": dtype,
               "crs": "EPSG:2056", "transform": from_origin(2_600_000, 1_200_000, 0.5, 0.5),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}  # fmt: skip
    if not georeferenced:
        del profile["crs"], profile["transform"]
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, 512):
            h = min(512, size - r)
            strip = np.full((3, h, size), 90, np.uint8)
            strip[:, :, ::400] = 200  # vertical roads every 400 px
            if r % 400 < 512:
                strip[:, (400 - r % 400) % 400 : (400 - r % 400) % 400 + 8, :] = 200
            strip += rng.integers(0, 20, strip.shape, dtype=np.uint8)
            data = strip if dtype == "uint8" else strip.astype(np.uint16) * 16 + 15
            dst.write(data, window=rasterio.windows.Window(0, r, size, h))


def random_checkpoint(path: Path, model_args: dict, **task_args) -> Path:
    """A U-Net of ``model_args`` with random weights saved as a checkpoint (speed does not
    depend on the weights)."""
    task = RoadSegTask(model="unet", model_args=model_args, **task_args)
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


def bench_scene(
    model_name: str, device: str, sizes: list[int], processes: list[int], dtypes: list[str]
) -> list[dict]:
    """Each size through ``roadseg predict`` with each number of processes: wall time, and
    the peak memory of each process (the processes' own lines; one process: its RSS)."""
    model_args, _, _ = MODELS[model_name]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = random_checkpoint(tmp / "model.ckpt", model_args)
        for size, dtype in ((size, dtype) for size in sizes for dtype in dtypes):
            scene = tmp / f"scene_{size}.tif"
            write_scene(scene, size, dtype)
            for n in processes:
                command = [sys.executable, "-m", "roadseg", "predict", str(scene), "--out", str(tmp / "out.tif"),
                           "--ckpt", str(ckpt), "--device", device, "--quiet", "--processes", str(n)]  # fmt: skip
                probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                         "r = subprocess.run(sys.argv[1:], check=True, stderr=subprocess.PIPE, text=True); "
                         "print(r.stderr); "
                         "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
                out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True,
                                     text=True, cwd=REPO).stdout  # fmt: skip
                seconds, max_rss_kb = float(out.split()[-2]), int(out.split()[-1])
                peaks = [float(line.split("peak memory ")[1].split()[0])
                         for line in out.splitlines() if "peak memory" in line]  # fmt: skip
                rows.append({"scene": f"{size}x{size} {dtype}", "processes": n, "megapixels": size * size / 1e6,
                             "seconds": seconds, "megapixels_per_s": size * size / 1e6 / seconds,
                             "peak_rss_mb_per_process": " / ".join(f"{p:.0f}" for p in peaks) or f"{max_rss_kb / 1024:.0f}"})  # fmt: skip
                (tmp / "out.tif").unlink()
            scene.unlink()
    return rows


def bench_inference(data: Path) -> dict:
    """benchmarks/inference.py with its defaults: the trained cpu.yaml checkpoint when there
    is one, the map 0 mosaic when ``roadseg maps`` wrote it, and a 4,000² scene."""
    from benchmarks import inference

    parser_defaults = argparse.Namespace(
        ckpt=str(REPO / "runs" / "cpu" / "checkpoints" / "best.ckpt"),
        scenes=str(REPO / "data" / "maps" / "map_0_image.tif") + ",4000",
        baseline=inference.BASELINE, tiles=False, data=data,
        exported=str(REPO / "benchmarks" / "out" / "cpu.onnx"),
        int8=str(REPO / "benchmarks" / "out" / "cpu.int8.onnx"),
    )  # fmt: skip
    return inference.run(parser_defaults)


def table(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"\n{title}", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "bench.json")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default=None, choices=list(MODELS),
                        help="default: resnet34-384 on a GPU, quick on a CPU; cpu: cpu.yaml's network")  # fmt: skip
    parser.add_argument(
        "--only",
        default="data,train,encoders,predict,scene,paper,inference",
        help="comma-separated sections",
    )
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument(
        "--predict-tiles", type=int, default=None, help="tiles measured per test set"
    )
    parser.add_argument("--scene-sizes", default=None, help="e.g. 2000,4000")
    parser.add_argument("--scene-processes", default="1,2", help="processes per scene, e.g. 1,2")
    parser.add_argument(
        "--scene-dtypes",
        default="uint8,uint16",
        help="pixel types of the scenes: uint8, and uint16 (the same scene as 12-bit values)",
    )
    args = parser.parse_args()
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gpu = device == "cuda"
    model = args.model or ("resnet34-384" if gpu else "quick")
    only = set(args.only.split(","))
    machine = (
        torch.cuda.get_device_name()
        if gpu
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    result = {"machine": machine, "device": device, "model": model, "torch": torch.__version__}
    print(f"roadseg benchmarks on {machine} ({device}), model {model}")
    sections = [
        ("data", "data pipeline: augmented crops/s in one worker", lambda: bench_data(args.data, MODELS[model][1])),
        ("train", "training: whole pipeline vs bare forward+backward loop",
         lambda: bench_train(args.data, model, device, args.train_steps or (30 if gpu else 6))),
        ("encoders", "cpu.yaml's network, smp timm- vs tu- EfficientNet-Lite0 encoder",
         lambda: bench_encoders(device, 10)),
        ("predict", "inference on the test tiles",
         lambda: bench_predict(args.data, model, device, args.predict_tiles or (144 if gpu else 12))),
        ("scene", "GeoTIFF scenes streamed through roadseg predict",
         lambda: bench_scene(model, device, [int(s) for s in (args.scene_sizes or ("4000,16000" if gpu else "2000,4000")).split(",")],
                             [int(n) for n in args.scene_processes.split(",")], args.scene_dtypes.split(","))),
        ("paper", "cost of make reproduce PROFILE=paper: bare training steps x steps per run",
         lambda: bench_paper(device)),
        ("inference", "", lambda: bench_inference(args.data)),
    ]  # fmt: skip
    for name, title, run in sections:
        if name in only:
            result[name] = run()
            if isinstance(result[name], list):  # inference prints its own tables
                print(table(title, result[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
