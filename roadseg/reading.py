"""Any raster as the network needs it: bands picked, radiometry mapped, resampled to the
model's ground resolution, with its validity (nodata, alpha) kept.

:class:`SceneReader` wraps an open rasterio dataset; ``read(window)`` returns the window's
image at the model's resolution and the window's valid pixels on the scene's own grid,
and ``to_scene(prob, h, w)`` brings a map back to that grid. :meth:`SceneReader.lines`
says, one line each, what was done to the scene, which ``roadseg predict`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from roadseg.errors import RoadsegError
from roadseg.imagery import (
    CHECK_SIDE,
    RESOLUTION_TOLERANCE,
    SAMPLE_SIDE,
    Imagery,
    Radiometry,
    check_mapped,
    palette_lut,
    plan_radiometry,
    resized,
    thinned,
    through_palette,
)
from roadseg.patches import PATCH_SIZE


@dataclass(frozen=True)
class ReadOptions:
    """How to read a scene: ``bands`` 1-based (None: from the colour interpretation, else
    the first three), ``input_range`` ``auto``/``none``/``(low, high)``, ``resolution``
    ``auto`` (from the georeference), ``native`` (never resample) or the scene's metres
    per pixel."""

    bands: tuple[int, ...] | None = None
    input_range: str | tuple[float, float] = "auto"
    resolution: str | float = "auto"

    @classmethod
    def parse(cls, bands: str | None, input_range: str | None, resolution) -> ReadOptions:
        """From option strings: ``bands`` ``"3,2,1"``; ``input_range`` ``"auto"``, ``"none"``
        or ``"LOW HIGH"``; ``resolution`` ``"auto"``, ``"native"`` or metres."""
        return cls(bands=_parse_bands(bands), input_range=_parse_range(input_range),
                   resolution=_parse_resolution(resolution))  # fmt: skip


def _parse_bands(bands) -> tuple[int, ...] | None:
    if bands in (None, ""):
        return None
    try:
        picked = tuple(int(b) for b in str(bands).replace(" ", "").split(","))
    except ValueError:
        raise RoadsegError(f"--bands {bands!r}: give 1-based band numbers, as 3,2,1") from None
    if len(picked) not in (1, 3) or min(picked) < 1:
        raise RoadsegError(f"--bands {bands!r}: give one band (grey) or three (R,G,B), from 1")
    return picked


def _parse_range(input_range) -> str | tuple[float, float]:
    if input_range in (None, ""):
        return "auto"
    words = str(input_range).replace(",", " ").split()
    if len(words) == 1 and words[0] in ("auto", "none"):
        return words[0]
    try:
        low, high = (float(w) for w in words)
    except ValueError:
        raise RoadsegError(
            f"--input-range {input_range!r}: give auto, none, or LOW HIGH (raw values)"
        ) from None
    if not high > low:
        raise RoadsegError(f"--input-range: HIGH ({high:g}) must be above LOW ({low:g})")
    return (low, high)


def _parse_resolution(resolution) -> str | float:
    if resolution in (None, "") or str(resolution) in ("auto", "native"):
        return str(resolution or "auto")
    try:
        res = float(resolution)
    except ValueError:
        raise RoadsegError(
            f"--resolution {resolution!r}: give auto, native or metres per pixel"
        ) from None
    if not res > 0:
        raise RoadsegError(f"--resolution {resolution!r} must be positive metres")
    return res


def pick_bands(src, bands: tuple[int, ...] | None) -> tuple[tuple[int, ...], list[str]]:
    """The bands read, in R, G, B order (or one grey band), and what was said about them."""
    interp = list(src.colorinterp)
    count = src.count
    alpha = [i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha]
    notes = []
    if bands is not None:
        bad = [b for b in bands if b > count]
        if bad:
            raise RoadsegError(
                f"--bands: band {bad[0]} asked for, the raster has {count}", src.name
            )
        chosen = tuple(bands)
        notes.append(
            f"bands {','.join(map(str, chosen))} read as {'grey' if len(chosen) == 1 else 'R,G,B'} (--bands)"
        )
    else:
        rest = [b for b in range(1, count + 1) if b not in alpha]
        rgb = [
            i + 1 for want in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            for i, c in enumerate(interp) if c == want
        ]  # fmt: skip
        if len(rgb) == 3:
            chosen = tuple(rgb)
            if chosen != (1, 2, 3):
                notes.append(
                    f"bands {','.join(map(str, chosen))} read as R,G,B (their colour interpretation)"
                )
        elif len(rest) == 1:
            chosen = (rest[0],)
        elif len(rest) >= 3:
            chosen = tuple(rest[:3])
        else:
            raise RoadsegError(
                f"{count} bands, none marked red, green and blue: say which with --bands R,G,B",
                src.name,
            )
    for b in alpha:
        if b not in chosen:
            notes.append(f"band {b} (alpha) read as the nodata mask")
    dropped = [b for b in range(1, count + 1) if b not in chosen and b not in alpha]
    if dropped:
        names = ", ".join(f"{b} ({interp[b - 1].name})" for b in dropped)
        notes.append(
            f"band{'s' if len(dropped) > 1 else ''} {names} left out (choose with --bands)"
        )
    return chosen, notes


def ground_resolution(src, hint: str = "--resolution METRES") -> tuple[float | None, str]:
    """The scene's ground metres per pixel (None: unknown) and how it was found: the
    geometric mean of its pixel's sides (:func:`pixel_metres`)."""
    sides, how = pixel_metres(src, hint)
    return (math.sqrt(sides[0] * sides[1]) if sides else None), how


def pixel_metres(src, hint: str = "--resolution METRES") -> tuple[tuple[float, float] | None, str]:
    """The scene's pixel ``(across, down)`` in ground metres, measured on its datum's
    ellipsoid at its centre (:func:`roadseg.ground.raster_pixel_metres`: projections' scale,
    feet, degrees, rotated transforms, GCPs), and how it was found; None without a CRS or
    with only RPCs. A local CRS without a datum is a RoadsegError saying to give ``hint``."""
    from roadseg.ground import raster_pixel_metres

    return raster_pixel_metres(src, hint)


def sample_pixels(src, bands: tuple[int, ...], side: int = SAMPLE_SIDE) -> np.ndarray:
    """Valid raw pixels ``(bands, n)`` of the raster, sampled without reading it whole: a
    decimated read of at most ``side`` px (overviews when it has them) of small or pyramided
    rasters, else a grid of 64 windows of 256 px spread over it. NaN and infinite pixels are
    no data (with a nodata tag or without) and left out."""
    h, w = src.height, src.width
    if max(h, w) <= 2 * SAMPLE_SIDE or src.overviews(1):
        step = max(h, w) / side
        shape = (unlocked_count(h, step), unlocked_count(w, step))
        raw = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        sample = raw[:, src.dataset_mask(out_shape=shape) > 0]
    else:
        side, n = 256, 8
        pieces = []
        for r in np.linspace(0, h - side, n).astype(int):
            for c in np.linspace(0, w - side, n).astype(int):
                win = Window(int(c), int(r), side, side)
                raw = src.read(list(bands), window=win)
                pieces.append(raw[:, src.dataset_mask(window=win) > 0])
        sample = np.concatenate(pieces, axis=1)
    if sample.dtype.kind == "f":
        sample = sample[:, np.isfinite(sample).all(axis=0)]
    return sample


def unlocked_count(size: int, step: float) -> int:
    """How many pixels of ``size`` a decimated read about ``step`` apart takes, so that its
    step is locked to no pattern of period 1 to 4: a nearest read at a whole or half step
    (1,024 px read as 512; 768 as 512) takes only some phases of such a pattern (a 2-px
    checkerboard read as all black or none), where a step a little off them drifts through
    every phase, by 4 px or more across the row. A short side that finds no such count is
    read whole."""
    if step <= 1:
        return size
    first = max(1, round(size / step))
    for count in range(first, max(0, first * 7 // 8), -1):
        s = size / count
        if all(abs(s * q - round(s * q)) / q * count >= 4 for q in (1, 2, 3, 4)):
            return count
    return size if size <= 2 * SAMPLE_SIDE else first


def sample_rgb(src, bands: tuple[int, ...], side: int = SAMPLE_SIDE) -> np.ndarray:
    """:func:`sample_pixels` as three bands, as they are read: a grey band repeated, a
    palette band through its colour table (its transparent entries left out)."""
    sample = sample_pixels(src, bands, side)
    lut = palette_lut(src, bands)
    if lut is not None:
        rgb, opaque = through_palette(sample, lut)
        return rgb[:, opaque]
    return np.repeat(sample, 3, axis=0) if len(bands) == 1 else sample


class SceneReader:
    """An open raster read as a model of ``imagery`` needs it (module doc)."""

    def __init__(self, src, imagery: Imagery, options: ReadOptions | None = None):
        options = options or ReadOptions()
        self.src, self.imagery = src, imagery
        self.bands, self.notes = pick_bands(src, options.bands)
        self.scales, self.resolution_line = scene_factor(src, imagery, options.resolution)
        self.factor = max(self.scales)
        self.palette = palette_lut(src, self.bands)  # a palette band: read as 8-bit R, G, B
        dtype = np.dtype(src.dtypes[self.bands[0] - 1] if self.palette is None else np.uint8)
        # one sample: the statistics of a stretch, and the check of what the model will see;
        # a mapping that takes no statistics needs only the check's share (4x quicker)
        stats = options.input_range == "auto" and dtype != np.uint8
        sample = sample_rgb(src, self.bands, SAMPLE_SIDE if stats else CHECK_SIDE)
        self.radiometry: Radiometry = plan_radiometry(
            dtype, sample, imagery, options.input_range, src.name
        )
        given = options.input_range  # the user's own rule is kept, and checked
        rule = None if given == "auto" else "--input-range " + (
            given if given == "none" else f"{given[0]:g} {given[1]:g}")  # fmt: skip
        few = thinned(sample)[:, :, None]  # as telling as the whole sample, and quicker
        self.warning = check_mapped(self.radiometry.apply(few)[:, :, 0], imagery, src.name, rule)

    def lines(self) -> list[str]:
        """What is done to the scene, one line each."""
        notes = self.notes
        if self.palette is not None:  # colour-table indices, not grey levels
            notes = [f"band {self.bands[0]} read through its colour table as R,G,B",
                     *(n for n in notes if "read as grey" not in n)]  # fmt: skip
        return [f"pixels: {self.radiometry.how}", self.resolution_line, *notes]

    def chunk_side(self, chunk: int) -> int:
        """Chunk side on the scene's grid whose resampled image is about ``chunk`` px."""
        return chunk_side(chunk, self.factor)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The window as float32 RGB ``(3, H, W)`` in [0, 1] at the model's resolution, and
        its valid pixels ``(h, w)`` on the scene's grid: not nodata, alpha or a colour
        table's transparent entry, and not NaN or infinite (tagged or not; 0 in the image)."""
        h, w = int(window.height), int(window.width)
        shape = (max(1, round(h * self.scales[0])), max(1, round(w * self.scales[1])))
        valid = self.src.dataset_mask(window=window) > 0
        if self.palette is not None:
            indices = self.src.read(list(self.bands), window=window)
            raw, opaque = through_palette(indices, self.palette)
            raw, valid = (raw if shape == (h, w) else resized(raw, shape)), valid & opaque
        elif self.scales == (1.0, 1.0):
            raw = self.src.read(list(self.bands), window=window)
        else:
            raw = self.src.read(list(self.bands), window=window,
                                out_shape=(len(self.bands), *shape), resampling=Resampling.cubic)  # fmt: skip
        if raw.dtype.kind == "f":
            native = (
                raw if raw.shape[1:] == (h, w) else self.src.read(list(self.bands), window=window)
            )
            valid &= np.isfinite(native).all(axis=0)  # NaN, infinities: no data, tagged or not
        # resampled floats next to a hole: NaN spread by the cubic filter into pixels beside
        # it (read as 0 by the radiometry) is no ground to fill it with. Read natively, those
        # are invalid already; with no hole there is nothing to fill (no work per chunk)
        resampled_float = raw.dtype.kind == "f" and raw.shape[1:] != (h, w)
        usable = np.isfinite(raw).all(axis=0) if resampled_float and not valid.all() else None
        if raw.shape[0] == 1:
            raw = np.repeat(raw, 3, axis=0)
        return fill_nodata(self.radiometry.apply(raw), valid, usable), valid

    def to_scene(self, prob: np.ndarray, h: int, w: int) -> np.ndarray:
        """Maps ``(K, H, W)`` at the model's resolution -> ``(K, h, w)`` on the scene's grid
        (bilinear, antialiased: :func:`resize_maps`)."""
        if prob.shape[-2:] == (h, w):
            return prob
        return resize_maps(prob, h, w)


def fill_nodata(
    image: np.ndarray, valid: np.ndarray, usable: np.ndarray | None = None
) -> np.ndarray:
    """``image`` ``(3, H, W)`` with its pixels off ``valid`` (on the scene's grid, resized
    to the image's by nearest) set to the nearest valid pixel's: the network sees the ground
    go on at a nodata border, as it sees a raster's edge padded by reflection, instead of a
    black wall (a reprojected scene's nodata wedges cut the centre lines of the roads that
    reach them short). ``usable``: pixels of the image (its grid) that may be copied, when
    not all valid ones may. Unchanged when every pixel is valid or none is."""
    if valid.all() or not valid.any():
        return image
    h, w = image.shape[1:]
    if valid.shape != (h, w):
        rows = np.minimum((np.arange(h) + 0.5) * valid.shape[0] / h, valid.shape[0] - 1)
        cols = np.minimum((np.arange(w) + 0.5) * valid.shape[1] / w, valid.shape[1] - 1)
        valid = valid[rows.astype(int)[:, None], cols.astype(int)[None]]
    if usable is not None:
        valid = valid & usable
    if valid.all() or not valid.any():
        return image
    from scipy.ndimage import distance_transform_edt  # imported where there is nodata

    # nearest on every FILL_STEP-th pixel (4 times less work): each hole pixel takes the
    # value of the valid sample nearest to its own sample cell (a pixel within one or two of the
    # nearest valid one), up to FILL_BAND px from the ground: farther, nothing the network
    # sees of valid ground changes (0.7 s -> 0.23 s for a 2,200 px chunk a fifth no data)
    step = FILL_STEP if min(h, w) >= 16 * FILL_STEP else 1
    samples = valid[::step, ::step]
    if not samples.any():
        step, samples = 1, valid
    dist, near = distance_transform_edt(~samples, return_indices=True)
    cells = np.repeat(np.repeat(dist <= FILL_BAND / step, step, axis=0), step, axis=1)
    rows, cols = np.nonzero(~valid & cells[:h, :w])
    cell = (rows // step, cols // step)
    out = image.copy()
    out[:, rows, cols] = image[:, near[0][cell] * step, near[1][cell] * step]
    return out


FILL_STEP, FILL_BAND = 2, 128


def aa_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(input indices, weights), each ``(n_out, taps)``, of a bilinear, antialiased resize
    along one axis: a triangle filter widened by the scale when shrinking, pixel centres at
    half pixels, weights renormalised at the edges. What PyTorch's ``interpolate(mode=
    "bilinear", antialias=True, align_corners=False)`` and PIL compute (to about 1e-4)."""
    scale = n_in / n_out
    support = max(scale, 1.0)  # half-width of the filter, in input pixels
    inv = 1.0 / scale if scale >= 1 else 1.0
    centre = scale * (np.arange(n_out) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    index = lo[:, None] + np.arange(int((hi - lo).max()))[None]
    weight = np.clip(1.0 - np.abs((index - centre[:, None] + 0.5) * inv), 0.0, None)
    weight[index >= hi[:, None]] = 0.0
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
    return np.minimum(index, n_in - 1), weight.astype(np.float32)


def resize_maps(prob: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(K, H, W)`` float32 maps resized to ``(K, h, w)`` by :func:`aa_taps`, columns then
    rows, as sparse products (no torch: the light install resamples scenes too)."""
    rows, cols = _taps_matrix(prob.shape[-2], h), _taps_matrix(prob.shape[-1], w)
    out = np.empty((prob.shape[0], h, w), np.float32)
    for k, plane in enumerate(prob):
        out[k] = rows @ np.asarray(cols @ plane.T).T
    return out


def _taps_matrix(n_in: int, n_out: int):
    """:func:`aa_taps` as a sparse ``(n_out, n_in)`` matrix."""
    from scipy.sparse import csr_matrix

    index, weight = aa_taps(n_in, n_out)
    taps = index.shape[1]
    starts = np.arange(0, n_out * taps + 1, taps)
    matrix = csr_matrix((weight.ravel(), index.ravel(), starts), shape=(n_out, n_in))
    matrix.eliminate_zeros()  # taps of no weight: a NaN there spreads no further than torch's
    return matrix


def scene_reader(src, imagery: Imagery, read: ReadOptions | None) -> SceneReader:
    """:class:`~roadseg.reading.SceneReader` of an open raster; a file that cannot be read
    (truncated, corrupt) is one line naming it."""
    try:
        return SceneReader(src, imagery, read)
    except RasterioIOError as err:
        raise RoadsegError(f"truncated or corrupt raster ({err})", src.name) from err


def chunk_side(chunk: int, factor: float) -> int:
    """Chunk side on a scene's grid whose image resampled by ``factor`` is about ``chunk``
    px (whole patches, at least 256 px)."""
    if factor <= 1:
        return chunk
    return max(16 * PATCH_SIZE, int(chunk / factor) // PATCH_SIZE * PATCH_SIZE)


def scene_factor(src, imagery: Imagery, option) -> tuple[tuple[float, float], str]:
    """(resampling factors (down, across), the line saying it): the scene's metres per
    pixel over the model's, along each axis."""
    model = imagery.resolution
    if option == "native":
        return (1.0, 1.0), "resolution: read as it is (--resolution native)"
    if option == "auto":
        sides, how = pixel_metres(src)
        if sides is None:
            return (1.0, 1.0), (f"resolution: {how}, read as it is (give --resolution "
                                "METRES if its pixels are not about the model's "
                                f"{model or 'unknown'} m)")  # fmt: skip
    else:
        sides, how = (float(option), float(option)), "--resolution"
    scene = (
        f"{sides[0]:.3g} m/px"
        if abs(sides[0] / sides[1] - 1) < 1e-3
        else f"{sides[0]:.3g} x {sides[1]:.3g} m"
    )
    if model is None:
        return (1.0, 1.0), f"resolution: {scene} ({how}); the model's is unknown, read as it is"
    across, down = sides[0] / model, sides[1] / model
    if max(abs(across - 1), abs(down - 1)) <= RESOLUTION_TOLERANCE:
        return (1.0, 1.0), f"resolution: {scene} ({how}), the model's {model:g} m: read as it is"
    factor = (
        f"x{across:.3g}"
        if abs(across / down - 1) < 1e-3
        else f"x{across:.3g} across, x{down:.3g} down"
    )
    return (down, across), (f"resolution: {scene} ({how}), resampled {factor} to the model's "
                            f"{model:g} m/px; outputs on the scene's own grid")  # fmt: skip


def source_resolution(image: str, given: float | None) -> tuple[float | None, str]:
    """A training source's metres per pixel: ``given`` (config), else its first image's
    georeference, else None (unknown)."""
    if given is not None:
        return float(given), "data.resolutions"
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(image) as src:
            return ground_resolution(
                src, "its metres per pixel in the config (data.resolution, data.resolutions)"
            )


def source_radiometry(images: list[str], target: Imagery, root) -> Radiometry | None:
    """How a training source's pixels become [0, 1]: None for 8-bit (divided by 255, as
    ever); else from statistics of up to 16 of its images, as a scene's
    (:class:`SceneReader`)."""
    import warnings

    import rasterio

    samples, dtype = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for path in images[:: max(1, len(images) // 16)][:16]:
            with rasterio.open(path) as src:
                dtype = np.dtype(src.dtypes[0])
                if dtype == np.uint8:
                    return None
                samples.append(sample_rgb(src, pick_bands(src, None)[0]))
    return plan_radiometry(dtype, np.concatenate(samples, axis=1), target, "auto", root)
