"""The exported file as a model (``--ckpt model.onnx``): it predicts, submits and evaluates
as its checkpoint does, from its metadata, without importing torch; what it cannot be is
refused in one line."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from roadseg.checkpoints import SPLIT_KEY, split_record
from roadseg.cli import main
from roadseg.index import scan
from tests.conftest import smooth_map, write_raster, write_small_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Runs the command line with the training stack unimportable: what roadseg[predict] has.
NO_TORCH = """
import sys
for name in ("torch", "torchvision", "pytorch_lightning", "lightning", "torchmetrics", "timm",
             "segmentation_models_pytorch", "albumentations", "sklearn", "jsonargparse", "onnx"):
    sys.modules[name] = None  # import raises ImportError
from roadseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def sharp_checkpoint(path: Path, root: Path | None = None) -> Path:
    """A small U-Net whose road logits are scaled by 40 around their median, so few pixels
    sit near a threshold (an untrained net's probabilities crowd around 0.45); with
    ``root``, it records that dataset and a split of it (two validation tiles)."""
    path = write_small_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["state_dict"]
    state["model.net.segmentation_head.0.weight"] *= 40
    state["model.net.segmentation_head.0.bias"] = (
        state["model.net.segmentation_head.0.bias"] * 40 + 8
    )
    if root is not None:
        index = scan(root)
        index = index[index["mask"].notna()].reset_index(drop=True)
        index["stage"] = ["val" if k < 2 else "train" for k in range(len(index))]
        ckpt["datamodule_hyper_parameters"] = {"root": str(root)}
        ckpt[SPLIT_KEY] = split_record(index, root)
    torch.save(ckpt, path)
    return path


def export(ckpt: Path, out: Path, check: Path, *extra: str) -> Path:
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--check-data", str(check),
                 *extra]) == 0  # fmt: skip
    return out


def scene(path: Path, h: int = 300, w: int = 420) -> Path:
    image = smooth_map(h, w, seed=5)
    return write_raster(path, image, crs="EPSG:32632", transform=from_origin(5e5, 5.2e6, 0.5, 0.5))


def no_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO),
                          "PATH": "/usr/bin:/bin"})  # fmt: skip


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_exported_file_predicts_a_scene_as_its_checkpoint_without_torch(cil_root, tmp_path):
    ckpt = sharp_checkpoint(tmp_path / "a.ckpt")
    model = export(ckpt, tmp_path / "model.onnx", cil_root, "--pixel-threshold", "0.6")
    src = scene(tmp_path / "scene.tif")
    for output in ("prob", "mask"):
        by_file = no_torch("predict", src, "--ckpt", model, "--out", f"f_{output}.tif",
                           "--output", output, "--quiet", cwd=tmp_path)  # fmt: skip
        assert by_file.returncode == 0, by_file.stderr
        assert "model.onnx's metadata" in by_file.stdout  # the decision, from the file
        assert "backend: onnx (the exported file" in by_file.stdout
        assert main(["predict", str(src), "--ckpt", str(ckpt), "--out", str(tmp_path / f"c_{output}.tif"),
                     "--output", output, "--pixel-threshold", "0.6", "--backend", "torch", "--quiet"]) == 0  # fmt: skip
    prob_file, prob_ckpt = read(tmp_path / "f_prob.tif"), read(tmp_path / "c_prob.tif")
    assert np.abs(prob_file - prob_ckpt).max() < 1e-4
    assert (read(tmp_path / "f_mask.tif") == read(tmp_path / "c_mask.tif")).all()
    # the run's identity holds the file's content, as it holds a checkpoint's
    with rasterio.open(tmp_path / "f_mask.tif") as out:
        models = out.tags()["roadseg_models"]
    assert models == f"sha256:{hashlib.sha256(model.read_bytes()).hexdigest()}"


def test_exported_file_runs_a_folder_of_scenes_without_torch(cil_root, tmp_path):
    model = export(sharp_checkpoint(tmp_path / "a.ckpt"), tmp_path / "model.onnx", cil_root)
    for name in ("one", "two"):
        scene(tmp_path / "scenes" / f"{name}.tif", 200 + 40 * len(name), 260)
    run = no_torch("predict", "scenes", "--ckpt", model, "--out", "out", "--output", "mask",
                   "--quiet", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(manifest["status"]) == ["done", "done"]
    again = no_torch("predict", "scenes", "--ckpt", model, "--out", "out", "--output", "mask",
                     "--quiet", cwd=tmp_path)  # fmt: skip
    assert "2 done before (skipped)" in again.stdout  # the same file: its runs are reused


def test_exported_file_submits_and_evaluates_as_its_checkpoint_without_torch(cil_root, tmp_path):
    ckpt = sharp_checkpoint(tmp_path / "a.ckpt", root=cil_root)
    model = export(ckpt, tmp_path / "model.onnx", cil_root)
    by_file = no_torch("submit", "--ckpt", model, "--out", "file.csv", "--quiet", cwd=tmp_path)
    assert by_file.returncode == 0, by_file.stderr
    assert main(["submit", "--ckpt", str(ckpt), "--out", str(tmp_path / "ckpt.csv"), "--quiet",
                 "--backend", "torch"]) == 0  # fmt: skip
    rows_file, rows_ckpt = pd.read_csv(tmp_path / "file.csv"), pd.read_csv(tmp_path / "ckpt.csv")
    assert (rows_file["id"] == rows_ckpt["id"]).all()
    assert (rows_file["prediction"] == rows_ckpt["prediction"]).mean() >= 0.9999

    evaluated = no_torch("evaluate", "--ckpt", model, "--out", "val.csv", "--quiet", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "split: the 2 validation tiles the checkpoint recorded" in evaluated.stdout
    main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "val_ckpt.csv"), "--quiet",
          "--backend", "torch"])  # fmt: skip
    assert pd.read_csv(tmp_path / "val.csv").equals(pd.read_csv(tmp_path / "val_ckpt.csv"))


def write_foreign_onnx(path: Path) -> Path:
    """A valid ONNX model (image -> probability) with no roadseg metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probability"])], "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [1, 3, 8, 8])],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    onnx.save(proto, str(path))
    return path


@pytest.fixture
def exported(cil_root, tmp_path) -> Path:
    return export(sharp_checkpoint(tmp_path / "a.ckpt"), tmp_path / "model.onnx", cil_root)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ckpt", "{foreign}"], "no roadseg metadata (missing roadseg_format"),
        (["--ckpt", "{garbage}"], "not a readable ONNX model"),
        (["--ckpt", "{missing}"], "exported model not found (roadseg export"),
        (["--ckpt", "{model}", "--ckpt", "{model}"], "an exported file is already its ensemble"),
        (["--ckpt", "{model}", "--metric", "accuracy"], "leave out --metric"),
        (["--ckpt", "{model}", "--backend", "torch"], "leave out --backend torch"),
        (["--ckpt", "{model}", "--device", "cuda"], "runs in ONNX Runtime on the CPU"),
    ],
)
def test_what_an_exported_file_cannot_be_is_refused_in_one_line(
    exported, tmp_path, capsys, args, says
):
    files = {
        "model": exported, "foreign": write_foreign_onnx(tmp_path / "foreign.onnx"),
        "missing": tmp_path / "nope.onnx", "garbage": tmp_path / "garbage.onnx",
    }  # fmt: skip
    files["garbage"].write_bytes(b"not a model at all")
    src = scene(tmp_path / "scene.tif", 100, 100)
    args = [a.format(**files) for a in args]
    assert main(["predict", str(src), *args, "--out", str(tmp_path / "o.tif"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()


def test_the_header_is_read_as_onnx_runtime_reads_it_and_a_cut_file_refused(exported, tmp_path):
    """The metadata, inputs and outputs are read from the protobuf without a session (the
    session is made while the scene is read): as ONNX Runtime's session reports them."""
    import onnxruntime as ort

    from roadseg.errors import RoadsegError
    from roadseg.exported import onnx_header, read_exported

    for path in (exported, write_foreign_onnx(tmp_path / "foreign.onnx")):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props, inputs, outputs = onnx_header(path.read_bytes())
        assert props == sess.get_modelmeta().custom_metadata_map
        assert inputs == [i.name for i in sess.get_inputs()]
        assert outputs == {o.name: o.shape for o in sess.get_outputs()}
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    with pytest.raises(RoadsegError, match="not a readable ONNX model"):
        read_exported(cut)


def with_proto(model: Path, out: Path, change) -> Path:
    """``model`` changed by ``change(proto)``, saved to ``out``."""
    import onnx

    proto = onnx.load(str(model))
    change(proto)
    onnx.save(proto, str(out))
    return out


def test_a_model_onnx_runtime_cannot_load_is_refused_before_any_output(exported, tmp_path):
    """Its header reads (metadata, inputs, outputs), ONNX Runtime refuses it: one line and
    nothing written, for one scene, a folder, and several processes (break-test)."""

    def future_opset(proto):
        proto.opset_import[0].version = 99

    bad = with_proto(exported, tmp_path / "bad.onnx", future_opset)
    scenes = tmp_path / "scenes"
    for name in ("a", "b"):
        scene(scenes / f"{name}.tif", 100, 100)
    runs = {
        "one": ["predict", scenes / "a.tif", "--out", tmp_path / "one.tif"],
        "folder": ["predict", scenes, "--out", tmp_path / "folder"],
        "processes": ["predict", scenes / "a.tif", "--out", tmp_path / "pp.tif", "--processes",
                      "2", "--chunk", "64"],
    }  # fmt: skip
    for name, args in runs.items():
        done = no_torch(*args, "--ckpt", bad, "--quiet", cwd=tmp_path)
        err = done.stderr.strip()
        assert done.returncode == 2, (name, err)
        assert err.count("roadseg: error:") == 1 and "not a readable ONNX model" in err, name
    made = {"one.tif", "one.tif.parts", "folder", "pp.tif", "pp.tif.parts", "one.qml"}
    assert not made & {p.name for p in tmp_path.iterdir()}


def test_odd_but_loadable_files_predict_and_odd_protobufs_are_refused_in_one_line(
    exported, tmp_path, capsys
):
    """A negative dimension is read signed; a field this reader does not take (a group)
    falls back to ONNX Runtime's own reading; a protobuf that is no model is one line."""

    def free_members(proto):
        proto.graph.output[1].type.tensor_type.shape.dim[1].dim_value = -1

    src = scene(tmp_path / "scene.tif", 100, 100)
    grouped = tmp_path / "grouped.onnx"
    grouped.write_bytes(exported.read_bytes() + bytes([0x7B, 0x7C]))  # field 15 as a group
    odd = [exported, with_proto(exported, tmp_path / "negdim.onnx", free_members), grouped]
    for model in odd:
        out = tmp_path / f"{model.stem}.tif"
        assert main(["predict", str(src), "--ckpt", str(model), "--out", str(out), "--quiet"]) == 0
        assert np.array_equal(read(out), read(tmp_path / "model.tif"))
    for name, data in {"graph_varint": b"\x38\x01", "output_varint": b"\x3a\x04\x62\x02\x10\x05",
                       "input_varint": b"\x3a\x02\x58\x01", "meta_varint": b"\x3a\x00\x70\x05"}.items():  # fmt: skip
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(data)
        assert (
            main(["predict", str(src), "--ckpt", str(path), "--out", str(tmp_path / "o.tif")]) == 2
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "roadseg: error:" in err, name


# A parent makes a predictor (its session in a thread), forks, and the child predicts with
# the parent's predictor and with one of its own; run in a fresh interpreter, so that no
# earlier test's library threads (GDAL, OpenMP) are forked with it.
FORK = """
import os, signal, sys
import numpy as np
from roadseg.predict import Predictor
image = np.random.default_rng(0).random((3, 96, 96), dtype=np.float32)
codes = []
for made in (False, True):  # forked while the parent's session is in the making, or after
    parent = Predictor.from_exported(sys.argv[1], progress=False)
    if made:
        parent.ready()
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a child waiting for a thread it does not have is killed: fails
        mine = parent.predict_image(image)
        fresh = Predictor.from_exported(sys.argv[1], progress=False).predict_image(image)
        os._exit(0 if np.allclose(mine, fresh, atol=1e-6) else 3)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(codes)
"""


def test_a_forked_child_makes_its_own_session(exported, tmp_path):
    """A child forked while (or after) the parent made its session does not wait for the
    parent's thread, which it does not have (break-test: it hung)."""
    done = subprocess.run([sys.executable, "-c", FORK, str(exported)], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0, 0]"


# A process that made a session starts a command with Python code between fork and exec
# (preexec_fn: as Ray starts its processes, and as a test once did): nothing of the
# parent's sessions may be freed in the child, where ONNX Runtime's thread pool waits forever.
PREEXEC = """
import signal, subprocess, sys, time
import numpy as np
from roadseg.predict import Predictor
signal.alarm(60)  # hung: killed, and the test fails
predictor = Predictor.from_exported(sys.argv[1], progress=False)
predictor.predict_image(np.zeros((3, 64, 64), np.float32))
del predictor  # the session lives on in the cache alone, as after an earlier command
time.sleep(2)  # its thread pool's threads come to rest, waiting on their condition variable
subprocess.run(["true"], preexec_fn=lambda: None, check=True)
print("started")
"""


def test_a_command_started_with_preexec_fn_after_a_session_does_not_hang(exported, tmp_path):
    done = subprocess.run([sys.executable, "-c", PREEXEC, str(exported)], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "started", done.stderr[-2000:]


def test_tune_refuses_to_store_thresholds_for_an_exported_file(exported, capsys):
    assert main(["tune", "--ckpt", str(exported)]) == 2
    assert "tune its checkpoint, then export again" in capsys.readouterr().err


def without_keys(model: Path, out: Path, *keys: str) -> Path:
    """``model`` as an older roadseg exported it: without ``keys`` in its metadata."""
    import onnx

    proto = onnx.load(str(model))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in keys]
    del proto.metadata_props[:]
    for key, value in kept:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out


def test_an_older_export_is_refused_where_it_cannot_say_what_it_needs(exported, tmp_path, capsys):
    old = without_keys(exported, tmp_path / "old.onnx", "roadseg_training")
    assert main(["evaluate", "--ckpt", str(old), "--out", str(tmp_path / "v.csv")]) == 2
    assert "records no validation split" in capsys.readouterr().err  # no split guessed
    older = without_keys(exported, tmp_path / "older.onnx", "roadseg_min_side")
    src = scene(tmp_path / "scene.tif", 100, 100)
    assert main(["predict", str(src), "--ckpt", str(older), "--out", str(tmp_path / "o.tif")]) == 2
    assert "exported by an older roadseg" in capsys.readouterr().err


def test_an_exported_ensemble_takes_another_merge_and_processes_without_torch(cil_root, tmp_path):
    a = sharp_checkpoint(tmp_path / "a.ckpt")
    b = write_small_checkpoint(tmp_path / "b.ckpt")
    model = tmp_path / "vote.onnx"
    assert main(["export", "--ckpt", str(a), "--ckpt", str(b), "--merge", "vote", "--out",
                 str(model), "--check-data", str(cil_root)]) == 0  # fmt: skip
    src = scene(tmp_path / "scene.tif", 200, 260)
    voted = no_torch("predict", src, "--ckpt", model, "--out", "vote.tif", "--output", "mask",
                     "--processes", "2", "--quiet", cwd=tmp_path)  # fmt: skip
    assert voted.returncode == 0, voted.stderr
    assert "majority vote" in voted.stdout  # the merge the file records
    mean = no_torch("predict", src, "--ckpt", model, "--out", "mean.tif", "--output", "mask",
                    "--merge", "mean", "--quiet", cwd=tmp_path)  # fmt: skip
    assert mean.returncode == 0, mean.stderr
    assert main(["predict", str(src), "--ckpt", str(a), "--ckpt", str(b), "--merge", "mean",
                 "--out", str(tmp_path / "ckpt.tif"), "--output", "mask", "--quiet"]) == 0  # fmt: skip
    assert (read(tmp_path / "mean.tif") == read(tmp_path / "ckpt.tif")).all()


@pytest.mark.parametrize("command", [["export", "--out", "{out}"], ["figures", "--out", "{out}"]])
def test_commands_that_need_the_checkpoint_say_so_for_an_exported_file(
    exported, tmp_path, capsys, command
):
    args = [a.format(out=tmp_path / "x.onnx") for a in command]
    assert main([args[0], "--ckpt", str(exported), *args[1:]]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "needs the checkpoint it was exported from" in errors[0]


def test_the_decision_of_an_older_export_is_read_from_its_origin():
    from roadseg.exported import ExportedModel

    def entry(origin: str) -> dict:
        decision = {"pixel": 0.4, "patch": 0.2, "close_gaps": 0, "min_area": 0, "origin": origin}
        return {"roadseg_decision": decision}

    overridden = ExportedModel(
        "x.onnx", entry("tuned for f1 on val, overridden by the options given"), 1
    )
    assert overridden.thresholds(False) is None
    tuned = ExportedModel("x.onnx", entry("tuned for accuracy without TTA on validation"), 1)
    assert tuned.thresholds(False).metric == "accuracy"
    assert ExportedModel("x.onnx", entry("defaults"), 1).thresholds(False) is None


def test_scenes_at_another_resolution_and_palette_scenes_predict_without_torch(exported, tmp_path):
    """Resampling to the model's 0.5 m and back (a 1 m scene), and a colour table read as
    RGB and resampled: no torch in either."""
    write_raster(tmp_path / "metre.tif", smooth_map(150, 170, seed=7), crs="EPSG:32632",
                 transform=from_origin(5e5, 5.2e6, 1.0, 1.0))  # fmt: skip
    indices = (smooth_map(150, 170, seed=8)[0] // 64).astype(np.uint8)
    path = write_raster(tmp_path / "palette.tif", indices, crs="EPSG:32632",
                        transform=from_origin(5e5, 5.2e6, 1.0, 1.0))  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(
            1, {0: (20, 20, 20), 1: (90, 90, 90), 2: (160, 150, 140), 3: (250, 250, 250)}
        )
    for name in ("metre", "palette"):
        done = no_torch("predict", f"{name}.tif", "--ckpt", exported, "--out", f"{name}_out.tif",
                        "--output", "prob", "--quiet", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "resampled x2 to the model's 0.5 m/px" in done.stdout
        prob = read(tmp_path / f"{name}_out.tif")
        assert prob.shape == (150, 170) and prob.min() >= 0 and prob.max() <= 1


def with_metadata(model: Path, out: Path, **values: str) -> Path:
    """``model`` with the metadata ``values`` (JSON text) in place of its own."""

    def change(proto):
        for entry in proto.metadata_props:
            if entry.key in values:
                entry.value = values[entry.key]

    return with_proto(model, out, change)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"roadseg_decision": '"0.5"'}, "roadseg_decision in its metadata is str, not a decision"),
        ({"roadseg_decision_tta": '{"pixel": 2, "patch": 0.25, "close_gaps": 0, "min_area": 0}'},
         "roadseg_decision_tta in its metadata has pixel 2, not a threshold"),
        ({"roadseg_imagery": "{}"}, "roadseg_imagery in its metadata is incomplete (KeyError"),
        ({"roadseg_imagery": '{"low": [0, 0, 0], "high": [1, 1, 1], "pooled": [0, 1], '
                             '"resolution": 0}'}, "roadseg_imagery in its metadata has resolution 0"),
        ({"roadseg_min_side": '"abc"'}, "roadseg_min_side in its metadata is 'abc'"),
        ({"roadseg_merge": '"max"'}, "roadseg_merge in its metadata is 'max'"),
        ({"roadseg_format": '"1"'}, "roadseg_format '1' in its metadata is not a format number"),
        ({"roadseg_imagery": '{"low": [0, 0, 0], "high": [1, 1, 1], "pooled": [0, 1], '
                             '"resolution": NaN}'}, "roadseg_imagery in its metadata has resolution nan"),
        ({"roadseg_imagery": '{"low": ["a", "b", "c"], "high": [1, 1, 1], "pooled": [0, 1]}'},
         "roadseg_imagery in its metadata has 2-98% ranges that are not"),
        ({"roadseg_imagery": '{"low": [1, 1, 1], "high": [1, 1, 1], "pooled": [0, 1]}'},
         "roadseg_imagery in its metadata has 2-98% ranges that are not"),
        ({"roadseg_decision": '{"pixel": 0.5, "patch": 0.25, "close_gaps": 0, "min_area": 0, '
                              '"members": 2}'}, "roadseg_decision in its metadata has members 2"),
        ({"roadseg_decision": '{"pixel": 0.5, "patch": 0.25, "close_gaps": 0, "min_area": 0, '
                              '"origin": 5}'}, "roadseg_decision in its metadata has origin 5"),
    ],
)  # fmt: skip
def test_an_edited_file_is_refused_in_one_line_naming_the_key_and_exits_cleanly(
    exported, tmp_path, values, says
):
    """Metadata of the wrong type or range (a file edited by hand) is one line naming the
    key, in a process that exits with 2 (break-test: tracebacks, and an abort, exit 134,
    when the command failed while its session was still being made in a daemon thread)."""
    bad = with_metadata(exported, tmp_path / "edited.onnx", **values)
    src = scene(tmp_path / "scene.tif", 100, 100)
    done = no_torch("predict", src, "--ckpt", bad, "--out", tmp_path / "o.tif", "--quiet",
                    cwd=tmp_path)  # fmt: skip
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "o.tif").exists()


def test_a_failure_while_the_session_is_made_exits_with_2_not_an_abort(exported, tmp_path):
    """A scene refused after the session was started (two bands: not RGB) is one line and
    exit 2; the session's thread is waited for, not killed inside ONNX Runtime."""
    two = write_raster(tmp_path / "two.tif", smooth_map(60, 60, seed=2)[:2], crs="EPSG:32632",
                       transform=from_origin(5e5, 5.2e6, 0.5, 0.5))  # fmt: skip
    for _ in range(3):
        done = no_torch("predict", two, "--ckpt", exported, "--out", tmp_path / "o.tif",
                        "--quiet", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "terminate" not in done.stderr


@pytest.mark.parametrize("batch", ["0", "-1"])
def test_a_batch_below_one_is_refused_not_an_empty_mask(exported, tmp_path, capsys, batch):
    src = scene(tmp_path / "scene.tif", 200, 200)
    args = ["predict", str(src), "--ckpt", str(exported), "--out", str(tmp_path / "o.tif"),
            "--window", "128", "--overlap", "16", "--batch-size", batch, "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"roadseg: error: batch size (--batch-size) must be at least 1, got {batch}"
    assert not (tmp_path / "o.tif").exists()


def test_counting_threads_for_processes_never_imports_torch():
    """``--processes`` splits the cores without importing torch (break-test: 2.4 s and the
    training stack loaded for an exported file, in the full install)."""
    code = ("import sys; from roadseg.backends import get_threads, set_threads; n = get_threads(); "
            "set_threads(1); assert 'torch' not in sys.modules; print(n)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1


def test_an_exported_file_follows_omp_num_threads_without_torch():
    """``OMP_NUM_THREADS=1`` (a Ray worker's, a laptop's) holds for an exported file's
    session as it does for PyTorch's; a value that is not a positive number is ignored."""
    code = ("import sys; from roadseg.backends import get_threads, onnx_threads; "
            "assert 'torch' not in sys.modules; print(get_threads(), onnx_threads())")  # fmt: skip

    def threads(value: str) -> str:
        env = {**os.environ, "OMP_NUM_THREADS": value}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert threads("1") == ["1", "1"]
    assert threads("3") == ["3", "3"]
    for bad in ("0", "two", "", "²", "2147483648"):
        count, onnx = threads(bad)
        assert int(count) >= 1 and onnx == "None"


def test_thresholds_say_whether_they_were_tuned_on_tta_maps():
    """Without TTA thresholds of its own, a checkpoint's TTA decision falls back to those
    tuned without TTA; the file says so, as the checkpoint does (break-test: they were
    labelled as tuned with TTA)."""
    from roadseg.exported import ExportedModel

    def model(**entry) -> ExportedModel:
        base = {"pixel": 0.4, "patch": 0.2, "close_gaps": 0, "min_area": 0, "tuned": True}
        return ExportedModel("x.onnx", {"roadseg_decision_tta": {**base, **entry}}, 1)

    assert model(tuned_on_tta=False).thresholds(True).tta is False
    assert model(tuned_on_tta=True).thresholds(True).tta is True
    fell_back = (
        "tuned for f1 without TTA on val, x.json; none tuned with TTA: run roadseg tune --tta"
    )
    assert model(origin=fell_back).thresholds(True).tta is False  # a file from before the key
    assert model(origin="tuned for f1 with TTA on val, x-tta.json").thresholds(True).tta is True
