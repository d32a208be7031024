"""Property test of the real CLI: whatever files and paths it is given, nothing is lost.

Hypothesis builds a small workspace (a dataset, masks, a submission, a scene, a checkpoint,
an options file), spoils one input of a command (random bytes, an empty file, a
truncated copy, a folder, a link, a missing file) and picks its output path (new, an
existing folder, one of its inputs by path, by symbolic or hard link, a path under a
file, an unrelated existing file). For every run:

- the exit status is 0 or 2, and a failure is one line ``roadseg: error: ...``;
- no traceback is printed;
- every file that was there before is byte-identical afterwards, except an output
  the command was asked to overwrite and did;
- no temporary or partial output is left behind, and a failed run creates no file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roadseg.cli import main
from tests.conftest import make_cil_dataset, road_tile, write_raster, write_small_checkpoint

# command -> (argv template, the inputs it reads that may be spoiled, whether it writes {out})
COMMANDS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "validate-submission": ("validate-submission {sub} --images {data}", ("sub", "data"), False),
    "score": ("score {sub} --truth {masks}", ("sub", "masks"), False),
    "masks-to-submission": ("masks-to-submission {masks} --out {out}", ("masks",), True),
    "index": ("index {data} --csv {out} --check --quiet", ("data",), True),
    "predict": (
        "predict {scene} --out {out} --ckpt {ckpt} --window 64 --overlap 16 --quiet",
        ("scene", "ckpt"),
        True,
    ),
    "submit": (
        "submit --config {opts} --data {data} --out {out} --quiet",
        ("opts", "ckpt", "data"),
        True,
    ),
}
# Lightning's commands: {out} is the run folder they write into
LIGHTNING = {
    "fit": ("fit --config {config} --trainer.default_root_dir {out}", ("config", "data"), True),
    "validate": (
        "validate --config {config} --ckpt_path {run_ckpt} --trainer.default_root_dir {out}",
        ("config", "data", "run_ckpt"),
        True,
    ),
}
SPOILS = ("none", "random", "empty", "truncated", "folder", "symlink", "missing", "dangling")
OUTPUTS = (
    "new", "nested-new", "existing-file", "folder", "same-as-input", "symlink-to-input",
    "hardlink-to-input", "under-a-file",
)  # fmt: skip
RUNS: Counter = Counter()  # (command, exit status) -> runs, printed at the end of the module
MESSAGES: Counter = Counter()  # (command, error line) -> runs


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    """A small, valid roadseg checkpoint (an untrained U-Net), copied into each workspace."""
    return write_small_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model.ckpt")


TINY_RUN = """\
seed_everything: 0
trainer: {{max_epochs: 1, limit_train_batches: 1, limit_val_batches: 1, accelerator: cpu,
  enable_progress_bar: false, enable_model_summary: false, logger: null}}
model:
  model: unet
  model_args: {{encoder: resnet18, encoder_weights: null, encoder_depth: 3,
    decoder_channels: [16, 8, 8]}}
data: {{root: {root}, crop_size: 32, batch_size: 2, samples_per_epoch: 2, num_workers: 0}}
"""


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint that Lightning wrote (optimizer state, versions), for validate."""
    root = tmp_path_factory.mktemp("lightning")
    data = make_cil_dataset(root / "data", n_train=2, n_test=1, size=32)
    (root / "run.yaml").write_text(TINY_RUN.format(root=data))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["fit", "--config", str(root / "run.yaml"),
                     "--trainer.default_root_dir", str(root / "run")]) == 0  # fmt: skip
    return root / "run" / "checkpoints" / "best.ckpt"


def _workspace(root: Path, ckpt: Path, run_ckpt: Path | None = None) -> dict[str, Path]:
    """Valid inputs of every command under ``root``."""
    data = make_cil_dataset(root / "data", n_train=2, n_test=1, size=32)
    masks = root / "masks"  # the truth of the test tile that sub.csv covers
    write_raster(masks / "satimage_144.png", road_tile(32, 144)[1])
    sub = root / "sub.csv"
    rows = [f"144_{x}_{y},{(x + y) // 16 % 2}" for x in (0, 16) for y in (0, 16)]
    sub.write_text("id,prediction\n" + "\n".join(rows) + "\n")
    scene = write_raster(root / "scene.tif", road_tile(48, 3)[0][:3])
    shutil.copyfile(ckpt, root / "model.ckpt")
    opts = root / "opts.yaml"
    opts.write_text(f"ckpt: {root / 'model.ckpt'}\nwindow: 64\noverlap: 16\n")
    config = root / "run.yaml"
    config.write_text(TINY_RUN.format(root=data))
    paths = {"data": data, "masks": masks, "sub": sub, "scene": scene,
             "ckpt": root / "model.ckpt", "opts": opts, "config": config}  # fmt: skip
    if run_ckpt is not None:
        shutil.copyfile(run_ckpt, root / "run.ckpt")
        paths["run_ckpt"] = root / "run.ckpt"
    return paths


def _a_file_in(path: Path) -> Path:
    """The file a spoil aims at: the path itself, or one file inside a folder input."""
    if path.is_dir():
        return next(iter(sorted(p for p in path.rglob("*") if p.is_file())), path)
    return path


def _spoil(target: Path, how: str, payload: bytes, cut: float, other: Path) -> None:
    if how == "none":
        return
    if how == "folder":
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        target.mkdir()
        return
    target = _a_file_in(target)
    if how == "random":
        target.write_bytes(payload)
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * cut)])
    elif how in ("symlink", "missing", "dangling"):
        target.unlink()
        if how == "symlink":
            target.symlink_to(other)
        elif how == "dangling":
            target.symlink_to(target.parent / "no-such-file")


def _output(root: Path, how: str, inputs: list[Path]) -> Path:
    first_file = _a_file_in(inputs[0]) if inputs[0].exists() else inputs[0]
    if how == "new":
        return root / "out.csv"
    if how == "nested-new":
        return root / "new" / "deeper" / "out.csv"
    if how == "existing-file":
        (root / "old.csv").write_text("an older output\n")
        return root / "old.csv"
    if how == "folder":
        (root / "out-folder").mkdir()
        return root / "out-folder"
    if how == "same-as-input":
        return first_file
    if how == "symlink-to-input":
        (root / "link.csv").symlink_to(first_file.resolve())
        return root / "link.csv"
    if how == "hardlink-to-input":
        if first_file.is_file() and not first_file.is_symlink():
            os.link(first_file, root / "hard.csv")
            return root / "hard.csv"
        return first_file
    (root / "a-file").write_text("x")  # under-a-file
    return root / "a-file" / "out.csv"


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_is_lost_and_no_error_is_a_traceback(command, checkpoint_file, data):
    _run_one(command, COMMANDS[command], checkpoint_file, None, data)


@pytest.mark.parametrize("command", sorted(LIGHTNING))
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_lightning_commands_lose_nothing_and_leave_nothing_when_they_fail(
    command, checkpoint_file, run_checkpoint, data
):
    """fit and validate with spoiled configs, data and checkpoints, into run folders that
    are new, existing, inputs or under a file: exit 0 or 2, one line, and a failed run
    leaves no config.yaml, provenance.json or version folder behind."""
    _run_one(command, LIGHTNING[command], checkpoint_file, run_checkpoint, data)


def _run_one(command, spec, checkpoint_file, run_checkpoint, data) -> None:
    template, spoilable, writes = spec
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = _workspace(root, checkpoint_file, run_checkpoint)
        victim = data.draw(st.sampled_from(spoilable), label="input")
        how = data.draw(st.sampled_from(("none", *SPOILS)), label="spoil")  # none: 2/9
        payload = data.draw(st.binary(min_size=1, max_size=300), label="random bytes")
        cut = data.draw(st.floats(0.05, 0.95), label="truncate at")
        _spoil(paths[victim], how, payload, cut, other=paths["sub"])
        inputs = [paths[k] for k in spoilable]
        out_how = data.draw(st.sampled_from(("new", *OUTPUTS)), label="output") if writes else "new"
        out = _output(root, out_how, inputs)
        argv = template.format(out=out, **paths).split()

        before = _snapshot(root)
        stdout, stderr = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                status = main(argv)  # an exception here is a traceback: the test fails
        finally:
            os.chdir(cwd)
        RUNS[(command, status)] += 1

        err = stderr.getvalue()
        assert status in (0, 2), (argv, status, err)
        assert "Traceback" not in err + stdout.getvalue()
        if status == 2:
            errors = [ln for ln in err.splitlines() if ln.startswith("roadseg: error: ")]
            assert len(errors) == 1, err
            MESSAGES[(command, errors[0].replace(str(root.resolve()), "").replace(tmp, ""))] += 1
        after = _snapshot(root)
        overwritten = out.resolve() if status == 0 and writes else None
        for path, content in before.items():
            if path.resolve() == overwritten and out_how == "existing-file":
                continue
            assert after.get(path) == content, f"{argv}: {path} changed (status {status})"
        new = set(after) - set(before)
        assert not [p for p in new if p.name.endswith(".tmp")], new
        if status == 2 or not writes:
            assert not new, f"{argv} failed but left {new}"
        elif command in LIGHTNING:  # a run folder: everything it wrote is inside it
            assert all(out.resolve() in p.resolve().parents for p in new), new
        else:
            assert new <= {out} or out_how == "existing-file", new


def teardown_module() -> None:
    """Print what the property test ran (pytest -s shows it)."""
    for (command, status), n in sorted(RUNS.items()):
        print(f"property runs: {command:<20} exit {status}: {n}")
    for (command, message), n in sorted(MESSAGES.items()):
        print(f"property errors: {command:<20} {n:>3} x {message}")
