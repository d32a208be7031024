"""Fixtures: tiny synthetic rasters for unit tests, the real tiles for integration tests."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

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
