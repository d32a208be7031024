"""The light install: ``pip install 'roadseg[predict]'`` in a fresh virtual environment has
no torch, predicts a scene with an exported file without importing it, and a training
command there says in one line what to install.

Slow (about 1.5 minutes: the install, from the package registry or pip's cache)."""

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from roadseg.cli import main
from tests.conftest import smooth_map, write_raster, write_small_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Predicts, then reports which of the training stack's modules the process imported.
PREDICT = """
import json, sys
from roadseg.cli import main
status = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "pytorch_lightning",
               "segmentation_models_pytorch", "timm", "albumentations", "sklearn"})
print(json.dumps({"status": status, "imported": heavy}))
"""


@pytest.fixture(scope="module")
def light_python(tmp_path_factory) -> Path:
    """The Python of a fresh virtual environment with roadseg[predict] installed."""
    env = tmp_path_factory.mktemp("light") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-e", f"{REPO}[predict]"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    return python


def run(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_the_light_install_has_no_torch_and_predicts_with_an_exported_file(
    light_python, cil_root, tmp_path
):
    installed = run(light_python, "-m", "pip", "list", "--format", "json", cwd=tmp_path)
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"roadseg", "onnxruntime", "rasterio", "numpy"} <= names
    assert not names & {"torch", "pytorch-lightning", "segmentation-models-pytorch", "timm",
                        "albumentations", "scikit-learn", "onnx"}  # fmt: skip
    assert run(light_python, "-c", "import torch", cwd=tmp_path).returncode != 0

    ckpt = write_small_checkpoint(tmp_path / "a.ckpt")  # exported here, with the full install
    model = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(model), "--check-data",
                 str(cil_root)]) == 0  # fmt: skip
    write_raster(tmp_path / "scene.tif", smooth_map(160, 200, seed=3), crs="EPSG:32632",
                 transform=from_origin(5e5, 5.2e6, 0.5, 0.5))  # fmt: skip
    out = run(light_python, "-c", PREDICT, "predict", "scene.tif", "--ckpt", model,
              "--out", "mask.tif", "--output", "mask", "--quiet", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"status": 0, "imported": []}
    assert (tmp_path / "mask.tif").is_file()

    assert main(["predict", str(tmp_path / "scene.tif"), "--ckpt", str(model), "--out",
                 str(tmp_path / "full.tif"), "--output", "mask", "--quiet"]) == 0  # fmt: skip
    import rasterio

    with rasterio.open(tmp_path / "mask.tif") as a, rasterio.open(tmp_path / "full.tif") as b:
        assert np.array_equal(a.read(), b.read())  # the same file, the same mask

    # --png needs matplotlib, which the light install lacks: refused before any output
    drawn = run(light_python.parent / "roadseg", "predict", "scene.tif", "--ckpt", model, "--out",
                "drawn.tif", "--vector", "--png", "drawn.png", "--quiet", cwd=tmp_path)  # fmt: skip
    assert drawn.returncode == 2 and "--png draws with matplotlib" in drawn.stderr
    assert len(drawn.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("drawn*"))


def test_a_training_command_in_the_light_install_says_what_to_install(light_python, tmp_path):
    roadseg = light_python.parent / "roadseg"
    for args in (["fit", "--config", str(REPO / "configs" / "quick.yaml")],
                 ["export", "--ckpt", "x.ckpt", "--out", "x.onnx"]):  # fmt: skip
        done = run(roadseg, *args, cwd=tmp_path)
        assert done.returncode == 2
        assert "pip install 'roadseg[train" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
