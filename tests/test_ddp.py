"""Two CPU processes (gloo) train together: different data in each, one model at the end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_see_different_data_and_end_with_one_model(cil_root, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    command = [
        sys.executable, "-m", "roadseg", "fit", "--config", str(REPO / "configs" / "quick.yaml"),
        "--data.root", str(cil_root), "--data.crop_size", "32", "--data.batch_size", "2",
        "--data.samples_per_epoch", "8", "--data.num_workers", "0",
        "--model.model_args.encoder_weights", "null", "--trainer.accelerator", "cpu",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_steps", "2",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.callbacks+", "tests.ddp_probe.RecordSamples",
    ]  # fmt: skip
    env = {**os.environ, "ROADSEG_PROBE_DIR": str(probe), "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    seen = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world"] for s in seen] == [2, 2]
    keys = [{tuple(k) for k in s["keys"]} for s in seen]
    assert len(keys[0]) == len(keys[1]) == 4  # 2 steps x batch 2 in each process
    assert not keys[0] & keys[1], "the two processes trained on the same samples"

    weights = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, saved[name]), name
