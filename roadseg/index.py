"""Dataset roots -> a tile index: a ``pandas.DataFrame`` with one row per tile.

Columns: ``tile_id`` (the last run of digits in the file name), ``image``, ``mask``
(``None`` for unlabelled tiles), ``source`` (the root's folder name), ``split``
(``train`` for labelled tiles, ``test`` for the competition's test tiles),
``height`` and ``width``. Splits and extra datasets are operations on this table.

Known layouts, detected from the folders under the root:

- CIL competition (2020 and 2022): ``training/images``, ``training/groundtruth``,
  ``test/images``;
- generic labelled folder (``massachusetts-400``, your own data): ``images`` and
  ``groundtruth`` (or ``masks``);
- a plain folder of images (test tiles, scenes): the images themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.io import RASTER_SUFFIXES, raster_shape

COLUMNS = ["tile_id", "image", "mask", "source", "split", "height", "width"]
_MASK_DIRS = ("groundtruth", "masks")


def tile_id(path: str | Path) -> int:
    """The tile's number: the last run of digits in the file name (never in the folder)."""
    runs = re.findall(r"\d+", Path(path).stem)
    if not runs:
        raise RoadsegError("file name has no digits to take a tile id from", path)
    return int(runs[-1])


def list_rasters(folder: str | Path) -> list[Path]:
    """Raster files in a folder (not recursive), sorted by tile id then name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RoadsegError("folder not found", folder)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith(".")
    ]
    if not files:
        raise RoadsegError(f"no images ({', '.join(RASTER_SUFFIXES)}) in this folder", folder)
    return sorted(files, key=lambda p: (tile_id(p), p.name))


def _rows(images: list[Path], masks: list[Path] | None, source: str, split: str) -> list[dict]:
    by_stem = {m.stem: m for m in masks} if masks is not None else {}
    if masks is not None:
        image_stems = {p.stem for p in images}
        orphans = sorted(m for m in masks if m.stem not in image_stems)
        if orphans:
            raise RoadsegError(f"mask without an image ({len(orphans)} in all)", orphans[0])
    rows = []
    for image in images:
        mask = None
        if masks is not None:
            mask = by_stem.get(image.stem)
            if mask is None:
                raise RoadsegError(
                    f"image without a mask (expected {image.stem}.* in {masks[0].parent if masks else 'the mask folder'})",
                    image,
                )
        bands, height, width = raster_shape(image)
        if bands not in (1, 3, 4):
            raise RoadsegError(
                f"image has {bands} bands; roadseg reads greyscale (1), RGB (3) or RGBA (4)", image
            )
        if mask is not None:
            _, mh, mw = raster_shape(mask)
            if (mh, mw) != (height, width):
                raise RoadsegError(f"mask is {mw}x{mh} but its image is {width}x{height}", mask)
        rows.append(
            dict(
                tile_id=tile_id(image),
                image=str(image),
                mask=None if mask is None else str(mask),
                source=source,
                split=split,
                height=height,
                width=width,
            )
        )
    return rows


def _mask_dir(folder: Path) -> Path | None:
    return next((folder / d for d in _MASK_DIRS if (folder / d).is_dir()), None)


def scan(root: str | Path) -> pd.DataFrame:
    """Index every tile under a dataset root (any known layout; see module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise RoadsegError(
            "dataset folder not found (run `make data`, or point the config at your data)", root
        )
    source = root.resolve().name
    rows: list[dict] = []
    if (root / "training" / "images").is_dir():  # CIL competition layout
        train = root / "training"
        mask_dir = _mask_dir(train)
        if mask_dir is None:
            raise RoadsegError("training/images has no training/groundtruth beside it", train)
        rows += _rows(list_rasters(train / "images"), list_rasters(mask_dir), source, "train")
        if (root / "test" / "images").is_dir():
            rows += _rows(list_rasters(root / "test" / "images"), None, source, "test")
    elif (root / "images").is_dir():  # generic images/ + groundtruth/
        mask_dir = _mask_dir(root)
        masks = list_rasters(mask_dir) if mask_dir is not None else None
        rows += _rows(list_rasters(root / "images"), masks, source, "train" if masks else "test")
    else:  # a plain folder of images
        rows += _rows(list_rasters(root), None, source, "test")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    _check_unique_ids(frame)
    return frame


def unlabelled_tiles(root: str | Path) -> pd.DataFrame:
    """The index of the unlabelled (test) tiles of a dataset root, or of a folder of images;
    refused when there are none."""
    frame = scan(root)
    tiles = frame[frame["split"] == "test"].reset_index(drop=True)
    if tiles.empty:
        raise RoadsegError(
            "no unlabelled test images found (expected test/images/ or a folder of images)", root
        )
    return tiles


def _check_unique_ids(frame: pd.DataFrame) -> None:
    dup = frame[frame.duplicated(["source", "split", "tile_id"], keep=False)]
    if len(dup):
        first = dup.sort_values("tile_id").iloc[:2]
        raise RoadsegError(
            f"two tiles share the id {first.tile_id.iloc[0]} ({Path(first.image.iloc[1]).name}); "
            "ids are the last digits of the file name and must be unique",
            first.image.iloc[0],
        )


def check_tiles(frame: pd.DataFrame, *, progress: bool = True) -> None:
    """Decode every image and mask of an index; raise RoadsegError at the first bad one."""
    from tqdm.auto import tqdm

    from roadseg.io import read_image, read_mask_grey

    for row in tqdm(list(frame.itertuples()), desc="checking", unit="tile", disable=not progress):
        read_image(row.image)
        if isinstance(row.mask, str):
            read_mask_grey(row.mask)


def scan_many(roots: list[str | Path]) -> pd.DataFrame:
    """Index several roots into one table (the first is the main dataset, the rest extras)."""
    return pd.concat([scan(r) for r in roots], ignore_index=True)


def split_train_val(
    frame: pd.DataFrame, *, val_fraction: float, seed: int, val_source: str | None = None
) -> pd.DataFrame:
    """Add a ``stage`` column (``train``/``val``/``test``): a seeded random validation split.

    Only tiles of ``val_source`` (default: the first source) can go to validation; the
    tiles of extra datasets always train.
    """
    frame = frame.copy()
    frame["stage"] = np.where(frame["split"] == "test", "test", "train")
    val_source = val_source or frame["source"].iloc[0]
    candidates = frame.index[(frame["split"] == "train") & (frame["source"] == val_source)]
    n_val = round(len(candidates) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(candidates) > 1:
        n_val = 1
    order = np.random.default_rng(seed).permutation(len(candidates))
    frame.loc[candidates[np.sort(order[:n_val])], "stage"] = "val"
    return frame
