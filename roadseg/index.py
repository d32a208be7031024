"""Dataset roots -> a tile index: a ``pandas.DataFrame`` with one row per tile.

Columns: ``tile_id`` (the last run of digits in the file name), ``image``, ``mask``
(``None`` for unlabelled tiles), ``source`` (the root's folder name), ``split``
(``train`` for labelled tiles, ``test`` for the competition's test tiles),
``height`` and ``width``. Splits and extra datasets are operations on this table.

A tile is its content, not its path: the same file reached by a relative path, an
absolute one or a link, and a copy of it, are one tile (:func:`distinct_tiles`,
:class:`TileFinder`; :func:`content_hash` names it in a checkpoint's recorded split).

Known layouts, detected from the folders under the root:

- CIL competition (2020 and 2022): ``training/images``, ``training/groundtruth``,
  ``test/images``;
- generic labelled folder (``massachusetts-400``, your own data): ``images`` and
  ``groundtruth`` (or ``masks``);
- a plain folder of images (test tiles, scenes): the images themselves.
"""

from __future__ import annotations

import os
import re
from collections import Counter
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
    """Index several roots into one table (the first is the main dataset, the rest extras),
    each folder and each tile once however it is reached (:func:`distinct_roots`,
    :func:`distinct_tiles`): a copy of a tile under another root does not count twice."""
    return distinct_tiles(pd.concat([scan(r) for r in distinct_roots(roots)], ignore_index=True))


def distinct_roots(roots: list) -> list[str]:
    """``roots`` without ``None`` and without a folder reached a second time by another
    path (relative, absolute, through a link: compared resolved), first spelling kept."""
    seen: dict[str, str] = {}
    for root in roots:
        if root is not None:
            seen.setdefault(os.path.realpath(root), str(root))
    return list(seen.values())


def content_hash(path: str | Path) -> str:
    """SHA-256 of a tile file's bytes (hex), cached per process while the file is unchanged:
    the tile's identity in a checkpoint's recorded split, whatever its path."""
    from roadseg.identity import file_digest

    return file_digest(path).removeprefix("sha256:")


def tile_keys(images: list[str | Path]) -> list[str]:
    """What tells the tiles ``images`` apart: the same file reached by two paths has one
    key (its resolved path), and so do two files of the same bytes (SHA-256, computed only
    for files whose size another file shares, and cached per process)."""
    from roadseg.identity import file_digest

    real = [os.path.realpath(p) for p in images]
    sizes = [os.path.getsize(r) for r in real]
    shared = {s for s, n in Counter(sizes).items() if n > 1}
    return [file_digest(r) if s in shared else r for r, s in zip(real, sizes, strict=True)]


def distinct_tiles(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (reindexed) without the rows whose image is a tile of an earlier row: the
    same file by another path, or a copy of it (:func:`tile_keys`); the first row is kept."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.Series(tile_keys(list(frame["image"])), index=frame.index)
    return frame[~keys.duplicated()].reset_index(drop=True)


class TileFinder:
    """Which of some tiles a file is: the same path, the same file reached by another path
    (resolved), or a copy of it (same size, then the same SHA-256), as :func:`tile_keys`
    tells tiles apart.

    Args:
        images: the tiles' paths; :meth:`find` answers positions in this list.
    """

    def __init__(self, images: list[str | Path]):
        self.images = [str(p) for p in images]
        self._at = {p: k for k, p in reversed(list(enumerate(self.images)))}
        self._real: dict[str, int] | None = None
        self._sizes: dict[int, list[int]] | None = None

    def find(self, image: str | Path) -> int | None:
        """The position of the tile that ``image`` is, else ``None`` (the first of equals)."""
        if str(image) in self._at:
            return self._at[str(image)]
        if self._real is None:
            self._real = {}
            self._sizes = {}
            for k, path in enumerate(self.images):
                real = os.path.realpath(path)
                self._real.setdefault(real, k)
                self._sizes.setdefault(os.path.getsize(real), []).append(k)
        real = os.path.realpath(image)
        if not os.path.isfile(real):
            return None
        if real in self._real:
            return self._real[real]
        from roadseg.identity import file_digest

        same_size = self._sizes.get(os.path.getsize(real), [])
        digest = file_digest(real) if same_size else None
        return next((k for k in same_size if file_digest(self.images[k]) == digest), None)


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
