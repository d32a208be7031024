"""Roads as lines: centre lines of a road mask as a graph of junctions and segments.

The mask is thinned to one-pixel centre lines (scikit-image), the skeleton's pixels are
linked into chains between junctions and ends, and each chain becomes a LineString in
the raster's CRS with its length (ground metres, geodesic on the ellipsoid of the CRS's
datum, :mod:`roadseg.ground`; pixels without a CRS), mean road probability and estimated
width (twice the distance from the centre line to the mask's edge, same unit).

Large rasters stream chunk by chunk: each chunk is thinned with a margin around it, so
its skeleton is the whole raster's, and keeps the links of the pixels it owns; a link
between two pixels belongs to the chunk of the first of them in raster order. Chains
then end at chunk borders, and :func:`join_pieces` joins them where exactly two meet, so
a road across a chunk border is one line and memory holds one chunk of pixels.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage
from skimage.morphology import skeletonize
from tqdm import tqdm

from roadseg.errors import RoadsegError
from roadseg.ground import Ruler, ruler
from roadseg.io import atomic_path

# 8-neighbour offsets (dr, dc) that come after a pixel in raster order: each link once
FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class Piece:
    """A chain of skeleton pixels ``(n, 2)`` (row, col), with sums of the probability and
    of the distance to the mask's edge over its pixels (all but its first, so that chains
    joined end to end count each pixel once)."""

    pixels: np.ndarray
    prob_sum: float
    half_width_sum: float
    count: int


def _links(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Links between 8-neighbouring skeleton pixels as (first, second) flat indices; a
    diagonal link is dropped where a pixel beside both makes it a corner of a triangle, so
    a bend is not read as a junction."""
    h, w = skeleton.shape
    firsts, seconds = [], []
    for dr, dc in FORWARD:
        a = skeleton[: h - dr, max(0, -dc) : w - max(0, dc)]  # (r, c)
        b = skeleton[dr:, max(0, dc) : w + min(0, dc)]  # (r + dr, c + dc)
        both = a & b
        if dr and dc:  # diagonal: skip when an orthogonal path of two links exists
            side1 = skeleton[: h - dr, max(0, dc) : w + min(0, dc)]  # (r, c + dc)
            side2 = skeleton[dr:, max(0, -dc) : w - max(0, dc)]  # (r + dr, c)
            both &= ~(side1 | side2)
        rows, cols = np.nonzero(both)
        cols = cols + max(0, -dc)
        firsts.append(rows * w + cols)
        seconds.append((rows + dr) * w + cols + dc)
    return np.concatenate(firsts), np.concatenate(seconds)


def trace(
    skeleton: np.ndarray,
    owned: np.ndarray,
    prob: np.ndarray,
    half_width: np.ndarray,
    offset: tuple[int, int] = (0, 0),
) -> list[Piece]:
    """Chains of the links whose first pixel is ``owned`` (bool, same shape), between
    pixels with other than two such links; pixel coordinates shifted by ``offset``."""
    h, w = skeleton.shape
    first, second = _links(skeleton)
    degree = np.bincount(np.concatenate([first, second]), minlength=h * w)
    keep = owned.ravel()[first]
    first, second = first[keep], second[keep]
    adjacency: dict[int, list[int]] = defaultdict(list)
    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        adjacency[a].append(b)
        adjacency[b].append(a)
    # a chain ends at a junction or end of the whole skeleton, and where links of other
    # chunks go on (joined later)
    ends = {p for p, nbrs in adjacency.items() if len(nbrs) != 2 or degree[p] != 2}
    used: set[tuple[int, int]] = set()
    prob_flat, width_flat = prob.ravel(), half_width.ravel()
    pieces = []

    def walk(start: int, nxt: int) -> list[int]:
        chain, prev, cur = [start], start, nxt
        used.add((min(start, nxt), max(start, nxt)))
        while cur not in ends and cur != start:
            chain.append(cur)
            a, b = adjacency[cur]
            prev, cur = cur, (b if a == prev else a)
            used.add((min(prev, cur), max(prev, cur)))
        chain.append(cur)
        return chain

    def piece(chain: list[int]) -> Piece:
        idx = np.array(chain)
        inner = idx[1:]  # a chain's first pixel is counted by the chain it ends
        rows, cols = np.divmod(idx, w)
        return Piece(
            np.stack([rows + offset[0], cols + offset[1]], axis=1).astype(np.int64),
            float(prob_flat[inner].sum()), float(width_flat[inner].sum()), len(inner),
        )  # fmt: skip

    # chains from their ends, then the closed loops (no end anywhere on them)
    for start in [*sorted(ends), *sorted(adjacency)]:
        for nxt in adjacency[start]:
            if (min(start, nxt), max(start, nxt)) not in used:
                pieces.append(piece(walk(start, nxt)))
    return pieces


def join_pieces(pieces: list[Piece]) -> list[Piece]:
    """Join chains end to end wherever exactly two of them meet (a point that is neither
    a junction nor an end of the network)."""
    at: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, p in enumerate(pieces):
        at[tuple(p.pixels[0])].append(k)
        at[tuple(p.pixels[-1])].append(k)
    done = [False] * len(pieces)
    out = []

    def oriented(k: int, start: tuple[int, int]) -> np.ndarray:
        px = pieces[k].pixels
        return px if tuple(px[0]) == start else px[::-1]

    def extend(k: int, start: tuple[int, int]):
        parts, prob, width, count = [], 0.0, 0.0, 0
        while True:
            done[k] = True
            px = oriented(k, start)
            parts.append(px if not parts else px[1:])
            prob, width = prob + pieces[k].prob_sum, width + pieces[k].half_width_sum
            count += pieces[k].count
            end = tuple(px[-1])
            nxt = [j for j in at[end] if not done[j]]
            if len(at[end]) != 2 or not nxt:
                return Piece(np.concatenate(parts), prob, width, count)
            k, start = nxt[0], end

    # from every point where other than two chains meet, then the loops made only of
    # degree-2 meetings
    starts = [(k, point) for point, ks in sorted(at.items()) if len(ks) != 2 for k in ks]
    starts += [(k, tuple(p.pixels[0])) for k, p in enumerate(pieces)]
    for k, start in starts:
        if not done[k]:
            out.append(extend(k, start))
    return out


def prune(pieces: list[Piece], min_length: float) -> list[Piece]:
    """Drop chains shorter than ``min_length`` pixels with a free end: the skeleton's
    whiskers off a road, and specks that touch nothing; then join what they split."""
    if min_length <= 0:
        return pieces
    degree: dict[tuple[int, int], int] = defaultdict(int)
    for p in pieces:
        degree[tuple(p.pixels[0])] += 1
        degree[tuple(p.pixels[-1])] += 1
    kept = [
        p
        for p in pieces
        if _pixel_length(p.pixels) >= min_length
        or min(degree[tuple(p.pixels[0])], degree[tuple(p.pixels[-1])]) > 1
    ]
    return join_pieces(kept)


def _pixel_length(pixels: np.ndarray) -> float:
    return float(np.hypot(*np.diff(pixels, axis=0).T).sum()) if len(pixels) > 1 else 0.0


def _simplify(pixels: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a chain's pixel centres, ends kept."""
    if len(pixels) <= 2 or tolerance <= 0:
        return pixels
    keep = np.zeros(len(pixels), bool)
    keep[[0, -1]] = True
    stack = [(0, len(pixels) - 1)]
    pts = pixels.astype(np.float64)
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        seg = pts[j] - pts[i]
        norm = math.hypot(*seg)
        rel = pts[i + 1 : j] - pts[i]
        if norm == 0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return pixels[keep]


def read_road_raster(src, window: Window, threshold: float):
    """(road mask, probability) of a window of a probability (float, or integers with a
    scale, as ``predict --output prob8`` writes) or mask (integer 0/1 or 0/255) raster,
    nodata never road; probability is None for a mask."""
    band = src.read(1, window=window)
    valid = src.read_masks(1, window=window) > 0
    if src.scales[0] != 1:  # stored probabilities: value x scale
        band = band.astype(np.float32) * np.float32(src.scales[0]) + np.float32(src.offsets[0])
    if np.issubdtype(band.dtype, np.floating):
        prob = np.where(valid, band, 0.0).astype(np.float32)
        return (prob > threshold) & valid, prob
    # the largest valid value tells 0/1 from 0/255 (nodata, 255 in a 0/1 mask, is not road)
    return (band > (127 if band[valid].max(initial=0) > 1 else 0)) & valid, None


def chunk_pieces(
    road: np.ndarray,
    prob: np.ndarray | None = None,
    owned: tuple[slice, slice] | None = None,
    offset: tuple[int, int] = (0, 0),
) -> list[Piece]:
    """The chains of one window of a road mask whose links start in ``owned`` (the chunk
    inside its margin; default the whole window), in raster pixel coordinates."""
    skeleton = skeletonize(road)
    half_width = ndimage.distance_transform_edt(road).astype(np.float32)
    prob = np.full(road.shape, np.nan, np.float32) if prob is None else prob
    mine = np.zeros_like(skeleton)
    mine[owned or (slice(None), slice(None))] = True
    return trace(skeleton, mine, prob, half_width, offset)


def finish(pieces: list[Piece], *, min_length: float = 10.0, simplify: float = 1.0) -> list[Piece]:
    """Join the chunks' chains, prune whiskers and specks, simplify."""
    pieces = prune(join_pieces(pieces), min_length)
    return [
        Piece(_simplify(p.pixels, simplify), p.prob_sum, p.half_width_sum, p.count) for p in pieces
    ]


def vectorize_array(
    road: np.ndarray,
    prob: np.ndarray | None = None,
    *,
    min_length: float = 10.0,
    simplify: float = 1.0,
) -> list[Piece]:
    """Centre-line chains of a road mask held in memory (a tile), in pixel coordinates."""
    return finish(chunk_pieces(road, prob) if road.any() else [], min_length=min_length,
                  simplify=simplify)  # fmt: skip


def vectorize_raster(
    path: str | Path,
    *,
    threshold: float = 0.5,
    chunk: int = 2048,
    margin: int = 64,
    min_length: float = 10.0,
    simplify: float = 1.0,
    progress: bool = False,
    clean=None,
) -> tuple[list[Piece], object, object]:
    """Centre-line chains of a one-band road raster (module doc) and its CRS and transform.

    ``threshold``: a probability raster (float, or integers with a scale) is road above
    it; an integer raster without one is a mask (0/1 or 0/255). Chunks of ``chunk`` pixels are thinned with ``margin`` pixels
    around them (more than a road's width). Chains shorter than ``min_length`` pixels with
    a free end are dropped; lines are simplified to ``simplify`` pixels (Douglas-Peucker).
    ``clean``: a decision's clean-up of the road mask (gap closing, small components),
    applied to each chunk with its margin.
    """
    pieces: list[Piece] = []
    with road_raster(path) as src:
        windows = road_windows(src, threshold=threshold, chunk=chunk, margin=margin,
                               clean=clean, progress=progress, desc="vectorizing")  # fmt: skip
        for road, prob, owned, origin in windows:
            pieces += chunk_pieces(road, prob, owned, origin)
        crs, transform = src.crs, src.transform
    return finish(pieces, min_length=min_length, simplify=simplify), crs, transform


@contextlib.contextmanager
def road_raster(path: str | Path):
    """A one-band road probability or mask raster opened for reading; anything else is
    refused in one line naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise RoadsegError(f"not a raster rasterio can read ({err})", path) from err
        with src:
            if src.count != 1:
                raise RoadsegError(
                    f"has {src.count} bands; vectorize takes a one-band road probability or "
                    "mask (as roadseg predict writes)",
                    path,
                )
            yield src


def road_windows(src, *, threshold: float, chunk: int, margin: int, clean=None,
                 progress: bool = False, desc: str = "reading"):  # fmt: skip
    """``(road, prob, owned, origin)`` of each chunk of an open road raster that has road:
    the window read with ``margin`` pixels around the chunk (cleaned by ``clean`` with
    them), the chunk's slices in it, and the window's first (row, column)."""
    if chunk <= 0 or margin < 1:  # links across a chunk border need the pixel beyond it
        raise RoadsegError(f"chunk ({chunk}) and margin ({margin}) must be at least 1")
    height, width = src.height, src.width
    starts = [(r, c) for r in range(0, height, chunk) for c in range(0, width, chunk)]
    for r, c in tqdm(starts, desc=desc, unit="chunk", disable=not progress):
        r0, c0 = max(0, r - margin), max(0, c - margin)
        r1, c1 = min(height, r + chunk + margin), min(width, c + chunk + margin)
        road, prob = read_road_raster(src, Window(c0, r0, c1 - c0, r1 - r0), threshold)
        if clean is not None:
            road = clean(road).astype(bool)
        if road.any():
            owned = (slice(r - r0, min(r + chunk, height) - r0),
                     slice(c - c0, min(c + chunk, width) - c0))  # fmt: skip
            yield road, prob, owned, (r0, c0)


def to_frame(pieces: list[Piece], crs, transform):
    """A GeoDataFrame of LineStrings in the raster's CRS: ``length`` and ``width`` in
    ground metres (:func:`length_units`: geodesic on the ellipsoid of the CRS's datum;
    pixels for a raster without a CRS), ``mean_prob`` (NaN for a mask). The unit is in
    ``frame.attrs["units"]``, how they were measured in ``frame.attrs["how"]``."""
    import geopandas as gpd
    from shapely.geometry import LineString

    transform = vector_transform(crs, transform)
    lines, probs, widths, points = [], [], [], []
    for p in pieces:
        rows, cols = p.pixels[:, 0] + 0.5, p.pixels[:, 1] + 0.5
        xs, ys = transform @ (cols, rows)
        lines.append(LineString(np.stack([xs, ys], axis=1)))
        points.append((xs[len(xs) // 2], ys[len(ys) // 2]))
        probs.append(p.prob_sum / p.count if p.count else float("nan"))
        # a centre pixel at distance d from the edge lies in a road 2d - 1 pixels wide
        widths.append(2 * p.half_width_sum / p.count - 1 if p.count else float("nan"))
    measure = length_units(crs, transform)
    at = np.asarray(points, np.float64).reshape(-1, 2)
    sides = measure.pixel_side(at[:, 0], at[:, 1]) if len(at) else np.zeros(0)
    frame = gpd.GeoDataFrame(
        {"mean_prob": probs, "width": np.asarray(widths) * sides}, geometry=lines, crs=crs
    )
    frame.insert(0, "length", measure.lengths(frame.geometry) if len(frame) else [])
    frame.attrs["units"], frame.attrs["how"] = measure.unit, measure.how
    return frame


def length_units(crs, transform) -> Ruler:
    """How lines in ``crs`` on ``transform`` are measured (:func:`roadseg.ground.ruler`):
    ``unit``, ``lengths(geoseries) -> array`` and ``pixel_side(x, y) -> array`` (for
    widths), and ``how`` for the summary. Geodesic metres on the ellipsoid of the CRS's
    datum for every CRS with one (projections' scale, feet, degrees alike); a local CRS's
    unit in metres; pixels without a CRS."""
    return ruler(crs, transform)


def vector_transform(crs, transform):
    """The transform lines are written with: the raster's; for a raster without
    georeference, pixel coordinates with y up (x = column, y = -row), as a GIS shows such
    an image, so that lines and raster overlay instead of mirroring."""
    from affine import Affine

    if crs is None and transform.is_identity:
        return Affine(1, 0, 0, 0, -1, 0)
    return transform


def write_vectors(frame, out: str | Path, *, crs=None, identity: str | None = None):
    """Write lines to GeoPackage (``.gpkg``) or GeoJSON (``.geojson``/``.json``), atomically:
    a GeoPackage in the lines' CRS, GeoJSON in WGS84 (RFC 7946), unless ``crs``
    (:func:`roadseg.vectorfiles.write_frame`); returns the frame as written."""
    from roadseg.vectorfiles import write_frame

    return write_frame(frame, out, crs=crs, identity=identity, geometry_type="LineString")


def vector_driver(out: str | Path) -> str:
    """The OGR driver of a lines file, by its suffix (refused before any work)."""
    from roadseg.vectorfiles import vector_driver as driver

    return driver(out)


def junctions(frame):
    """The points where three or more lines end (a GeoSeries, each point once)."""
    ends = frame.geometry.boundary.explode(index_parts=False)
    if not len(ends):
        return ends
    keys = ends.to_wkb()
    return ends[keys.map(keys.value_counts()) >= 3].drop_duplicates()


def describe(frame) -> str:
    """One line: lines, junctions, total length, CRS."""
    units, how = frame.attrs.get("units", "map units"), frame.attrs.get("how")
    if frame.crs is not None:
        crs = frame.crs.to_string() + (f", {how}" if how else "")
    elif how and "transform" in how:  # coordinates in the transform's units, lengths in px
        crs = f"no CRS: {how}"
    else:
        crs = "no CRS: pixel coordinates, y up as a GIS shows the raster" + (
            f", {how}" if how else ""
        )
    return (
        f"{len(frame)} lines, {len(junctions(frame))} junctions, total length "
        f"{frame['length'].sum():.1f} {units}, {crs}"
    )


def draw_lines(image: str | Path, frame, png: str | Path, *, max_side: int = 2400) -> Path:
    """The lines drawn over the imagery (read at reduced size), junctions dotted, as a PNG:
    to look at what :func:`vectorize_raster` found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roadseg.io import image_to_rgb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(image) as src:
            scale = max(1.0, max(src.width, src.height) / max_side)
            shape = (src.count, int(src.height / scale), int(src.width / scale))
            pixels = src.read(out_shape=shape, resampling=rasterio.enums.Resampling.average)
            bounds = rasterio.coords.BoundingBox(  # (west, south, east, north)
                *rasterio.transform.array_bounds(
                    src.height, src.width, vector_transform(src.crs, src.transform)
                )
            )
    if pixels.shape[0] == 1:  # a probability or mask raster: grey
        grey = pixels[0].astype(np.float32)
        rgb = np.repeat((grey / max(float(grey.max()), 1e-6))[None], 3, axis=0)
    elif pixels.dtype == np.uint8:
        rgb = image_to_rgb(pixels, image)
    else:  # 12/16-bit or float: shown stretched 2-98% per band
        rgb = (
            pixels[:3].astype(np.float32)
            if pixels.shape[0] >= 3
            else np.repeat(pixels[:1], 3, 0).astype(np.float32)
        )
        low, high = np.nanpercentile(rgb, (2, 98), axis=(1, 2))
        rgb = np.clip(
            (rgb - low[:, None, None]) / np.maximum(high - low, 1e-9)[:, None, None], 0, 1
        )
    fig, ax = plt.subplots(figsize=(12, 12 * rgb.shape[1] / rgb.shape[2]), dpi=max_side / 12)
    ax.imshow(rgb.transpose(1, 2, 0), extent=(bounds.left, bounds.right, bounds.bottom, bounds.top))
    if len(frame):
        frame.plot(ax=ax, color="#ff2d2d", linewidth=1.2)
        crossings = junctions(frame)
        if len(crossings):
            crossings.plot(ax=ax, color="#ffe600", markersize=14)
    ax.set_axis_off()
    ax.set_title(
        f"{Path(image).name}: {describe(frame)} (red: lines, yellow: junctions)", fontsize=9
    )
    png = Path(png)
    with atomic_path(png, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    return png
