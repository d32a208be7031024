"""A run killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run with the same seed ends: same weights, same metrics; also when the
run keeps an exponential moving average of its weights (``configs/cpu.yaml`` does)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roadseg.task import RoadSegTask

REPO = Path(__file__).resolve().parents[1]


def fit_command(root: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "roadseg",
        "fit",
        "--config",
        str(REPO / "configs" / "quick.yaml"),
        "--data.root",
        str(root),
        "--data.crop_size",
        "64",
        "--data.batch_size",
        "2",
        "--data.samples_per_epoch",
        "24",
        "--data.num_workers",
        "0",
        "--model.model_args.encoder_weights",
        "null",
        "--trainer.max_epochs",
        "3",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(run),
        *extra,
    ]


def final_metrics(run: Path) -> dict[str, str]:
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    return {k: v for k, v in rows[-1].items() if k.startswith("val_") or k == "epoch"}


EMA_CONFIG = """
trainer:
  callbacks:
    - class_path: pytorch_lightning.callbacks.EMAWeightAveraging
      init_args:
        decay: 0.9
"""


@pytest.mark.parametrize("ema", [False, True], ids=["plain", "ema"])
def test_killed_run_resumes_to_the_uninterrupted_result(cil_root, tmp_path, ema):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    extra: tuple[str, ...] = ()
    if ema:
        (tmp_path / "ema.yaml").write_text(EMA_CONFIG)
        extra = ("--config", str(tmp_path / "ema.yaml"))
    subprocess.run(
        fit_command(cil_root, tmp_path / "straight", *extra),
        check=True,
        env=env,
        capture_output=True,
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        fit_command(cil_root, killed, *extra),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] < 2

    subprocess.run(
        fit_command(cil_root, killed, *extra, "--ckpt_path", "last"),
        check=True,
        env=env,
        capture_output=True,
    )

    straight_ckpt = torch.load(
        tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    resumed_ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed_ckpt["global_step"] == straight_ckpt["global_step"]
    for name, tensor in straight_ckpt["state_dict"].items():
        assert torch.equal(tensor, resumed_ckpt["state_dict"][name]), name
    if ema:  # the checkpoint's weights are the average; the trained ones are kept beside them
        current = straight_ckpt["current_model_state"]
        assert any(not torch.equal(current[k], v) for k, v in straight_ckpt["state_dict"].items())
        for name, tensor in current.items():
            assert torch.equal(tensor, resumed_ckpt["current_model_state"][name]), name
        loaded = RoadSegTask.from_checkpoint(last).state_dict()
        assert loaded.keys() == straight_ckpt["state_dict"].keys()
        for name, tensor in loaded.items():
            assert torch.equal(tensor, resumed_ckpt["state_dict"][name]), name
    assert final_metrics(killed) == final_metrics(tmp_path / "straight")
    with open(killed / "metrics.csv", newline="") as f:
        epochs = {r["epoch"] for r in csv.DictReader(f) if r.get("val_loss")}
    assert epochs == {"0", "1", "2"}, "metrics.csv keeps the epochs logged before the kill"
