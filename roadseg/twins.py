"""Twin scenes: the same ground encoded, projected or resampled another way must give the
same roads and the same lengths (the property a GIS user relies on).

:func:`plain_twin` lays real RGB tiles side by side as a georeferenced scene (UTM 19N,
0.5 m, at Boston, where every CRS below is valid); each :class:`Variant` writes the same
ground another way; :func:`compare` brings a variant's prediction back onto the twin's
grid and measures roads IoU over the ground both cover, and the ratio of the total line
lengths (``roadseg vectorize``'s, in ground metres). ``tests/test_twins.py`` holds every
variant to its threshold; ``benchmarks/twins.py`` prints the table for a real checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject

TWIN_CRS = "EPSG:32619"  # UTM 19N: Boston, 42.35 N 71.05 W
TWIN_ORIGIN = (330_000.0, 4_691_000.0)
TWIN_RES = 0.5
HOLE = (slice(96, 224), slice(160, 288))  # a block of no data in the variants with holes


def plain_twin(images: list[Path], out: Path, cols: int = 2) -> Path:
    """Real tiles (RGB or RGBA PNGs of one size) side by side, ``cols`` per row, as one
    8-bit RGB GeoTIFF in :data:`TWIN_CRS` at 0.5 m."""
    return _mosaic(images, [1, 2, 3], out, cols)


def label_twin(masks: list[Path], out: Path, cols: int = 2) -> Path:
    """The tiles' road masks (grey, road white) laid out as :func:`plain_twin` lays their
    images: the twin's true roads."""
    return _mosaic(masks, [1], out, cols)


def _mosaic(paths: list[Path], bands: list[int], out: Path, cols: int) -> Path:
    tiles = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                tiles.append(src.read(bands))
    rows = [np.concatenate(tiles[r : r + cols], axis=2) for r in range(0, len(tiles), cols)]
    data = np.concatenate(rows, axis=1)
    return write(out, data, crs=TWIN_CRS, transform=from_origin(*TWIN_ORIGIN, TWIN_RES, TWIN_RES))


def write(path: Path, data: np.ndarray, *, interp=None, colormap=None, **profile) -> Path:
    """A GeoTIFF of ``(bands, H, W)`` ``data``; its colour interpretation and table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, **profile) as dst:  # fmt: skip
        dst.write(data)
        if interp:
            dst.colorinterp = interp
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def _read(twin: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(twin) as src:
        return src.read(), {"crs": src.crs, "transform": src.transform}


def encoded(scale: float, offset: float, dtype: str, *, holes=None, nodata=None):
    """A variant writing ``value * scale + offset`` as ``dtype``; ``holes``: NaN or the
    nodata value in :data:`HOLE` (``nodata``: tagged as such)."""

    def build(twin: Path, out: Path) -> Path:
        data, geo = _read(twin)
        values = data.astype(np.float64) * scale + offset
        if np.issubdtype(np.dtype(dtype), np.integer):
            values = np.rint(values)
        values = values.astype(dtype)
        if holes is not None:
            values[:, HOLE[0], HOLE[1]] = holes
        return write(out, values, nodata=nodata, **geo)

    return build


def bgr(twin: Path, out: Path) -> Path:
    data, geo = _read(twin)
    return write(out, data[::-1].copy(), interp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red], **geo)  # fmt: skip


def alpha(twin: Path, out: Path) -> Path:
    data, geo = _read(twin)
    mask = np.full(data.shape[1:], 255, np.uint8)
    mask[HOLE] = 0
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return write(out, np.concatenate([data, mask[None]]), interp=interp, **geo)


def palette(twin: Path, out: Path) -> Path:
    """256 colours (median cut, as GIS exports of paletted imagery): shades are lost."""
    from PIL import Image

    data, geo = _read(twin)
    image = Image.fromarray(data.transpose(1, 2, 0)).quantize(256, method=Image.Quantize.MEDIANCUT)
    table = np.asarray(image.getpalette()[: 256 * 3]).reshape(-1, 3)
    colormap = {k: (*map(int, table[k]), 255) for k in range(len(table))}
    return write(out, np.asarray(image)[None].astype(np.uint8), interp=[ColorInterp.palette],
                 colormap=colormap, **geo)  # fmt: skip


def reprojected(crs: str) -> Callable[[Path, Path], Path]:
    """A scene warped (cubic) into ``crs`` at the same ground resolution (GDAL's default
    for the target), as a web-tile export or a reprojection in a GIS would; off its
    ground, an alpha band (8-bit) or nodata (NaN for floats, 0 for integers)."""

    def build(scene: Path, out: Path) -> Path:
        with rasterio.open(scene) as src:
            transform, width, height = calculate_default_transform(
                src.crs, crs, src.width, src.height, *src.bounds
            )
            colour = [i + 1 for i, c in enumerate(src.colorinterp) if c != ColorInterp.alpha]
            dtype = src.dtypes[0]
            fill = np.nan if np.issubdtype(np.dtype(dtype), np.floating) else 0
            data = np.full((len(colour), height, width), fill, dtype)
            warp = {"src_transform": src.transform, "src_crs": src.crs, "dst_transform": transform,
                    "dst_crs": crs}  # fmt: skip
            reproject(src.read(colour), data, resampling=Resampling.cubic, src_nodata=src.nodata,
                      dst_nodata=fill, **warp)  # fmt: skip
            valid = np.zeros((1, height, width), np.uint8)
            reproject(src.dataset_mask()[None], valid, resampling=Resampling.nearest,
                      dst_nodata=0, **warp)  # fmt: skip
            interp = [src.colorinterp[b - 1] for b in colour]
        if dtype == "uint8":
            data = np.concatenate([data, valid])
            return write(
                out, data, interp=[*interp, ColorInterp.alpha], crs=crs, transform=transform
            )
        data[:, valid[0] == 0] = fill
        return write(out, data, interp=interp, nodata=fill, crs=crs, transform=transform)

    return build


def then(first: Callable, second: Callable) -> Callable[[Path, Path], Path]:
    """A variant of a variant: ``second`` applied to what ``first`` wrote."""

    def build(twin: Path, out: Path) -> Path:
        return second(first(twin, out.with_name("first-" + out.name)), out)

    return build


def resampled(metres: float) -> Callable[[Path, Path], Path]:
    """The twin at another ground resolution (area average down, cubic up)."""

    def build(twin: Path, out: Path) -> Path:
        with rasterio.open(twin) as src:
            f = TWIN_RES / metres
            shape = (3, round(src.height * f), round(src.width * f))
            how = Resampling.average if f < 1 else Resampling.cubic
            data = src.read(out_shape=shape, resampling=how)
            t = src.transform
        return write(out, data, crs=TWIN_CRS, transform=from_origin(t.c, t.f, metres, metres))

    return build


def same(twin: Path, out: Path) -> Path:
    """The twin itself: for variants that change how it is predicted, not the file."""
    return twin


@dataclass(frozen=True)
class Variant:
    """The same ground another way: ``build(twin, out) -> scene``; predicted with
    ``options`` (``chunk``, ``processes``); ``iou`` the least roads IoU with the twin and
    ``length`` the largest relative difference of total line length, and why."""

    name: str
    build: Callable[[Path, Path], Path]
    iou: float
    length: float
    why: str
    options: dict = field(default_factory=dict)


EXACT = "the same values reach the network (up to float rounding)"
STRETCH = ("mapped by the scene's own 2-98% stretch, not the exact 1/255: a few grey levels "
           "apart, which moves road edges where the network is unsure (lengths: a fragmented "
           "prediction loses or keeps short pieces)")  # fmt: skip
HOLES = ("the hole changes the context of the roads around it, and cuts roads into pieces "
         "that pruning may drop")  # fmt: skip
WARP = ("warped (turned by the grids' convergence, about 1.4 deg at Boston, and resampled): "
        "the network's own stability under a turn of 0.5 deg is IoU 0.88-0.90 on "
        "cpu.yaml (the control rows of benchmarks/twins.py); the geometry alone is held to 1.5% "
        "by the true roads warped (tests/test_twins.py)")  # fmt: skip
VARIANTS = [
    Variant("12-bit", encoded(16, 0, "uint16"), 0.97, 0.03, "divided by 4,095 instead of 4,080: 0.4% brighter"),
    Variant("16-bit full range", encoded(257, 0, "uint16"), 0.99, 0.01, EXACT),
    Variant("16-bit counts x40 + 1000", encoded(40, 1000, "uint16"), 0.85, 0.2, STRETCH),
    Variant("float 0..1", encoded(1 / 255, 0, "float32"), 0.85, 0.2, STRETCH),
    Variant("float reflectance 0..0.3", encoded(0.3 / 255, 0, "float32"), 0.85, 0.2, STRETCH),
    Variant("float NaN holes, no nodata tag", encoded(1 / 255, 0, "float32", holes=np.nan), 0.8, 0.2,
            STRETCH + "; " + HOLES),
    Variant("float NaN holes, nodata NaN", encoded(1 / 255, 0, "float32", holes=np.nan, nodata=np.nan),
            0.8, 0.2, STRETCH + "; " + HOLES),
    Variant("8-bit nodata holes", encoded(1, 0, "uint8", holes=0, nodata=0), 0.85, 0.2,
            "nodata pixels of value 0 elsewhere; " + HOLES),
    Variant("BGR with band interpretation", bgr, 0.99, 0.01, EXACT),
    Variant("alpha holes", alpha, 0.85, 0.2, HOLES),
    Variant("palette (256 colours)", palette, 0.75, 0.15, "256 colours lose shades"),
    Variant("1 m", resampled(1.0), 0.55, 0.25, "half the detail: narrow roads blur into their verges"),
    Variant("0.125 m", resampled(0.125), 0.75, 0.4,
            "cubic up, then area down to 0.5 m again; lines are pruned below 10 scene px, 1.25 m "
            "here and 5 m at 0.5 m, so a fragmented prediction keeps more short pieces"),
    Variant("Web Mercator", reprojected("EPSG:3857"), 0.75, 0.15, WARP),
    Variant("EPSG:4326", reprojected("EPSG:4326"), 0.75, 0.15, WARP + "; its pixels are not square"),
    Variant("US-feet state plane (EPSG:2249)", reprojected("EPSG:2249"), 0.75, 0.15, WARP),
    Variant("chunks of 256 px", same, 0.97, 0.03, "chunks see 64 px of context, not the whole",
            {"chunk": 256}),
    Variant("2 processes", same, 1.0, 0.0, "the same chunks, in two processes", {"processes": 2}),
]  # fmt: skip


@dataclass(frozen=True)
class Match:
    """A variant against the twin: roads IoU over the ground both cover, total line
    length of each (metres) and their ratio."""

    iou: float
    twin_length: float
    length: float

    @property
    def ratio(self) -> float:
        return self.length / self.twin_length if self.twin_length else float("nan")


def on_twin_grid(path: Path, twin: Path) -> np.ndarray:
    """A one-band prediction brought onto the twin's grid (bilinear), NaN where it has no
    value (its nodata, or off its ground)."""
    with rasterio.open(twin) as ref, rasterio.open(path) as src:
        values = src.read(1, masked=True).astype(np.float32) * np.float32(src.scales[0])
        out = np.full((ref.height, ref.width), np.nan, np.float32)
        reproject(values.filled(np.nan), out, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=ref.transform, dst_crs=ref.crs, resampling=Resampling.bilinear,
                  src_nodata=np.nan, dst_nodata=np.nan)  # fmt: skip
    return out


def road_length(path: Path, threshold: float) -> float:
    """Total length (ground metres) of a prediction's centre lines (``roadseg vectorize``)."""
    from roadseg.vectors import to_frame, vectorize_raster

    frame = to_frame(*vectorize_raster(path, threshold=threshold))
    return float(frame["length"].sum())


def compare(twin_pred: Path, pred: Path, twin: Path, threshold: float, *,
            exclude: tuple | None = None) -> Match:  # fmt: skip
    """Roads (probability above ``threshold``) of ``pred`` against ``twin_pred`` over the
    ground both cover (``exclude``: slices of the twin left out, a hole's surroundings)."""
    a, b = on_twin_grid(twin_pred, twin), on_twin_grid(pred, twin)
    both = np.isfinite(a) & np.isfinite(b)
    if exclude is not None:
        both[exclude] = False
    ra, rb = (a > threshold) & both, (b > threshold) & both
    union = np.count_nonzero(ra | rb)
    iou = np.count_nonzero(ra & rb) / union if union else 1.0
    return Match(iou, road_length(twin_pred, threshold), road_length(pred, threshold))


def masked(pred: Path, region: tuple, out: Path) -> Path:
    """A copy of a prediction with ``region`` (slices of its grid) set to nodata: the
    twin's prediction measured over the ground a variant with a hole covers."""
    with rasterio.open(pred) as src:
        profile, data = src.profile, src.read()
        scales = src.scales
    data[:, region[0], region[1]] = profile["nodata"]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.scales = scales
    return out


def warped_prediction(pred: Path, like: Path, out: Path) -> Path:
    """The twin's prediction warped (bilinear) onto the grid of the scene ``like`` (a
    reprojected variant): the same roads in another CRS, for the ground units alone."""
    with rasterio.open(pred) as src, rasterio.open(like) as ref:
        values = src.read(1).astype(np.float32) * np.float32(src.scales[0])
        values[src.read_masks(1) == 0] = np.nan
        out_values = np.full((1, ref.height, ref.width), np.nan, np.float32)
        reproject(values[None], out_values, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=ref.transform, dst_crs=ref.crs, resampling=Resampling.bilinear,
                  src_nodata=np.nan, dst_nodata=np.nan)  # fmt: skip
        geo = {"crs": ref.crs, "transform": ref.transform}
    out_values[np.isnan(out_values)] = -1
    return write(out, out_values, nodata=-1.0, **geo)


def around_hole(margin: int = 64) -> tuple[slice, slice]:
    """The hole and ``margin`` px around it: ground whose context the hole changed."""
    return (slice(HOLE[0].start - margin, HOLE[0].stop + margin),
            slice(HOLE[1].start - margin, HOLE[1].stop + margin))  # fmt: skip
