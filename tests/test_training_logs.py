"""A run's TensorBoard event files hold the scalars of its metrics.csv, at the same steps,
also after resumes; ``tensorboard: false`` writes none; a logger the config names logs
beside roadseg's without moving the run's checkpoints or config."""

import csv
import importlib.util
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from roadseg.cli import main
from roadseg.logger import event_files, keep_events_before

REPO = Path(__file__).resolve().parents[1]


def fit_args(root: Path, run: Path, *extra: str) -> list[str]:
    """A tiny patch CNN, every step logged: a few seconds on a CPU."""
    return [
        "fit",
        "--config", str(REPO / "configs" / "patch_cnn.yaml"),
        "--model.model_args.width", "4",
        "--model.model_args.hidden", "8",
        "--data.root", str(root),
        "--data.crop_size", "32",
        "--data.batch_size", "2",
        "--data.samples_per_epoch", "6",
        "--data.augment", "none",
        "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run),
        *extra,
    ]  # fmt: skip


def csv_scalars(run: Path) -> Counter:
    """(name, step, float32 value) of every value in metrics.csv, ``epoch`` included."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Counter(
        (name, int(row["step"]), np.float32(value))
        for row in rows
        for name, value in row.items()
        if name != "step" and value != ""
    )


def tensorboard_scalars(folder: Path) -> Counter:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep them all
    events.Reload()
    return Counter(
        (tag, e.step, np.float32(e.value))
        for tag in events.Tags()["scalars"]
        for e in events.Scalars(tag)
    )


def test_event_files_hold_the_scalars_of_metrics_csv_across_resumes(cil_root, tmp_path):
    run = tmp_path / "run"
    assert main(fit_args(cil_root, run)) == 0
    assert len(event_files(run)) == 1 and not (run / "version_0").exists()
    first = tensorboard_scalars(run)
    assert first == csv_scalars(run)
    assert sorted(step for name, step, _ in first if name == "val_loss") == [2]
    assert not any(name == "hp_metric" for name, _, _ in first)
    epoch0 = str(shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "epoch0.ckpt"))

    # resumed at the end of epoch 0: epoch 1 is added to both logs
    assert main(fit_args(cil_root, run, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    resumed = tensorboard_scalars(run)
    assert resumed == csv_scalars(run) and first < resumed
    assert sorted(step for name, step, _ in resumed if name == "val_loss") == [2, 5]

    # resumed from epoch 0 again (as after a kill in epoch 1): epoch 1's scalars are cut
    # from the event files as from metrics.csv, and logged once, again
    assert main(fit_args(cil_root, run, "--trainer.max_epochs", "2", "--ckpt_path", epoch0)) == 0
    again = tensorboard_scalars(run)
    assert again == csv_scalars(run)
    assert steps(again) == steps(resumed)  # nothing lost, nothing twice
    assert len(event_files(run)) == 2  # the second process logged epoch 1 alone: gone


def steps(scalars: Counter) -> Counter:
    return Counter((name, step) for name, step, _ in scalars.elements())


def test_tensorboard_false_writes_no_event_files_and_named_loggers_log_beside(cil_root, tmp_path):
    """The off switch, and a logger the config names (Lightning's CSVLogger stands for
    MLflow or W&B here): it logs the same metrics, while checkpoints, metrics.csv and
    config.yaml stay in the run folder, and the saved config keeps it, not roadseg's."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    config = tmp_path / "logger.yaml"
    config.write_text(
        "trainer:\n  logger:\n    class_path: pytorch_lightning.loggers.CSVLogger\n"
        f"    init_args: {{save_dir: {elsewhere}, name: mine}}\n"
    )
    assert main(fit_args(cil_root, run, "--config", str(config), "--tensorboard", "false")) == 0
    assert not list(run.rglob("*tfevents*")) and not list(tmp_path.rglob("*tfevents*"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
    theirs = elsewhere / "mine" / "version_0" / "metrics.csv"
    assert theirs.read_text().splitlines()[0] == (run / "metrics.csv").read_text().splitlines()[0]
    saved = (run / "config.yaml").read_text()
    assert "tensorboard: false" in saved and "CSVLogger" in saved
    assert "RunCSVLogger" not in saved and "RunTensorBoardLogger" not in saved
    assert not list(elsewhere.rglob("*.ckpt")) and not list(elsewhere.rglob("config.yaml"))


def test_a_named_logger_without_its_package_is_one_line(cil_root, tmp_path, capsys):
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    config = tmp_path / "mlflow.yaml"
    config.write_text(
        "trainer:\n  logger:\n    class_path: pytorch_lightning.loggers.MLFlowLogger\n"
    )
    assert main(fit_args(cil_root, tmp_path / "run", "--config", str(config))) == 2
    err = capsys.readouterr().err
    assert f"roadseg: error: {config}: pytorch_lightning.loggers.MLFlowLogger needs mlflow" in err
    assert "pip install 'mlflow" in err and not (tmp_path / "run").exists()


def test_a_resume_cuts_event_files_to_the_steps_before_it(tmp_path):
    """Later steps go, and so does the torn record a killed run may leave at a file's end."""
    writer = SummaryWriter(str(tmp_path))
    for step in range(6):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.close()
    (path,) = event_files(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x20\x00\x00")  # the start of a record's length, cut short
    keep_events_before(tmp_path, 4)
    assert event_files(tmp_path) == [path]
    assert tensorboard_scalars(tmp_path) == Counter(
        ("loss", s, np.float32(1.0 / (s + 1))) for s in range(4)
    )
    keep_events_before(tmp_path, 4)  # nothing more to cut: the file is left as it is
    assert tensorboard_scalars(tmp_path) == Counter(
        ("loss", s, np.float32(1.0 / (s + 1))) for s in range(4)
    )
    keep_events_before(tmp_path, 0)  # a fresh run keeps no earlier events
    assert event_files(tmp_path) == []
