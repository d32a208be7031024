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

from roadseg.errors import RoadsegError, is_number
from roadseg.labels import IGNORE, ROAD, RasterLabels, VectorLabels, Widths, open_raster
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
    YAML file holding that list (paths in it relative to the file); paths made absolute,
    so a checkpoint's record finds them from any working directory."""
    base, where = Path("."), "data.scenes"
    if isinstance(scenes, str | Path):
        import yaml

        path = Path(scenes)
        if not path.is_file():
            raise RoadsegError("no such scene list (data.scenes: a YAML list of entries)", path)
        try:
            scenes, base, where = yaml.safe_load(path.read_text()), path.parent, str(path)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise RoadsegError(
                f"not a YAML list of scenes ({str(err).splitlines()[0]})", path
            ) from None
    if not isinstance(scenes, list) or not scenes:
        raise RoadsegError(f"{where} must list {{image: ..., labels: ...}} entries")
    return [_entry(entry, base, where) for entry in scenes]


def _entry(entry, base: Path, where: str) -> SceneSpec:
    """One entry of a scene list, checked, its paths absolute."""
    fields = set(SceneSpec.__dataclass_fields__)
    if not isinstance(entry, dict) or not {"image", "labels"} <= set(entry):
        raise RoadsegError(f"{where}: an entry needs image and labels, got {entry!r}")
    unknown = set(entry) - fields
    if unknown:
        raise RoadsegError(f"{where}: unknown keys {sorted(unknown)} (known: "
                           f"{', '.join(sorted(fields))})")  # fmt: skip
    for key in ("image", "labels", "aoi", "width_column", "width_by", "layer"):
        value = entry.get(key)
        if (
            value is not None
            and not isinstance(value, str)
            or key in ("image", "labels")
            and not value
        ):
            raise RoadsegError(f"{where}: {key} must be a path or a name, got {value!r}")
    width = entry.get("width")
    if width is not None and (not is_number(width) or not 0 < width < float("inf")):
        raise RoadsegError(f"{where}: width must be positive metres (a number), got {width!r}")
    paths = {
        k: str((base / entry[k]).resolve()) for k in ("image", "labels", "aoi") if entry.get(k)
    }
    spec = SceneSpec(**{**entry, **paths})
    for key in ("image", "labels", "aoi"):
        value = getattr(spec, key)
        if value is not None and not Path(value).is_file():
            raise RoadsegError(f"{where}: no such {key} file", value)
    return spec


def small_cache():
    """GDAL's block cache held to prediction's 64 MB while scenes are read: its default, 5%
    of the machine's memory, filled with a large scene's blocks (a 16,000 px scene took
    0.9 GB more than a 1,000 px one to cut into blocks)."""
    import rasterio

    from roadseg.parts import GDAL_CACHE_BYTES

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


class LabelledScene:
    """A scene read as a model of ``imagery`` reads it, with its labels on the same grid."""

    def __init__(self, spec: SceneSpec, imagery, read=None):
        self.spec, self.imagery, self.read_options = spec, imagery, read
        self._open()

    def _open(self) -> None:

        from roadseg.reading import scene_reader

        spec = self.spec
        self.src = open_raster(spec.image)
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

    def valid(self, window: Window, shape: tuple[int, int]) -> np.ndarray:
        """Which cells of a coarse ``shape`` grid over ``window`` hold image pixels (not
        nodata, alpha 0 or NaN)."""
        with small_cache():
            return self._valid(window, shape)

    def _valid(self, window: Window, shape: tuple[int, int]) -> np.ndarray:
        from rasterio.enums import Resampling

        bands = list(self.reader.bands)
        ok = self.src.dataset_mask(window=window, out_shape=shape,
                                   resampling=Resampling.nearest) > 0  # fmt: skip
        if self.src.dtypes[bands[0] - 1].startswith("float"):
            values = self.src.read(bands, window=window, out_shape=(len(bands), *shape),
                                   resampling=Resampling.nearest)  # fmt: skip
            ok &= np.isfinite(values).all(axis=0)
        return ok

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image float32 ``(3, H, W)`` at the model's resolution and its target ``(H, W)``
        uint8 (:data:`ROAD`, 0, or :data:`IGNORE` outside the labels or on nodata)."""
        with small_cache():
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
    """The blocks of ``metres`` on the scene's grid with labelled ground: covered by the
    labels and holding image pixels (not nodata), measured on a 16 x 16 grid per block."""
    from roadseg.reading import pixel_metres

    src = scene.src
    sides, how = pixel_metres(src)
    if sides is None:
        raise RoadsegError(
            f"a scene must be georeferenced to be cut into blocks of ground ({how}); give it "
            "its CRS and transform (gdal_edit.py -a_srs EPSG:XXXX -a_ullr ...)",
            src.name,
        )
    bw, bh = round(metres / sides[0]), round(metres / sides[1])
    if min(bw, bh) < 16:
        raise RoadsegError(f"data.block {metres:g} m is {min(bw, bh)} px of the scene: give "
                           "at least 16 px of ground", src.name)  # fmt: skip
    blocks = []
    for row, height in _spans(src.height, bh):
        for col, width in _spans(src.width, bw):
            win = Window(col, row, width, height)
            labelled = (scene.labels.window(win, (16, 16)) != IGNORE) & scene.valid(win, (16, 16))
            if labelled.mean() >= MIN_LABELLED:
                blocks.append(Block(index, win, float(labelled.mean())))
    return blocks


def _spans(size: int, side: int) -> list[tuple[int, int]]:
    """(start, length) of blocks of ``side`` along ``size`` pixels; a remainder shorter
    than half a block joins the last block instead of making a sliver."""
    starts = list(range(0, size, side))
    if len(starts) > 1 and size - starts[-1] < side / 2:
        starts.pop()
    return [(s, (starts[k + 1] if k + 1 < len(starts) else size) - s) for k, s in enumerate(starts)]


def ground_of(block: Block, scenes: list[LabelledScene], crs):
    """A block's ground as a polygon in ``crs``."""
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    from roadseg.labels import footprint

    src = scenes[block.scene].src
    polygon = footprint(block.window, src.transform)
    if src.crs == crs:
        return polygon
    return shape(transform_geom(src.crs, crs, mapping(polygon.segmentize(polygon.length / 64))))


def split_blocks(blocks: list[Block], scenes: list[LabelledScene], *, val_fraction: float,
                 seed: int, holdout: str | None = None) -> tuple[list[Block], list[Block], str]:  # fmt: skip
    """(training blocks, held-out blocks, what was done): a seeded share, or those a polygon
    file holds; a training block sharing ground with a held-out one (scenes that overlap,
    or blocks the holdout polygons touch) is left out of both."""
    from shapely import STRtree

    crs = scenes[0].src.crs
    grounds = [ground_of(b, scenes, crs) for b in blocks]
    if holdout is None:
        rng = np.random.default_rng([seed, 7])
        n_val = round(len(blocks) * val_fraction)
        if val_fraction > 0 and len(blocks) > 1:
            n_val = min(max(1, n_val), len(blocks) - 1)
        held = set(rng.permutation(len(blocks))[:n_val].tolist())
        how = f"a seeded {val_fraction:g} of them"
    else:
        from roadseg.labels import read_vectors

        polygons = read_vectors(holdout)
        polygons = polygons[polygons.geom_type.isin(["Polygon", "MultiPolygon"])]
        if polygons.empty:
            raise RoadsegError("data.holdout holds no polygon", holdout)
        area = polygons.to_crs(crs).geometry.union_all()
        held = {i for i, g in enumerate(grounds) if area.contains(g.centroid)}
        if not held:
            raise RoadsegError("data.holdout covers no labelled block of the scenes", holdout)
        how = f"those whose centre {holdout} holds"
        grounds = [*grounds, area]  # blocks it touches do not train either
    tree = STRtree([grounds[i] for i in sorted(held)] + grounds[len(blocks) :])
    train, dropped = [], 0
    for i, block in enumerate(blocks):
        if i in held:
            continue
        near = tree.query(grounds[i])
        shared = sum(tree.geometries[j].intersection(grounds[i]).area for j in near)
        if shared > 1e-6 * grounds[i].area:
            dropped += 1
        else:
            train.append(block)
    if dropped:
        how += (f"; {dropped} other blocks share ground with held-out ground (overlapping "
                "scenes, or the holdout's edge) and are used for neither")  # fmt: skip
    return train, [b for i, b in enumerate(blocks) if i in held], how


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

        from roadseg.imagery import COMPETITION
        from roadseg.reading import pixel_metres

        for name, value, ok in (("block", block, lambda v: 0 < v < float("inf")),
                                ("val_fraction", val_fraction, lambda v: 0 <= v < 1)):  # fmt: skip
            if not is_number(value) or not ok(value):
                raise RoadsegError(f"data.{name}: {value!r} is out of range "
                                   f"({'positive metres' if name == 'block' else '0 to < 1'})")  # fmt: skip
        self.specs = scene_specs(scenes)
        self.parameters = {"block": float(block), "val_fraction": float(val_fraction),
                           "seed": int(seed), "crop_size": int(crop_size),
                           "holdout": str(Path(holdout).resolve()) if holdout else None,
                           "list": str(Path(scenes).resolve()) if isinstance(scenes, str | Path) else None}  # fmt: skip
        if imagery is None:
            if resolution is None:
                with open_raster(self.specs[0].image) as src:
                    sides, how = pixel_metres(src)
                if sides is None:
                    raise RoadsegError(f"a scene must be georeferenced ({how}); give it its "
                                       "CRS and transform", self.specs[0].image)  # fmt: skip
                resolution = float(np.sqrt(sides[0] * sides[1]))
            imagery = dataclasses.replace(COMPETITION, resolution=resolution,
                                          origin="the competition's radiometry")  # fmt: skip
        self.imagery = imagery
        with small_cache():
            self.scenes = [LabelledScene(spec, imagery) for spec in self.specs]
        blocks: list[Block] = []
        for k, scene in enumerate(self.scenes):
            with small_cache():
                found = scene_blocks(scene, k, block)
            if not found:
                raise RoadsegError(
                    f"no {block:g} m block of the scene has labelled ground (at least "
                    f"{MIN_LABELLED:.0%} covered by its labels and holding image pixels): "
                    "check its labels' coverage and its nodata",
                    scene.spec.image,
                )
            blocks += found
        self.train, self.val, how = split_blocks(blocks, self.scenes, val_fraction=val_fraction,
                                                 seed=seed, holdout=holdout)  # fmt: skip
        if not self.train:
            raise RoadsegError("every labelled block is held out: nothing left to train on")
        small = min(min(b.window.width * s[1], b.window.height * s[0]) for b in self.train
                    for s in [self.scenes[b.scene].reader.scales])  # fmt: skip
        self.lines = [
            *(f"data: {s.spec.image}: {s.labels.describe()}" for s in self.scenes),
            *(f"data: {s.spec.image}: {ln}" for s in self.scenes for ln in s.reader.lines()),
            f"data: {len(self.scenes)} scenes, {len(blocks)} blocks of {block:g} m with "
            f"labelled ground: {len(self.train)} train, {len(self.val)} held out ({how}); "
            "training windows never leave their block",
        ]
        if small < crop_size:
            self.lines.append(f"data: some training blocks are {small:.0f} px at the model's "
                              f"resolution, less than crop_size {crop_size}: padded, the "
                              "padding ignored")  # fmt: skip

    def split_record(self) -> dict:
        """What checkpoints record: each scene (its entry, absolute paths) and the blocks,
        each block named by the content of its scene and of its labels (lines, AOI, widths):
        a changed label file is a changed split."""
        import dataclasses
        import hashlib

        from roadseg.checkpoints import SPLIT_FORMAT
        from roadseg.index import content_hash

        def identity(spec: SceneSpec) -> str:
            labels = [content_hash(spec.labels), content_hash(spec.aoi) if spec.aoi else "",
                      repr((spec.width, spec.width_column, spec.width_by, spec.layer))]  # fmt: skip
            digest = hashlib.sha256("|".join(labels).encode()).hexdigest()[:16]
            return f"{content_hash(spec.image)}:{digest}"

        names = [identity(s) for s in self.specs]

        def entries(blocks):
            return [{"file": Path(self.specs[b.scene].image).name,
                     "sha256": f"{names[b.scene]}:{b.key.partition(':')[2]}"} for b in blocks]  # fmt: skip

        return {"format": SPLIT_FORMAT, "kind": "scenes", "root": None,
                "scenes": [dataclasses.asdict(s) for s in self.specs], **self.parameters,
                "val": entries(self.val), "train": entries(self.train), "pseudo": []}  # fmt: skip
