"""What imagery a model was trained on, and how any raster is brought to it.

A checkpoint records an :class:`Imagery`: the per-band 2nd and 98th percentiles of the
training images as the network saw them (in [0, 1]), the pixel type they came in, and
their ground resolution (metres per pixel). Prediction brings a scene to it:

- **radiometry** (:class:`Radiometry`): 8-bit input is divided by 255, as always (bit for
  bit the same as before). Integers that fill their own bit depth's range, as 8-bit
  imagery does (12-bit values up to 4,095 in uint16: 2nd percentile in the lowest
  quarter, 98th above 60%), are divided by it (4,095), but only when that division
  gives what the model saw: the scene's 2nd and 98th percentiles so divided within
  :data:`RULE_TOLERANCE` of the training imagery's (raw counts with an offset pass the
  guess and fail this check, and are stretched). Anything else (16-bit raw counts,
  float reflectance) is stretched from the scene's own 2nd-98th percentiles (sampled in
  a streaming pass, never the whole raster; NaN and infinities are no data, tagged or
  not) onto the model's, as Raster Vision's ``StatsTransformer`` and
  QGIS's cumulative-cut stretch do, with one gain for all bands: the scene's colour
  balance is kept (matching each band alone moved cpu.yaml's masks of its own training
  imagery to IoU 0.87, the network being sensitive to colour; docs/imagery.md); or from
  ``--input-range LOW HIGH``; or, with ``--input-range none``, by the type's full range
  (both kept as given, and warned about by :func:`check_mapped` when far off);
- **palettes**: a lone palette band is read through its colour table as 8-bit R, G, B
  (:func:`palette_lut`), its transparent entries no data;
- **resolution**: a scene whose metres per pixel differ from the model's by more than 5%
  is resampled to the model's on the fly (:mod:`roadseg.scene`).

Checkpoints trained before this was recorded get :data:`COMPETITION`, measured on the
cil-2022 training tiles, and say so. ``docs/imagery.md`` explains the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from roadseg.errors import RoadsegError

PERCENTILES = (2.0, 98.0)
# Metres per pixel of the CIL competitions' Google Maps tiles (no georeference is
# published): roads of cil-2022's labels are 16 px wide (median, centre line to edge x 2),
# 8 m for a two-lane US street at 0.5 m; Google's zoom 18 at 33-40 deg N is 0.46-0.50 m;
# and the Massachusetts tiles (1 m) score best upsampled x2 (docs/imagery.md).
COMPETITION_RESOLUTION = 0.5
# A scene this close to the model's resolution (relative difference) is not resampled.
RESOLUTION_TOLERANCE = 0.05
SAMPLE_SIDE = 1024  # statistics are taken on a decimated read of at most this side
# How far (in [0, 1]) a rule's mapped 2nd or 98th percentile (all bands) may be from the
# training imagery's before the rule is not trusted: whole 8-bit sources differ from
# cil-2022's 0.137..0.949 by up to 0.11 (cil-2020 0.012..0.839, Massachusetts
# 0.063..0.898; 97.5% of single cil-2022 tiles are within 0.15), and their 12/16-bit
# versions must keep their exact division; raw counts with an offset or a gain miss by
# 0.2 and more (x 40 + 1,000 read as 14 bits: 0.146..0.652, 0.30 short at the top).
RULE_TOLERANCE = 0.15


@dataclass(frozen=True)
class Imagery:
    """The imagery a model was trained on: ``low``/``high`` the per-band (R, G, B) 2nd and
    98th percentiles in [0, 1] as the network saw them, ``pooled`` those of all bands
    together (what scenes are stretched onto); ``dtype`` what the files held;
    ``resolution`` metres per pixel (None: unknown); ``origin`` where the figures are from."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    pooled: tuple[float, float]
    dtype: str = "uint8"
    resolution: float | None = COMPETITION_RESOLUTION
    origin: str = "measured on the training tiles"

    def to_dict(self) -> dict:
        return {
            "low": [round(v, 6) for v in self.low], "high": [round(v, 6) for v in self.high],
            "pooled": [round(v, 6) for v in self.pooled], "dtype": self.dtype, "resolution": self.resolution, "origin": self.origin,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Imagery:
        return cls(low=tuple(d["low"]), high=tuple(d["high"]), pooled=tuple(d["pooled"]), dtype=d.get("dtype", "uint8"),
                   resolution=d.get("resolution"), origin=d.get("origin", "recorded"))  # fmt: skip

    def describe(self) -> str:
        res = f"{self.resolution:g} m/px" if self.resolution else "resolution unknown"
        lo = "/".join(f"{v * 255:.0f}" for v in self.low)
        hi = "/".join(f"{v * 255:.0f}" for v in self.high)
        return f"{self.dtype} RGB, 2-98% {lo}..{hi} of 255, {res} ({self.origin})"


# cil-2022's 120 training tiles, all pixels: 2nd percentile 28/41/44, 98th 242/242/240
# (R/G/B); all bands together 35 and 242
COMPETITION = Imagery(
    low=(28 / 255, 41 / 255, 44 / 255), high=(242 / 255, 242 / 255, 240 / 255),
    pooled=(35 / 255, 242 / 255),
    origin="not recorded in this checkpoint: the competition's cil-2022 tiles",
)  # fmt: skip


def imagery_of(ckpt: dict) -> Imagery:
    """The imagery a checkpoint (its contents) was trained on; :data:`COMPETITION` for
    checkpoints that did not record it."""
    recorded = ckpt.get("roadseg_imagery")
    return Imagery.from_dict(recorded) if recorded else COMPETITION


def ensemble_imagery(paths: list, contents: list[dict]) -> Imagery:
    """The imagery of an ensemble's first member; members trained at another resolution
    are refused (one scene is resampled once, for all of them)."""
    first = imagery_of(contents[0])
    for path, ckpt in zip(paths[1:], contents[1:], strict=True):
        other = imagery_of(ckpt).resolution
        if other != first.resolution:
            raise RoadsegError(
                f"trained at {other} m/px, the ensemble's first member at "
                f"{first.resolution} m/px: ensemble models of one resolution",
                path,
            )
    return first


@dataclass(frozen=True)
class Radiometry:
    """How raw pixel values become the network's [0, 1]: ``unit = raw * scale + offset``
    per band, clipped to [0, 1]; ``divide`` alone (no clip) for 8-bit, as before."""

    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    divide: float | None = None
    how: str = ""
    notes: tuple[str, ...] = field(default=())

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw ``(bands, h, w)`` -> float32 in [0, 1]; NaN and infinities become 0."""
        if self.divide is not None:
            return raw.astype(np.float32) / np.float32(self.divide)
        out = raw.astype(np.float32)
        bad = ~np.isfinite(out) if raw.dtype.kind == "f" else None
        scale = np.asarray(self.scale, np.float32)[:, None, None]
        offset = np.asarray(self.offset, np.float32)[:, None, None]
        out = out * scale + offset
        np.clip(out, 0.0, 1.0, out=out)
        if bad is not None:
            out[bad] = 0.0
        return out

    def to_dict(self) -> dict:
        return {"scale": list(self.scale), "offset": list(self.offset), "divide": self.divide}


def full_range(dtype: np.dtype) -> float | None:
    """The divisor of a pixel type's full range (uint8 255, uint16 65535, float 1)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    return None


def stretch(low: np.ndarray, high: np.ndarray, to_low, to_high, how: str) -> Radiometry:
    """The per-band linear map taking ``low`` -> ``to_low`` and ``high`` -> ``to_high``."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    to_low, to_high = np.asarray(to_low, np.float64), np.asarray(to_high, np.float64)
    span = np.where(high - low > 0, high - low, 1.0)
    scale = (to_high - to_low) / span
    offset = to_low - low * scale
    return Radiometry(scale=tuple(map(float, scale)), offset=tuple(map(float, offset)), how=how)


def plan_radiometry(
    dtype: np.dtype, sample: np.ndarray | None, model: Imagery, input_range, path
) -> Radiometry:
    """How a raster of ``dtype`` is mapped for a model trained on ``model`` imagery.

    ``sample``: the raster's valid pixels ``(bands, n)`` (:func:`sample_pixels`), used for
    ``auto``; ``input_range``: ``"auto"``, ``"none"`` or ``(low, high)`` raw values.
    """
    dtype = np.dtype(dtype)
    kind = dtype.name
    if isinstance(input_range, (tuple, list)):
        low, high = map(float, input_range)
        return stretch([low] * 3, [high] * 3, [0.0] * 3, [1.0] * 3,
                       f"{kind} values {low:g}..{high:g} mapped to 0..1 (--input-range)")  # fmt: skip
    divide = full_range(dtype)
    if input_range == "none" or (input_range == "auto" and dtype == np.uint8):
        if divide is None:
            raise RoadsegError(f"unsupported pixel type {kind}; use 8/16-bit or float", path)
        if dtype == np.uint8:
            return Radiometry(divide=255.0, how="8-bit, divided by 255")
        return stretch([0.0] * 3, [divide] * 3, [0.0] * 3, [1.0] * 3,
                       f"{kind} divided by its full range {divide:g} (--input-range none)")  # fmt: skip
    if input_range != "auto":
        raise RoadsegError(f"--input-range: {input_range!r} is not auto, none or LOW HIGH")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise RoadsegError(f"unsupported pixel type {kind}; use 8/16-bit or float", path)
    if sample is None or sample.shape[1] == 0:
        raise RoadsegError(
            f"{kind} raster with no valid pixel to take statistics from; give "
            "--input-range LOW HIGH",
            path,
        )
    low, high = np.percentile(sample, PERCENTILES)
    refused = ""
    if np.issubdtype(dtype, np.integer):
        filled, refused = _filled_bit_depth(sample, low, high, kind, model)
        if filled is not None:
            return filled
    onto = (f"onto the model's training imagery's ({model.pooled[0] * 255:.0f}.."
            f"{model.pooled[1] * 255:.0f} of 255)")  # fmt: skip
    how = (f"{refused}: the scene's 2-98% stretched {onto}" if refused else
           f"{kind}: the scene's 2-98% ({low:g}..{high:g}, all bands) stretched {onto}")  # fmt: skip
    return stretch([low] * 3, [high] * 3, [model.pooled[0]] * 3, [model.pooled[1]] * 3, how)


def _filled_bit_depth(
    sample: np.ndarray, low: float, high: float, kind: str, model: Imagery
) -> tuple[Radiometry | None, str]:
    """Integers that fill their own bit depth's range as 8-bit imagery does (2nd
    percentile in its lowest quarter, 98th above 60%), divided by it: ``(the division,
    "")`` when that gives what the model saw (:func:`off_model`); else ``(None, why
    not)``, ``why`` empty when the values do not fill a bit depth at all."""
    top = float(np.percentile(sample, 99.99))
    bits = max(1, math.ceil(math.log2(top + 1))) if top > 0 else 1
    full = 2.0**bits - 1
    if not (low <= 0.25 * full and high >= 0.6 * full):
        return None, ""
    off = off_model(low / full, high / full, model)
    if off:
        return None, (f"{kind} values {low:,.0f}..{high:,.0f} (2-98%) do not fill {bits} bits "
                      f"as imagery does ({off})")  # fmt: skip
    return stretch([0.0] * 3, [full] * 3, [0.0] * 3, [1.0] * 3,
                   f"{kind} of {bits}-bit values filling their range (2-98%: {low:g}.."
                   f"{high:g}): divided by {full:g}, as 8-bit by 255"), ""  # fmt: skip


def off_model(low: float, high: float, model: Imagery) -> str:
    """``""`` when a scene's mapped 2nd and 98th percentiles (all bands, in [0, 1]) are
    within :data:`RULE_TOLERANCE` of the model's training imagery's; else the figures."""
    if max(abs(low - model.pooled[0]), abs(high - model.pooled[1])) <= RULE_TOLERANCE:
        return ""
    return (f"they would map to {low:.2f}..{high:.2f}, the model saw "
            f"{model.pooled[0]:.2f}..{model.pooled[1]:.2f}")  # fmt: skip


CHECK_PIXELS = 1 << 18  # pixels check_mapped looks at: its shares and median, to 0.2%
CHECK_SIDE = 512  # a decimated read of this side holds CHECK_PIXELS


def thinned(pixels: np.ndarray, count: int = CHECK_PIXELS) -> np.ndarray:
    """At most ``count`` of the pixels ``(bands, n, ...)``, drawn at random (seeded): a
    share as telling as all, where a stride would keep the same columns of every row."""
    if pixels.shape[1] <= count:
        return pixels
    return pixels[:, np.random.default_rng(0).integers(0, pixels.shape[1], count)]


def check_mapped(unit: np.ndarray, model: Imagery, path, rule: str | None = None) -> str | None:
    """One line warning when a scene's mapped pixels ``(3, n)`` look like nothing the model
    saw (mostly black or saturated, or a median outside its training range); else None.
    ``rule``: the user's explicit mapping (``--input-range ...``), kept as given but also
    warned about when its 2-98% is off the model's (:func:`off_model`)."""
    if unit.shape[1] == 0:
        return None
    unit = thinned(unit)
    dark = float(np.mean(np.all(unit <= 0.02, axis=0)))
    bright = float(np.mean(np.all(unit >= 0.98, axis=0)))
    # the middle pixel, by a partition: np.median's first call imports numpy.ma (0.02 s)
    median = np.partition(unit, unit.shape[1] // 2, axis=1)[:, unit.shape[1] // 2]
    lows, highs = np.asarray(model.low), np.asarray(model.high)
    if dark > 0.5 or bright > 0.5:
        what = f"{dark:.0%} black" if dark > 0.5 else f"{bright:.0%} saturated"
        return (f"{path}: after mapping, {what} pixels; the model never saw such imagery. "
                "Check --input-range and --bands")  # fmt: skip
    off = off_model(*np.percentile(unit, PERCENTILES), model) if rule else ""
    if off:
        return (f"{path}: {rule} maps the scene's 2-98% far from the training imagery's "
                f"({off}); predictions may be poor. --input-range auto stretches it")  # fmt: skip
    if np.any(median < lows) or np.any(median > highs):
        m = "/".join(f"{v * 255:.0f}" for v in median)
        return (f"{path}: after mapping, the median pixel is {m} of 255, outside the model's "
                "training 2-98% range; predictions may be poor. Check --input-range and --bands")  # fmt: skip
    return None


def palette_lut(src, bands: tuple[int, ...]) -> np.ndarray | None:
    """The colour table of a lone palette band as a ``(4, n)`` uint8 RGBA lookup (entries
    it does not list opaque black); None when ``bands`` are not one palette band."""
    from rasterio.enums import ColorInterp

    if len(bands) != 1 or src.colorinterp[bands[0] - 1] != ColorInterp.palette:
        return None
    table = src.colormap(bands[0])
    lut = np.zeros((4, max(256, max(table, default=0) + 1)), np.uint8)
    lut[3] = 255
    for index, rgba in table.items():
        lut[: len(rgba), index] = rgba[:4]
    return lut


def through_palette(indices: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Palette indices ``(1, ...)`` -> (uint8 R, G, B ``(3, ...)``, where the colour table is
    not transparent)."""
    rgba = np.take(lut, indices[0].astype(np.int64), axis=1, mode="clip")
    return rgba[:3], rgba[3] > 0


def resized(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``(3, h, w)`` resampled to ``shape`` by GDAL's cubic read, as the scene's other
    bands are read (no torch: the light install predicts palette scenes too)."""
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        profile = {"driver": "GTiff", "width": rgb.shape[2], "height": rgb.shape[1],
                   "count": rgb.shape[0], "dtype": "uint8"}  # fmt: skip
        with mem.open(**profile) as dst:
            dst.write(np.ascontiguousarray(rgb, dtype=np.uint8))
        with mem.open() as src:
            return src.read(out_shape=(rgb.shape[0], *shape), resampling=Resampling.cubic)
