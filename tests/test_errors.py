"""Every row of docs/errors.md: the bad input is made, the command run, and the message the
docs show must be exactly what the user sees (``python -m tests.test_errors`` prints the table)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from roadseg.cli import main
from tests.conftest import make_cil_dataset, road_tile, write_raster

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _cil(tmp: Path) -> Path:
    return make_cil_dataset(tmp / "data" / "cil", n_train=3, n_test=1, size=32)


def _unlink(rel: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (_cil(tmp) / rel).unlink()

    return setup


def _replace(rel: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        make(_cil(tmp) / rel)

    return setup


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _checkpoint(tmp: Path, *, foreign: bool) -> None:
    from roadseg.models import create_model

    weights = create_model("linknet" if foreign else "unet", encoder="resnet18").state_dict()
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in weights.items()},
            "hyper_parameters": {"model": "unet", "model_args": {"encoder": "resnet18"}},
        },
        tmp / "model.ckpt",
    )


def _model_and_scene(tmp: Path, *scene: str) -> None:
    """A small checkpoint and a black 32x32 RGB scene at ``scene`` under ``tmp``."""
    _checkpoint(tmp, foreign=False)
    write_raster(tmp.joinpath(*scene), np.zeros((3, 32, 32), np.uint8))


def _foreign_onnx(path: Path) -> None:
    """A valid ONNX model (an identity) that roadseg did not export."""
    import onnx
    from onnx import TensorProto, helper

    info = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["probability"])], "g",
                              [info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [info("probability", TensorProto.FLOAT, [1, 3, 8, 8])])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    onnx.save(proto, str(path))


def _stale_readme(tmp: Path) -> None:
    (tmp / "table.md").write_text("| a |\n|---|\n| 0.9 |\n")
    (tmp / "README.md").write_text(
        "<!-- table: table.md -->\n| a |\n|---|\n| 0.8 |\n<!-- /table -->\n"
    )


def _submission(tmp: Path, edit: Callable[[list[str]], list[str]]) -> None:
    write_raster(tmp / "test" / "satimage_144.png", np.zeros((3, 32, 32), np.uint8))
    rows = ["id,prediction", *(f"144_{x}_{y},0" for x in (0, 16) for y in (0, 16))]
    (tmp / "sub.csv").write_text("\n".join(edit(rows)) + "\n")


def _config(tmp: Path, text: str) -> None:
    (tmp / "bad.yaml").write_text(text)


_LITE0_CONFIG = (
    "model:\n  model_args: {encoder: tu-tf_efficientnet_lite0, encoder_weights: null}\n"
    "data:\n  root: data/cil\n  num_workers: 0\n"
)


def _split_checkpoints(tmp: Path, *, changed: bool = False) -> None:
    """a.ckpt and b.ckpt, small checkpoints of data/cil that record their splits (seed 0
    and seed 1, half the tiles for validation); ``changed``: a validation tile of a.ckpt's
    is then overwritten with other pixels."""
    from tests.test_recorded_split import write_split_checkpoint

    _cil(tmp)
    with contextlib.chdir(tmp):
        write_split_checkpoint(Path("a.ckpt"), "data/cil")
        write_split_checkpoint(Path("b.ckpt"), "data/cil", seed=1)
    if changed:
        write_raster(tmp / "data/cil/training/images/satimage_3.png", road_tile(32, 9)[0])


def _resumed_on_other_files(tmp: Path) -> None:
    """runs/quick's last checkpoint records the split of data/cil as it was (seed 0, a
    fifth of the tiles for validation); then three labelled tiles are added to data/cil."""
    import pytorch_lightning as pl

    from tests.test_recorded_split import _add_labelled_tile, _datamodule

    record = _datamodule(_cil(tmp), seed=0, val_fraction=0.2).split_record()
    (tmp / "runs" / "quick" / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {}, "hyper_parameters": {}, "global_step": 2, "roadseg_split": record,
         "pytorch-lightning_version": pl.__version__},
        tmp / "runs" / "quick" / "checkpoints" / "last.ckpt",
    )  # fmt: skip
    for tid in (4, 5, 6):
        _add_labelled_tile(tmp / "data" / "cil", tid)
    _config(tmp, _LITE0_CONFIG + "trainer:\n  default_root_dir: runs/quick\n")


def _trained_run(tmp: Path) -> None:
    (tmp / "runs" / "quick" / "checkpoints").mkdir(parents=True)
    (tmp / "runs" / "quick" / "checkpoints" / "last.ckpt").write_bytes(b"")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing data folder": (lambda t: None, "roadseg index data/cil"),
    "empty data folder": (
        lambda t: (t / "data" / "cil").mkdir(parents=True),
        "roadseg index data/cil",
    ),
    "image without a mask": (
        _unlink("training/groundtruth/satimage_2.png"),
        "roadseg index data/cil",
    ),
    "mask without an image": (_unlink("training/images/satimage_2.png"), "roadseg index data/cil"),
    "image and mask of different sizes": (
        _replace(
            "training/groundtruth/satimage_1.png",
            lambda p: write_raster(p, np.zeros((16, 32), np.uint8)),
        ),
        "roadseg index data/cil",
    ),
    "truncated PNG": (
        _replace("training/images/satimage_3.png", _truncate),
        "roadseg index data/cil",
    ),
    "corrupt TIFF": (
        lambda t: (
            (t / "scenes").mkdir()
            or (t / "scenes" / "scene_1.tif").write_bytes(b"II*\x00" + b"\x00" * 60)
        ),
        "roadseg index scenes",
    ),
    "a file that is not an image": (
        _replace("test/images/satimage_144.png", lambda p: p.write_text("<html>")),
        "roadseg index data/cil",
    ),
    "2-band raster": (
        lambda t: write_raster(t / "scenes" / "scene_1.tif", np.zeros((2, 8, 8), np.uint8)),
        "roadseg index scenes",
    ),
    "float raster outside [0, 1]": (
        lambda t: write_raster(t / "scenes" / "scene_1.tif", np.full((3, 8, 8), 2.5, np.float32)),
        "roadseg index scenes --check --quiet",
    ),
    "mask of 0/1 values": (
        _replace(
            "training/groundtruth/satimage_1.png",
            lambda p: write_raster(p, (road_tile(32, 1)[1] // 255).astype(np.uint8)),
        ),
        "roadseg index data/cil --check --quiet",
    ),
    "colour mask": (
        _replace(
            "training/groundtruth/satimage_1.png",
            lambda p: write_raster(
                p, np.stack([np.full((32, 32), v, np.uint8) for v in (255, 0, 0)])
            ),
        ),
        "roadseg index data/cil --check --quiet",
    ),
    "two tiles with the same id": (
        _replace("test/images/satimage_0144.png", lambda p: write_raster(p, road_tile(32, 0)[0])),
        "roadseg index data/cil",
    ),
    "config with an unknown key": (
        lambda t: _config(t, "model:\n  learning_rate: 0.1\n"),
        "roadseg fit --config bad.yaml",
    ),
    "config with an unknown model": (
        lambda t: _config(t, "model:\n  model: unet3\n"),
        "roadseg fit --config bad.yaml",
    ),
    "fresh run into a trained run's folder": (
        lambda t: _config(t, "trainer:\n  default_root_dir: runs/quick\n") or _trained_run(t),
        "roadseg fit --config bad.yaml",
    ),
    "checkpoint from another model": (
        lambda t: (
            _checkpoint(t, foreign=True)
            or write_raster(t / "test" / "satimage_144.png", np.zeros((3, 32, 32), np.uint8))
        ),
        "roadseg submit --ckpt model.ckpt --data test",
    ),
    "file that is no checkpoint": (
        lambda t: (t / "model.ckpt").write_text("weights"),
        "roadseg submit --ckpt model.ckpt",
    ),
    "missing checkpoint": (
        lambda t: (t / "configs").mkdir() or (t / "configs" / "quick.yaml").write_text("{}\n"),
        "roadseg submit --ckpt runs/quick/checkpoints/best.ckpt",
    ),
    "options file with an unknown option": (
        lambda t: _config(t, "ckpt: model.ckpt\nthreshold: 0.3\n"),
        "roadseg submit --config bad.yaml",
    ),
    "reproduction plan without the profile asked for": (
        lambda t: _config(t, "methods:\n  - {name: a, config: a.yaml}\nprofiles:\n  smoke: {}\n"),
        "roadseg reproduce bad.yaml --profile paper",
    ),
    "reproduction plan whose evaluation names no method": (
        lambda t: _config(
            t,
            "methods:\n  - {name: unet, config: a.yaml}\nevaluations:\n"
            "  - {name: unet+tta, models: [unt], tta: true}\nprofiles:\n  cpu: {}\n",
        ),
        "roadseg reproduce bad.yaml --profile cpu",
    ),
    "README table older than its results file": (
        _stale_readme,
        "roadseg tables README.md --check",
    ),
    "submission with a wrong header": (
        lambda t: _submission(t, lambda r: ["Id,Prediction", *r[1:]]),
        "roadseg validate-submission sub.csv --images test",
    ),
    "submission with a missing id": (
        lambda t: _submission(t, lambda r: r[:-1]),
        "roadseg validate-submission sub.csv --images test",
    ),
    "submission with a duplicated id": (
        lambda t: _submission(t, lambda r: [*r, r[1]]),
        "roadseg validate-submission sub.csv --images test",
    ),
    "submission with an extra id": (
        lambda t: _submission(t, lambda r: [*r, "145_0_0,1"]),
        "roadseg validate-submission sub.csv --images test",
    ),
    "submission with a value other than 0/1": (
        lambda t: _submission(t, lambda r: [*r[:-1], "144_16_16,0.7"]),
        "roadseg validate-submission sub.csv --images test",
    ),
    "prediction written over its own input": (
        lambda t: _model_and_scene(t, "scene.tif"),
        "roadseg predict scene.tif --out scene.tif --ckpt model.ckpt",
    ),
    "output path that is an existing folder": (
        lambda t: [_checkpoint(t, foreign=False), _cil(t), (t / "submissions").mkdir()],
        "roadseg submit --ckpt model.ckpt --data data/cil --out submissions",
    ),
    "output inside a file": (
        lambda t: _cil(t) and (t / "notes.txt").write_text("x"),
        "roadseg index data/cil --csv notes.txt/tiles.csv",
    ),
    "missing input of predict": (
        lambda t: _checkpoint(t, foreign=False),
        "roadseg predict missing.tif --out roads.tif --ckpt model.ckpt",
    ),
    "submission that is not text": (
        lambda t: _submission(t, lambda r: r) or (t / "sub.csv").write_bytes(b"\x89PNG\r\n\x1a\n"),
        "roadseg validate-submission sub.csv --images test",
    ),
    "options file with a value of the wrong type": (
        lambda t: _config(t, "ckpt: model.ckpt\nwindow: large\n") or _checkpoint(t, foreign=False),
        "roadseg submit --config bad.yaml",
    ),
    "missing config (a typo)": (
        lambda t: (t / "configs").mkdir() or (t / "configs" / "quick.yaml").write_text("{}\n"),
        "roadseg fit --config configs/quik.yaml",
    ),
    "config key with a typo": (
        lambda t: _config(t, "data:\n  crop_sise: 64\n"),
        "roadseg fit --config bad.yaml",
    ),
    "submission scored against masks of other tiles": (
        lambda t: (
            _submission(t, lambda r: r)
            or write_raster(t / "truth" / "satimage_7.png", np.zeros((32, 32), np.uint8))
        ),
        "roadseg score sub.csv --truth truth",
    ),
    "submission with an id twice, scored": (
        lambda t: (
            write_raster(t / "truth" / "satimage_7.png", np.zeros((32, 32), np.uint8))
            and (t / "sub.csv").write_text(
                "id,prediction\n"
                + "".join(f"007_{x}_{y},0\n" for x in (0, 16) for y in (0, 16))
                + "007_16_0,1\n"
            )
        ),
        "roadseg score sub.csv --truth truth",
    ),
    "submission of tiles larger than the masks, scored": (
        lambda t: (
            write_raster(t / "truth" / "satimage_7.png", np.zeros((32, 32), np.uint8))
            and (t / "sub.csv").write_text(
                "id,prediction\n"
                + "".join(f"007_{x}_{y},0\n" for x in (0, 16, 32) for y in (0, 16, 32))
            )
        ),
        "roadseg score sub.csv --truth truth",
    ),
    "lines written to a format roadseg cannot write": (
        lambda t: write_raster(t / "mask.tif", np.zeros((32, 32), np.uint8)),
        "roadseg vectorize mask.tif --out roads.shp",
    ),
    "student pointed at a folder without pseudo-labels": (
        lambda t: (
            _cil(t)
            and (t / "pseudo").mkdir()
            or _config(
                t,
                "model:\n  model_args: {encoder: tu-tf_efficientnet_lite0, "
                "encoder_weights: null}\ndata:\n  root: data/cil\n  num_workers: 0\n",
            )
        ),  # fmt: skip
        "roadseg fit --config bad.yaml --data.pseudo_labels pseudo --trainer.fast_dev_run true",
    ),
    "student started from a checkpoint of another network": (
        lambda t: (
            _cil(t)
            and _checkpoint(t, foreign=False)
            or _config(
                t,
                "model:\n  model_args: {encoder: tu-tf_efficientnet_lite0, "
                "encoder_weights: null}\ndata:\n  root: data/cil\n  num_workers: 0\n",
            )
        ),  # fmt: skip
        "roadseg fit --config bad.yaml --model.init_from model.ckpt --trainer.fast_dev_run true",
    ),
    "ensemble member trained on the validation tiles": (
        _split_checkpoints,
        "roadseg evaluate --ckpt a.ckpt --ckpt b.ckpt",
    ),
    "run resumed on other files than it started with": (
        _resumed_on_other_files,
        "roadseg fit --config bad.yaml --ckpt_path last",
    ),
    "validation tile recorded in the checkpoint changed": (
        lambda t: _split_checkpoints(t, changed=True),
        "roadseg evaluate --ckpt a.ckpt",
    ),
    "checkpoint name with a typo": (
        lambda t: _checkpoint(t, foreign=False),
        "roadseg submit --ckpt modell.ckpt",
    ),
    "validate with a checkpoint name with a typo": (
        lambda t: (
            _config(t, "trainer:\n  default_root_dir: runs/quick\n")
            or _trained_run(t)
            or (t / "runs" / "quick" / "checkpoints" / "best.ckpt").write_bytes(b"")
        ),
        "roadseg validate --config bad.yaml --ckpt_path runs/quick/checkpoints/bst.ckpt",
    ),
    "an option on the command line that the model refuses": (
        lambda t: _cil(t) and _config(t, _LITE0_CONFIG),
        "roadseg fit --config bad.yaml --model.loss bcee --trainer.fast_dev_run true",
    ),
    "--png without --vector": (
        lambda t: _model_and_scene(t, "scene.tif"),
        "roadseg predict scene.tif --out roads.tif --ckpt model.ckpt --png roads.png",
    ),
    "--threads without --processes": (
        lambda t: _model_and_scene(t, "scene.tif"),
        "roadseg predict scene.tif --out roads.tif --ckpt model.ckpt --threads 2",
    ),
    "--merge with one checkpoint": (
        lambda t: _checkpoint(t, foreign=False),
        "roadseg submit --ckpt model.ckpt --merge vote",
    ),
    "--message without --upload": (
        lambda t: _checkpoint(t, foreign=False),
        "roadseg submit --ckpt model.ckpt --message first",
    ),
    "--image without --png": (
        lambda t: write_raster(t / "mask.tif", np.zeros((32, 32), np.uint8)),
        "roadseg vectorize mask.tif --out roads.gpkg --image scene.tif",
    ),
    "predictions written into the folder of scenes they read": (
        lambda t: _model_and_scene(t, "scenes", "a.tif"),
        "roadseg predict scenes --out scenes --ckpt model.ckpt",
    ),
    "a folder of scenes predicted into a file name": (
        lambda t: _model_and_scene(t, "scenes", "a.tif"),
        "roadseg predict scenes --out roads.tif --ckpt model.ckpt",
    ),
    "a prediction named as a picture": (
        lambda t: _model_and_scene(t, "scene.tif"),
        "roadseg predict scene.tif --out roads.png --ckpt model.ckpt",
    ),
    "an ONNX file without roadseg's metadata given as the model": (
        lambda t: (
            _foreign_onnx(t / "model.onnx"),
            write_raster(t / "scene.tif", np.zeros((3, 32, 32), np.uint8)),
        ),
        "roadseg predict scene.tif --out roads.tif --ckpt model.onnx",
    ),
    "two exported files given as an ensemble": (
        lambda t: (t / "a.onnx").write_bytes(b"") or (t / "b.onnx").write_bytes(b""),
        "roadseg predict scene.tif --out roads.tif --ckpt a.onnx --ckpt b.onnx",
    ),
    "tile size not a multiple of 16 (handled)": (
        lambda t: write_raster(t / "masks" / "pred_7.png", np.full((40, 40), 255, np.uint8)),
        "roadseg masks-to-submission masks --out sub.csv",
    ),
}


def run_case(name: str, tmp: Path) -> tuple[int, str]:
    """Make the case's bad input under ``tmp``, run its command there: (exit status, output)."""
    setup, command = CASES[name]
    setup(tmp)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(shlex.split(command)[1:])
    finally:
        os.chdir(cwd)
    text = err.getvalue() if status else out.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Seed set")]
    return status, lines[-1] if lines else ""


def doc_rows() -> dict[str, tuple[str, str, int]]:
    """The table of docs/errors.md: case -> (command, message, exit status)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`roadseg"):
            rows[cells[0]] = (
                cells[1].strip("`").strip(),
                cells[2].strip("`").strip(),
                int(cells[3]),
            )
    return rows


def test_the_doc_has_a_row_for_every_case_and_no_other():
    assert sorted(doc_rows()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_user_sees_what_the_doc_says(name, tmp_path):
    command, message, status = doc_rows()[name]
    assert command == CASES[name][1]
    got_status, got = run_case(name, tmp_path)
    assert (got_status, got) == (status, message)
    if status:
        assert re.match(r"roadseg: error: \S+: ", got), "an error names its file first"


if __name__ == "__main__":  # print the table rows for docs/errors.md
    import tempfile

    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            status, message = run_case(name, Path(tmp))
        print(f"| {name} | `{CASES[name][1]}` | `` {message} `` | {status} |")
