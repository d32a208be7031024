"""Training on a user's own region: GeoTIFF scenes with road labels, windows by geography.

A scene (any CRS, resolution, bit depth) comes with a label source: vector lines or
polygons (:class:`roadseg.labels.VectorLabels`: buffered to road widths on the ground) or
a mask raster on any grid (:class:`RasterLabels`). Ground outside the labels' coverage is
:data:`~roadseg.labels.IGNORE`: it weighs nothing in the loss and the scores.

- **Blocks.** Each scene is cut into square blocks of ``block`` metres on its own grid.
  Blocks with labelled ground are split into training and held-out blocks: a seeded
  ``val_fraction`` of them, or those whose centre lies in a ``holdout`` polygon file (a
  block that touches the polygons but is not held out does not train either). Training
  windows lie inside one training block, so validation never shares ground with training.
- **Windows.** A training window is a random square of ``crop_size`` pixels at the
  model's resolution inside a training block (blocks drawn by labelled area), read through
  the same :class:`~roadseg.reading.SceneReader` as prediction (bands, radiometry onto the
  model's imagery, resampled to the model's resolution); labels are burnt directly on that
  grid. Validation reads each held-out block whole. Only windows are read, never a whole
  scene: memory does not grow with the scenes' size.
- **Determinism.** Keys are ``(block, seed)`` pairs from
  :class:`~roadseg.dataset.SeededSampler`, so a resumed run reads the same windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from roadseg.errors import RoadsegError
from roadseg.labels import IGNORE, ROAD, VectorLabels, Widths
from roadseg.transforms import build_transform

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".png", ".jp2", ".img"}
MIN_LABELLED = 0.02  # a block with less labelled ground than this share is left out


@dataclass(frozen=True)
class SceneSpec:
    """One scene of ``data.scenes``: its image and its labels (a vector file or a mask
    raster), and for vectors their road widths, AOI and layer."""

    image: str
    labels: str
    width: float | None = None
    width_column: str | None = None
    width_by: str | None = None
    aoi: str | None = None
    layer: str | None = None

    @property
    def vector(self) -> bool:
        return Path(self.labels).suffix.lower() not in RASTER_SUFFIXES


def scene_specs(scenes) -> list[SceneSpec]:
    """``data.scenes``: a list of ``{image, labels, width, ...}`` entries, or the path of a
    YAML file holding that list (paths in it relative to the file)."""
    base = Path(".")
    if isinstance(scenes, str | Path):
        import yaml

        path = Path(scenes)
        if not path.is_file():
            raise RoadsegError("no such scene list (data.scenes: a YAML list of entries)", path)
        scenes, base = yaml.safe_load(path.read_text()), path.parent
    if not isinstance(scenes, list) or not scenes:
        raise RoadsegError("data.scenes must list {image: ..., labels: ...} entries")
    specs = []
    fields = set(SceneSpec.__dataclass_fields__)
    for entry in scenes:
        if not isinstance(entry, dict) or not {"image", "labels"} <= set(entry):
            raise RoadsegError(f"data.scenes: an entry needs image and labels, got {entry!r}")
        unknown = set(entry) - fields
        if unknown:
            raise RoadsegError(f"data.scenes: unknown keys {sorted(unknown)} (known: "
                               f"{', '.join(sorted(fields))})")  # fmt: skip
        paths = {k: str(base / entry[k]) for k in ("image", "labels", "aoi") if entry.get(k)}
        spec = SceneSpec(**{**entry, **paths})
        for key in ("image", "labels", "aoi"):
            value = getattr(spec, key)
            if value is not None and not Path(value).exists():
                raise RoadsegError(f"data.scenes: no such {key} file", value)
        specs.append(spec)
    return specs


class RasterLabels:
    """Road labels from a mask raster: on the scene's grid, or reprojected to it (nearest).
    Grey masks (0-255, road white) follow the competition's rule; 0/1 masks are read as
    they are; nodata and ground outside the raster are :data:`IGNORE`."""

    def __init__(self, path: str | Path, src):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        from roadseg.io import MASK_THRESHOLD

        self.path, self.src = Path(path), src
        self.file = rasterio.open(path)
        same = (self.file.crs == src.crs and self.file.transform == src.transform
                and self.file.shape == src.shape)  # fmt: skip
        if same:
            self.grid, self.how = self.file, "on the scene's grid"
        elif self.file.crs is None or src.crs is None:
            raise RoadsegError(
                f"a mask raster on another grid than its scene {src.name} needs a CRS (both "
                "georeferenced), or the scene's exact size and transform",
                path,
            )
        else:
            self.grid = WarpedVRT(self.file, crs=src.crs, transform=src.transform,
                                  width=src.width, height=src.height, add_alpha=True,
                                  resampling=Resampling.nearest)  # fmt: skip
            self.how = f"reprojected from {self.file.crs.to_string()} (nearest)"
        sample, valid = self._read(None, (min(512, src.height), min(512, src.width)))
        if not valid.any():
            raise RoadsegError(f"the mask covers none of the scene {src.name}", path)
        top = float(sample[valid].max())
        self.scale = 1.0 if top <= 1 else 255.0 if top <= 255 else float(top)
        self.threshold = MASK_THRESHOLD if self.scale > 1 else 0.5
        self.lines_read = f"labels: mask raster {path} ({self.how}; values 0-{self.scale:g})"

    def _read(self, window, shape) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.enums import Resampling

        count = self.grid.count
        data = self.grid.read(window=window, out_shape=(count, *shape),
                              resampling=Resampling.nearest)  # fmt: skip
        if self.grid is self.file:
            valid = self.file.read_masks(1, window=window, out_shape=shape,
                                         resampling=Resampling.nearest) > 0  # fmt: skip
        else:
            valid = data[-1] > 0
        return data[0].astype(np.float32), valid

    def describe(self) -> str:
        return self.lines_read

    def window(self, window, shape: tuple[int, int] | None = None) -> np.ndarray:
        shape = shape or (int(window.height), int(window.width))
        values, valid = self._read(window, shape)
        mask = (values / self.scale > self.threshold).astype(np.uint8)
        mask[~valid] = IGNORE
        return mask

    def covered(self, window, shape=(16, 16)) -> float:
        return float((self.window(window, shape) != IGNORE).mean())


class LabelledScene:
    """A scene read as a model of ``imagery`` reads it, with its labels on the same grid."""

    def __init__(self, spec: SceneSpec, imagery, read=None):
        self.spec, self.imagery, self.read_options = spec, imagery, read
        self._open()

    def _open(self) -> None:
        import rasterio

        from roadseg.reading import scene_reader

        spec = self.spec
        self.src = rasterio.open(spec.image)
        self.reader = scene_reader(self.src, self.imagery, self.read_options)
        if spec.vector:
            widths = Widths.parse(spec.width, spec.width_column, spec.width_by)
            self.labels = VectorLabels(spec.labels, self.src, widths=widths, aoi=spec.aoi,
                                       layer=spec.layer)  # fmt: skip
        else:
            self.labels = RasterLabels(spec.labels, self.src)

    def __getstate__(self) -> dict:  # data loader workers open their own files
        return {"spec": self.spec, "imagery": self.imagery, "read_options": self.read_options}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image float32 ``(3, H, W)`` at the model's resolution and its target ``(H, W)``
        uint8 (:data:`ROAD`, 0, or :data:`IGNORE` outside the labels or on nodata)."""
        image, valid = self.reader.read(window)
        shape = image.shape[1:]
        target = self.labels.window(window, shape)
        if not valid.all():
            rows = (np.arange(shape[0]) * valid.shape[0] // shape[0])[:, None]
            cols = (np.arange(shape[1]) * valid.shape[1] // shape[1])[None, :]
            target[~valid[rows, cols]] = IGNORE
        return image, target


@dataclass(frozen=True)
class Block:
    scene: int
    window: Window
    labelled: float  # share of its ground that is labelled

    @property
    def key(self) -> str:
        w = self.window
        return f"{self.scene}:{int(w.col_off)},{int(w.row_off)},{int(w.width)},{int(w.height)}"


def scene_blocks(scene: LabelledScene, index: int, metres: float) -> list[Block]:
    """The blocks of ``metres`` on the scene's grid with labelled ground."""
    from roadseg.reading import pixel_metres

    src = scene.src
    sides, how = pixel_metres(src)
    if sides is None:
        raise RoadsegError(f"blocks in metres need the scene's ground resolution ({how})",
                           src.name)  # fmt: skip
    bw, bh = max(16, round(metres / sides[0])), max(16, round(metres / sides[1]))
    blocks = []
    for row, height in _spans(src.height, bh):
        for col, width in _spans(src.width, bw):
            win = Window(col, row, width, height)
            labelled = scene.labels.covered(win)
            if labelled >= MIN_LABELLED:
                blocks.append(Block(index, win, labelled))
    return blocks


def _spans(size: int, side: int) -> list[tuple[int, int]]:
    """(start, length) of blocks of ``side`` along ``size`` pixels; a remainder shorter
    than half a block joins the last block instead of making a sliver."""
    starts = list(range(0, size, side))
    if len(starts) > 1 and size - starts[-1] < side / 2:
        starts.pop()
    return [(s, (starts[k + 1] if k + 1 < len(starts) else size) - s) for k, s in enumerate(starts)]


def split_blocks(blocks: list[Block], scenes: list[LabelledScene], *, val_fraction: float,
                 seed: int, holdout: str | None = None) -> tuple[list[Block], list[Block]]:  # fmt: skip
    """(training blocks, held-out blocks): a seeded share, or by a polygon file."""
    if holdout is None:
        rng = np.random.default_rng([seed, 7])
        n_val = round(len(blocks) * val_fraction)
        if val_fraction > 0 and len(blocks) > 1:
            n_val = min(max(1, n_val), len(blocks) - 1)
        held = set(rng.permutation(len(blocks))[:n_val].tolist())
        return ([b for i, b in enumerate(blocks) if i not in held],
                [b for i, b in enumerate(blocks) if i in held])  # fmt: skip
    from rasterio.windows import bounds
    from shapely import box

    from roadseg.labels import read_vectors

    polygons = read_vectors(holdout)
    polygons = polygons[polygons.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise RoadsegError("data.holdout holds no polygon", holdout)
    train, val = [], []
    for block in blocks:
        src = scenes[block.scene].src
        area = polygons.to_crs(src.crs).geometry.union_all()
        ground = box(*bounds(block.window, src.transform))
        if area.contains(ground.centroid):
            val.append(block)
        elif not area.intersects(ground):
            train.append(block)
    if not val:
        raise RoadsegError("data.holdout covers no labelled block of the scenes", holdout)
    return train, val


class SceneWindows(Dataset):
    """Training samples: a random window inside a training block, augmented; keys are
    ``(position, seed)`` from :class:`~roadseg.dataset.SeededSampler`; the block is drawn
    by the seed, weighted by labelled ground."""

    def __init__(self, scenes: list[LabelledScene], blocks: list[Block], *, crop_size: int,
                 augment: str = "d4"):  # fmt: skip
        self.scenes, self.blocks, self.crop_size = scenes, blocks, crop_size
        areas = np.array([b.labelled * b.window.width * b.window.height for b in blocks])
        self.weights = areas / areas.sum()
        self.transform = build_transform(augment)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        _, seed = key
        rng = np.random.default_rng(seed)
        block = self.blocks[int(rng.choice(len(self.blocks), p=self.weights))]
        scene = self.scenes[block.scene]
        down, across = scene.reader.scales
        side_h = min(int(block.window.height), math.ceil(self.crop_size / down))
        side_w = min(int(block.window.width), math.ceil(self.crop_size / across))
        top = int(block.window.row_off) + int(rng.integers(0, block.window.height - side_h + 1))
        left = int(block.window.col_off) + int(rng.integers(0, block.window.width - side_w + 1))
        image, target = scene.read(Window(left, top, side_w, side_h))
        image, target = _fit(image.transpose(1, 2, 0), target, self.crop_size)
        masks = [(target == ROAD).astype(np.float32), (target != IGNORE).astype(np.float32)]
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, masks=masks)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(out["masks"][0][None])),
            "weight": torch.from_numpy(np.ascontiguousarray(out["masks"][1][None])),
            "seed": seed,
        }


def _fit(image: np.ndarray, target: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop or pad (image reflected, target :data:`IGNORE`) to ``side`` x ``side``."""
    image, target = image[:side, :side], target[:side, :side]
    pad = ((0, side - target.shape[0]), (0, side - target.shape[1]))
    if any(p for _, p in pad):
        image = np.pad(image, (*pad, (0, 0)), mode="reflect")
        target = np.pad(target, pad, constant_values=IGNORE)
    return image, target


class SceneBlocks(Dataset):
    """Validation samples: each held-out block whole, not augmented, with its ``weight``
    (1 on labelled ground)."""

    def __init__(self, scenes: list[LabelledScene], blocks: list[Block]):
        self.scenes, self.blocks = scenes, blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        block = self.blocks[i]
        image, target = self.scenes[block.scene].read(block.window)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy((target == ROAD).astype(np.float32)[None]),
            "weight": torch.from_numpy((target != IGNORE).astype(np.float32)[None]),
            "index": i,
        }


class SceneData:
    """The scenes of ``data.scenes``, their blocks and split (module doc); what
    :class:`~roadseg.datamodule.RoadDataModule` trains on when it is given scenes.

    ``imagery``: the model's (a fine-tuned checkpoint's, kept: scenes are mapped onto it as
    prediction maps them); None: the competition's radiometry at ``resolution`` (default
    the first scene's ground resolution)."""

    def __init__(self, scenes, *, block: float, val_fraction: float, seed: int,
                 holdout: str | None = None, imagery=None, resolution: float | None = None,
                 crop_size: int = 256):  # fmt: skip
        import dataclasses

        import rasterio

        from roadseg.imagery import COMPETITION
        from roadseg.reading import pixel_metres

        self.specs = scene_specs(scenes)
        if not block > 0:
            raise RoadsegError(f"data.block must be positive metres, got {block}")
        if imagery is None:
            if resolution is None:
                with rasterio.open(self.specs[0].image) as src:
                    sides, how = pixel_metres(src)
                if sides is None:
                    raise RoadsegError(f"scene resolution unknown ({how}): give data.resolution",
                                       self.specs[0].image)  # fmt: skip
                resolution = float(np.sqrt(sides[0] * sides[1]))
            imagery = dataclasses.replace(COMPETITION, resolution=resolution,
                                          origin="the competition's radiometry")  # fmt: skip
        self.imagery = imagery
        self.scenes = [LabelledScene(spec, imagery) for spec in self.specs]
        blocks: list[Block] = []
        for k, scene in enumerate(self.scenes):
            found = scene_blocks(scene, k, block)
            if not found:
                raise RoadsegError(
                    f"no {block:g} m block of the scene has labelled ground (at least "
                    f"{MIN_LABELLED:.0%}): check its labels' coverage",
                    scene.spec.image,
                )
            blocks += found
        self.train, self.val = split_blocks(blocks, self.scenes, val_fraction=val_fraction,
                                            seed=seed, holdout=holdout)  # fmt: skip
        if not self.train:
            raise RoadsegError("every labelled block is held out: nothing left to train on")
        small = min(min(b.window.width * s[1], b.window.height * s[0]) for b in self.train
                    for s in [self.scenes[b.scene].reader.scales])  # fmt: skip
        self.lines = [
            *(f"data: {s.spec.image}: {s.labels.describe()}" for s in self.scenes),
            *(f"data: {s.spec.image}: {ln}" for s in self.scenes for ln in s.reader.lines()),
            f"data: {len(self.scenes)} scenes, {len(blocks)} blocks of {block:g} m with "
            f"labelled ground: {len(self.train)} train, {len(self.val)} held out "
            f"({'by ' + str(holdout) if holdout else f'seeded {val_fraction:g} of them'}); "
            "training windows never leave their block",
        ]
        if small < crop_size:
            self.lines.append(f"data: some training blocks are {small:.0f} px at the model's "
                              f"resolution, less than crop_size {crop_size}: padded, the "
                              "padding ignored")  # fmt: skip

    def split_record(self) -> dict:
        """What checkpoints record: each scene's file and content hash, and the blocks."""
        from roadseg.checkpoints import SPLIT_FORMAT
        from roadseg.index import content_hash

        hashes = [content_hash(s.image) for s in self.specs]

        def entries(blocks):
            return [{"file": Path(self.specs[b.scene].image).name,
                     "sha256": f"{hashes[b.scene]}:{b.key.partition(':')[2]}"} for b in blocks]  # fmt: skip

        return {"format": SPLIT_FORMAT, "kind": "scenes", "root": None,
                "scenes": [{"image": s.image, "labels": s.labels} for s in self.specs],
                "val": entries(self.val), "train": entries(self.train), "pseudo": []}  # fmt: skip
