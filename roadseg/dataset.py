"""Datasets over a tile index: random augmented windows for training, whole tiles for evaluation.

Samples are dicts: ``image`` float32 ``(3, H, W)`` in [0, 1], ``mask`` float32
``(1, H, W)`` in {0, 1}, ``patches`` float32 ``(1, rows, cols)`` (the competition's
patch labels from the raw grey mask, evaluation only), ``tile_id``, ``index`` and (training)
``seed``, the sample seed that chose its window and augmentation.

Self-training adds tiles whose "mask" is a teacher's probability map (index column
``pseudo`` true; :func:`roadseg.pseudo.with_pseudo_labels`): their pixels train on those soft targets,
and every training sample then carries a ``weight`` ``(1, H, W)``: 1 on labelled pixels,
0 on pseudo-labelled pixels the teacher is unsure of.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from rasterio.windows import Window
from torch.utils.data import Dataset, DistributedSampler

from roadseg.io import MASK_THRESHOLD, binarize_mask, image_to_rgb, mask_to_grey, read_raster
from roadseg.maps import context_image
from roadseg.patches import patch_labels
from roadseg.transforms import build_transform

CACHE_MAX_PIXELS = 4096 * 4096  # larger rasters are read window by window, never kept


class TileReader:
    """Reads windows of a tile's image and mask; small rasters are decoded once and kept.

    A row with a ``scale`` other than 1 (a source of another ground resolution than the
    model's; :meth:`roadseg.datamodule.RoadDataModule.setup`) is resampled whole to its
    ``height`` x ``width``: images by cubic convolution, masks bilinearly (then the road
    rule on the grey levels). ``radiometry``: per ``source``, how its pixels become [0, 1]
    (:class:`roadseg.imagery.Radiometry`; sources not named: 8-bit / 255 as ever).
    """

    def __init__(self, frame: pd.DataFrame, *, cache: bool = True, radiometry: dict | None = None):
        self.frame = frame.reset_index(drop=True)
        self.rows = self.frame.to_dict("records")  # plain dicts: no pandas lookup per sample
        self.cache_max_pixels = CACHE_MAX_PIXELS if cache else 0
        self.radiometry = radiometry or {}
        self._cache: dict[tuple[int, str], np.ndarray] = {}

    def _read(self, row: dict, column: str, window: Window | None = None) -> np.ndarray:
        if row.get("scale", 1.0) == 1.0:
            return read_raster(row[column], window)
        from rasterio.enums import Resampling

        how = Resampling.cubic if column == "image" else Resampling.bilinear
        return read_raster(row[column], out_shape=(int(row["height"]), int(row["width"])),
                           resampling=how)  # fmt: skip

    def raw(self, i: int, column: str, window: Window | None) -> np.ndarray:
        """Raw ``(bands, h, w)`` pixels of the tile's image or mask, whole or one window."""
        row = self.rows[i]
        if row["height"] * row["width"] > self.cache_max_pixels and row.get("scale", 1.0) == 1.0:
            return read_raster(row[column], window)
        key = (i, column)
        if key not in self._cache:
            self._cache[key] = self._read(row, column)
        arr = self._cache[key]
        if window is None:
            return arr
        r, c = int(window.row_off), int(window.col_off)
        return arr[:, r : r + int(window.height), c : c + int(window.width)]

    def image(self, i: int, window: Window | None = None) -> np.ndarray:
        raw = self.raw(i, "image", window)
        radiometry = self.radiometry.get(self.rows[i].get("source"))
        if radiometry is None:
            return image_to_rgb(raw, self.rows[i]["image"])
        raw = np.repeat(raw, 3, axis=0) if raw.shape[0] == 1 else raw[:3]
        return radiometry.apply(raw)

    def mask_grey(self, i: int, window: Window | None = None) -> np.ndarray:
        if self.rows[i].get("pseudo") is True:  # a teacher's probabilities, 0-255
            return self.raw(i, "mask", window)[0].astype(np.float32) / 255.0
        return mask_to_grey(self.raw(i, "mask", window), self.rows[i]["mask"])


class RandomWindowDataset(Dataset):
    """Training samples: a random ``crop_size`` window of a tile, augmented.

    Keys are ``(tile index, sample seed)`` pairs from :class:`SeededSampler`, so a
    sample's window and augmentation depend only on the seed: runs are repeatable and
    a resumed run sees the same data as an uninterrupted one.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        crop_size: int,
        augment: str = "d4",
        mask_threshold: float = MASK_THRESHOLD,
        cache: bool = True,
        places: pd.DataFrame | None = None,
        pseudo_confidence: float = 0.0,
        radiometry: dict | None = None,
    ):
        """``places``: ``map``, ``col``, ``row`` of each row of ``frame`` (all of them
        training tiles; :func:`roadseg.maps.place_tiles`). With it, a window may reach
        across the tile's edges into the training tiles beside it, so the network sees
        roads that continue past 400 px; it never covers a tile that is not in ``frame``
        (a validation or test tile, or a missing one).

        ``pseudo_confidence``: pixels of pseudo-labelled tiles whose teacher probability p
        has max(p, 1 - p) below this get weight 0 (0: every pixel counts, as a soft target).

        ``radiometry``: per source, how its pixels become [0, 1] (:class:`TileReader`).
        """
        self.reader = TileReader(frame, cache=cache, radiometry=radiometry)
        self.pseudo = "pseudo" in frame.columns and bool(frame["pseudo"].any())
        self.pseudo_confidence = pseudo_confidence
        self.crop_size = crop_size
        self.transform = build_transform(augment)
        self.mask_threshold = mask_threshold
        self.at: dict[tuple[int, int, int], int] | None = None
        if places is not None:
            self.at = {
                (int(m), int(c), int(r)): i
                for i, (m, c, r) in enumerate(
                    zip(places["map"], places["col"], places["row"], strict=True)
                )  # fmt: skip
            }
            self.place = {i: key for key, i in self.at.items()}

    def __len__(self) -> int:
        return len(self.reader.frame)

    def _window_tiles(self, i: int, top: int, left: int, ch: int, cw: int):
        """The (tile index, window in that tile, offset in the crop) pieces of a window at
        ``top``, ``left`` relative to tile ``i``; None when it covers a tile not known."""
        row = self.reader.rows[i]
        h, w = int(row["height"]), int(row["width"])
        m, c, r = self.place[i]
        pieces = []
        for dy in range(top // h, (top + ch - 1) // h + 1):
            for dx in range(left // w, (left + cw - 1) // w + 1):
                j = self.at.get((m, c + dx, r + dy))
                if j is None:
                    return None
                if (self.reader.rows[j]["height"], self.reader.rows[j]["width"]) != (h, w):
                    return None
                y0, x0 = max(top, dy * h), max(left, dx * w)
                y1, x1 = min(top + ch, (dy + 1) * h), min(left + cw, (dx + 1) * w)
                window = Window(x0 - dx * w, y0 - dy * h, x1 - x0, y1 - y0)
                pieces.append((j, window, y0 - top, x0 - left))
        return pieces

    def _read(self, i: int, rng: np.random.Generator, ch: int, cw: int):
        """Image ``(ch, cw, 3)``, grey mask ``(ch, cw)`` and which of its pixels are
        pseudo-labels ``(ch, cw)`` of a random window of tile ``i``, across its edges where
        its neighbours are known."""
        row = self.reader.rows[i]
        h, w = int(row["height"]), int(row["width"])
        left_inside = int(rng.integers(0, w - cw + 1))  # this order: the windows of runs
        inside = (int(rng.integers(0, h - ch + 1)), left_inside)  # before context training
        if self.at is not None and i in self.place:
            # anywhere that keeps at least half the window on this tile, if it covers only
            # known tiles; else inside the tile along the axis that leaves them
            across = (int(rng.integers(-(ch // 2), h - ch + ch // 2 + 1)),
                      int(rng.integers(-(cw // 2), w - cw + cw // 2 + 1)))  # fmt: skip
            for top, left in ((across[0], across[1]), (inside[0], across[1]),
                              (across[0], inside[1])):  # fmt: skip
                pieces = self._window_tiles(i, top, left, ch, cw)
                if pieces is not None:
                    image = np.empty((ch, cw, 3), np.float32)
                    grey = np.empty((ch, cw), np.float32)
                    soft = np.zeros((ch, cw), bool)
                    for j, window, y, x in pieces:
                        part = (slice(y, y + int(window.height)), slice(x, x + int(window.width)))
                        image[part] = self.reader.image(j, window).transpose(1, 2, 0)
                        grey[part] = self.reader.mask_grey(j, window)
                        soft[part] = self.reader.rows[j].get("pseudo") is True
                    return image, grey, soft
        window = Window(inside[1], inside[0], cw, ch)
        image = self.reader.image(i, window).transpose(1, 2, 0)
        soft = np.full((ch, cw), self.reader.rows[i].get("pseudo") is True)
        return image, self.reader.mask_grey(i, window), soft

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, seed = key
        row = self.reader.rows[i]
        rng = np.random.default_rng(seed)
        ch, cw = min(self.crop_size, row["height"]), min(self.crop_size, row["width"])
        image, grey, soft = self._read(i, rng, ch, cw)  # HxWx3, HxW, HxW
        mask = binarize_mask(grey, self.mask_threshold)[0]
        masks = [mask]
        if self.pseudo:
            unsure = soft & (np.maximum(grey, 1 - grey) < self.pseudo_confidence)
            masks = [np.where(soft, grey, mask), np.where(unsure, 0.0, 1.0).astype(np.float32)]
        if (ch, cw) != (self.crop_size, self.crop_size):  # tile smaller than the crop
            pad = ((0, self.crop_size - ch), (0, self.crop_size - cw))
            image = np.pad(image, (*pad, (0, 0)), mode="reflect")
            masks = [np.pad(m, pad, mode="reflect") for m in masks]
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, masks=masks)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(out["masks"][0][None])),
            "tile_id": int(row["tile_id"]),
            "index": i,
            "seed": seed,
        }
        if self.pseudo:
            sample["weight"] = torch.from_numpy(np.ascontiguousarray(out["masks"][1][None]))
        return sample


class TileDataset(Dataset):
    """Evaluation samples: whole tiles, not augmented, with the competition's patch labels.

    ``maps``, ``margin``: each image is the tile with ``margin`` pixels of its neighbours
    on the map around it (:func:`roadseg.maps.context_image`), as ``submit`` predicts it;
    the sample's ``margin`` says how much to crop from the prediction. Masks stay the tile's.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        mask_threshold: float = MASK_THRESHOLD,
        cache: bool = True,
        maps=None,
        margin: int = 0,
        radiometry: dict | None = None,
    ):
        self.reader = TileReader(frame, cache=cache, radiometry=radiometry)
        self.mask_threshold = mask_threshold
        self.maps, self.margin = maps, (margin if maps is not None else 0)

    def __len__(self) -> int:
        return len(self.reader.frame)

    def __getitem__(self, i: int) -> dict:
        row = self.reader.rows[i]
        if self.margin:
            image = context_image(row["image"], self.maps, self.margin)
        else:
            image = self.reader.image(i)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "tile_id": int(row["tile_id"]),
            "index": i,
            "margin": self.margin,
        }
        if isinstance(row["mask"], str):
            grey = self.reader.mask_grey(i)
            sample["mask"] = torch.from_numpy(binarize_mask(grey, self.mask_threshold))
            sample["patches"] = torch.from_numpy(patch_labels(grey).astype(np.float32)[None])
        return sample


class SeededSampler(DistributedSampler):
    """Yields ``(tile index, sample seed)`` keys: ``samples_per_epoch`` of them per epoch.

    Tiles are drawn in a shuffled order (repeated as needed) and each key's seed is a
    function of (seed, epoch, position), so the same epoch always yields the same keys.
    Under distributed training each process takes every ``num_replicas``-th key from
    its ``rank`` on (the list padded to a multiple of ``num_replicas``), so processes see
    different samples. Being a ``DistributedSampler``, Lightning uses it as it is and calls
    ``set_epoch`` on it.
    """

    def __init__(
        self,
        n_tiles: int,
        *,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        # DistributedSampler.__init__ needs a dataset and a process group; set its fields here.
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas or (dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.n_tiles = n_tiles
        self.samples_per_epoch = samples_per_epoch or n_tiles
        self.seed = seed
        self.epoch = 0
        self.shuffle, self.drop_last = True, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.samples_per_epoch // self.num_replicas)

    def keys(self, epoch: int) -> list[tuple[int, int]]:
        """Every process's keys of one epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        reps = -(-self.samples_per_epoch // self.n_tiles)
        order = np.concatenate([rng.permutation(self.n_tiles) for _ in range(reps)])[
            : self.samples_per_epoch
        ]
        seeds = rng.integers(0, 2**31 - 1, size=self.samples_per_epoch)
        return list(zip(order.tolist(), seeds.tolist(), strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = self.keys(self.epoch)
        keys += keys[: len(self) * self.num_replicas - len(keys)]  # pad: every process, same count
        return iter(keys[self.rank :: self.num_replicas])
