"""Fixtures: tiny synthetic rasters for unit tests, the real tiles for integration tests."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

# The suite's references are CPU figures (ONNX Runtime on the CPU, fp32 against PyTorch,
# committed tables): on a machine with a GPU, `auto` devices would pick CUDA (bf16, the
# torch backend) and compare other numbers. The GPU is hidden from the suite, and from the
# commands its tests start, unless ROADSEG_TEST_CUDA=1 (for tests written for CUDA).
if os.environ.get("ROADSEG_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

TILE = 32  # side of the tiles of the synthetic maps
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROADSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real competition tiles; a missing folder fails in CI and skips elsewhere."""
    if not (SHARED_DATA / "cil-2022").is_dir():
        message = f"real tiles not found at {SHARED_DATA} (set ROADSEG_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


def write_raster(path: Path, array: np.ndarray, **profile) -> Path:
    """Write ``(bands, H, W)`` or ``(H, W)`` pixels with rasterio (driver from the suffix)."""
    arr = array[None] if array.ndim == 2 else array
    driver = {".png": "PNG", ".tif": "GTiff", ".tiff": "GTiff", ".jpg": "JPEG"}[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=arr.shape[2],
            height=arr.shape[1],
            count=arr.shape[0],
            dtype=arr.dtype,
            **profile,
        ) as dst:
            dst.write(arr)
    return path


def road_tile(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic RGBA tile with straight grey roads on green, and its {0,255} mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(2):
        c, w = int(rng.integers(0, size - 8)), int(rng.integers(4, 9))
        if rng.random() < 0.5:
            mask[:, c : c + w] = 255
        else:
            mask[c : c + w, :] = 255
    image = np.empty((4, size, size), np.uint8)
    noise = rng.integers(0, 30, (size, size))
    image[0] = np.where(mask, 120, 40) + noise
    image[1] = np.where(mask, 120, 110) + noise
    image[2] = np.where(mask, 120, 50) + noise
    image[3] = 255
    return image, mask


def make_cil_dataset(
    root: Path, *, n_train: int = 6, n_test: int = 2, size: int = 64, first_test: int = 144
) -> Path:
    """A tiny dataset in the CIL 2022 layout (RGBA images, {0,255} masks)."""
    for i in range(1, n_train + 1):
        image, mask = road_tile(size, i)
        write_raster(root / "training" / "images" / f"satimage_{i}.png", image)
        write_raster(root / "training" / "groundtruth" / f"satimage_{i}.png", mask)
    for i in range(first_test, first_test + n_test):
        write_raster(root / "test" / "images" / f"satimage_{i}.png", road_tile(size, i)[0])
    return root


@pytest.fixture
def cil_root(tmp_path: Path) -> Path:
    return make_cil_dataset(tmp_path / "cil")


def smooth_map(h: int, w: int, seed: int) -> np.ndarray:
    """A textured RGB map: random noise upsampled 4x, so neighbouring pixels are alike."""
    noise = np.random.default_rng(seed).random((h // 4, w // 4, 3)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return (img * 255).astype(np.uint8).transpose(2, 0, 1)


@pytest.fixture
def mapped_dataset(tmp_path):
    """One 4x3 map of 32-px tiles with a road grid, cut into a CIL-layout dataset (shuffled
    ids) and one test tile; returns the root, the map image and mask, and each id's place."""
    cols, rows = 4, 3
    big = smooth_map(rows * TILE, cols * TILE, seed=3)
    road = np.zeros((rows * TILE, cols * TILE), np.uint8)
    road[20:26, :] = road[:, 40:45] = road[70:74, :] = 255  # roads crossing tile edges
    ids = np.random.default_rng(5).permutation(cols * rows) + 1
    places = {}
    for k, (r, c) in enumerate((r, c) for r in range(rows) for c in range(cols)):
        tid = int(ids[k])
        cut = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
        if (r, c) == (1, 1):  # a test tile: imagery only
            write_raster(
                tmp_path / "d" / "test" / "images" / f"satimage_{tid}.png", big[:, cut[0], cut[1]]
            )
        else:
            write_raster(
                tmp_path / "d" / "training" / "images" / f"satimage_{tid}.png",
                big[:, cut[0], cut[1]],
            )
            write_raster(
                tmp_path / "d" / "training" / "groundtruth" / f"satimage_{tid}.png", road[cut]
            )
        places[tid] = (c, r)
    return tmp_path / "d", big, road, places


def write_small_checkpoint(path: Path) -> Path:
    """An untrained small U-Net saved as a roadseg checkpoint (fast to run anywhere)."""
    import torch

    from roadseg.models import create_model

    model_args = {"encoder": "resnet18", "encoder_weights": None, "encoder_depth": 3,
                  "decoder_channels": [16, 8, 8]}  # fmt: skip
    weights = create_model("unet", **model_args).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()},
                "hyper_parameters": {"model": "unet", "model_args": model_args}}, path)  # fmt: skip
    return path
