"""ONNX export and the ONNX Runtime backend: the graph agrees with PyTorch at any size, the
export records its decision and refuses a disagreeing graph, the predictor's outputs do
not depend on the backend."""

import numpy as np
import pytest
import torch

from roadseg import export
from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.export import build_graph, read_metadata, session
from roadseg.models import create_model
from roadseg.postprocess import Decision
from roadseg.predict import Predictor
from tests.conftest import smooth_map, write_small_checkpoint

SMALL = {"encoder": "resnet18", "encoder_weights": None, "encoder_depth": 3,
         "decoder_channels": [16, 8, 8]}  # fmt: skip


def small_models():
    """Two untrained U-Nets, one seeing its input at half resolution (antialiased)."""
    torch.manual_seed(0)
    half = create_model("unet", **SMALL, input_scale=0.5).eval()
    full = create_model("unet", **SMALL).eval()
    return [half, full]


@pytest.mark.parametrize("shape", [(2, 3, 100, 130), (1, 3, 64, 64), (1, 3, 257, 191)])
def test_graph_agrees_with_pytorch_at_any_size(shape):
    models = small_models()
    sess = session(build_graph(models))
    x = torch.from_numpy(smooth_map(shape[2], shape[3] * shape[0], seed=1).astype(np.float32))
    x = (x / 255).reshape(3, shape[2], shape[0], shape[3]).permute(2, 0, 1, 3).contiguous()
    with torch.inference_mode():
        ref = [torch.sigmoid(m(x)).numpy() for m in models]
    prob, members = sess.run(["probability", "members"], {"image": x.numpy()})
    assert members.shape == (shape[0], 2, shape[2], shape[3])
    for k in range(2):
        assert np.abs(members[:, k : k + 1] - ref[k]).max() < 1e-4
    assert np.abs(prob - np.mean(ref, axis=0)).max() < 1e-4


def test_export_records_its_decision_and_refuses_a_disagreeing_graph(
    cil_root, tmp_path, monkeypatch, capsys
):
    a = write_small_checkpoint(tmp_path / "a.ckpt")
    b = write_small_checkpoint(tmp_path / "b.ckpt")
    out = tmp_path / "model.onnx"
    args = ["export", "--ckpt", str(a), "--ckpt", str(b), "--out", str(out),
            "--check-data", str(cil_root), "--pixel-threshold", "0.4"]  # fmt: skip
    assert main(args) == 0
    assert "2 members (mean)" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["roadseg_decision"]["pixel"] == 0.4
    assert meta["roadseg_decision"]["patch"] == 0.25
    assert len(meta["roadseg_decision"]["members"]) == 2
    assert [s["bytes"] for s in meta["roadseg_sources"]] == [a.stat().st_size, b.stat().st_size]
    assert meta["roadseg_check"]["max_abs_diff"] <= 1e-4
    assert meta["roadseg_imagery"]["resolution"] == 0.5
    assert session(out).get_inputs()[0].shape == ["batch", 3, "height", "width"]

    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    refused = tmp_path / "refused.onnx"
    assert main([*args[:5], "--out", str(refused), "--check-data", str(cil_root)]) == 2
    assert "disagrees with PyTorch" in capsys.readouterr().err
    assert not refused.exists()
    assert not list(tmp_path.glob("*.tmp*"))


def test_export_without_tiles_to_check_on_says_what_to_pass(tmp_path, capsys):
    ckpt = write_small_checkpoint(tmp_path / "a.ckpt")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--check-data" in capsys.readouterr().err


@pytest.mark.parametrize(("merge", "tta"), [("mean", True), ("vote", False)])
def test_predictor_outputs_do_not_depend_on_the_backend(merge, tta):
    image = smooth_map(300, 340, seed=2).astype(np.float32) / 255
    kwargs = {"window": 160, "overlap": 32, "tta": tta, "progress": False, "merge": merge,
              "decisions": [Decision(), Decision(pixel=0.45)]}  # fmt: skip
    ref = Predictor(small_models(), backend="torch", **kwargs).predict_image(image)
    onnx = Predictor(small_models(), backend="onnx", **kwargs)
    assert onnx.backend_name == "onnx"
    got = onnx.predict_image(image)
    if merge == "mean":
        assert np.abs(got - ref).max() < 1e-4
    else:  # shares of members voting road: equal but where a probability sits at a threshold
        assert np.mean(got == ref) > 0.999


def test_backend_choice_is_said_and_checked():
    from roadseg.backends import choose_backend

    assert choose_backend("auto", torch.device("cpu")) == ("onnx", "auto: fastest measured on CPUs")
    assert choose_backend("auto", torch.device("cuda"))[0] == "torch"
    with pytest.raises(RoadsegError, match="runs on the CPU"):
        choose_backend("onnx", torch.device("cuda"))
    with pytest.raises(RoadsegError, match="runs fp32"):
        Predictor(small_models(), backend="onnx", precision="bf16", progress=False)


def test_exported_file_runs_with_onnxruntime_and_numpy_alone(tmp_path):
    """The example script imports neither torch nor roadseg, and reads the decision."""
    import subprocess
    import sys

    ckpt = write_small_checkpoint(tmp_path / "a.ckpt")
    tiles = tmp_path / "tiles"
    from tests.conftest import road_tile, write_raster

    for i in (7, 8):
        write_raster(tiles / f"satimage_{i}.png", road_tile(64, i)[0])
    model = tmp_path / "m.onnx"
    assert (
        main(["export", "--ckpt", str(ckpt), "--out", str(model), "--check-data", str(tiles)]) == 0
    )
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path('examples/onnx_predict.py', run_name='__main__'); "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'roadseg', 'PIL', 'rasterio', 'cv2'}); "
        "assert not bad, bad"
    )  # fmt: skip
    out = tmp_path / "sub.csv"
    run = subprocess.run(
        [sys.executable, "-c", code, "x", str(model), str(tiles), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "pixel 0.5, patch 0.25" in run.stdout
    rows = out.read_text().splitlines()
    assert rows[0] == "id,prediction" and len(rows) == 1 + 2 * 16
    assert rows[1] == "007_0_0," + rows[1][-1]


def test_a_scene_predicted_by_onnx_runtime_is_pytorchs(tmp_path):
    import rasterio

    from tests.conftest import write_raster

    scene = write_raster(tmp_path / "scene.tif", smooth_map(260, 300, seed=6))
    outs = {}
    for backend in ("torch", "onnx"):
        predictor = Predictor(
            small_models(), backend=backend, window=128, overlap=32, progress=False
        )
        predictor.predict_scene(scene, tmp_path / f"{backend}.tif", chunk=96)
        with rasterio.open(tmp_path / f"{backend}.tif") as out:
            outs[backend] = out.read(1)
    assert np.abs(outs["onnx"] - outs["torch"]).max() < 1e-4
