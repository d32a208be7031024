"""Road surfaces as polygons: the outlines of a road raster's mask, beside its centre lines
(:mod:`roadseg.vectors`).

The mask (probability above the threshold, cleaned as the decision cleans it) is traced
chunk by chunk (GDAL's polygonize through :func:`rasterio.features.shapes`, 4-connected,
so every polygon is valid); polygons that touch a chunk border inside the raster are
unioned with their neighbours across it, so a road over chunk borders is one polygon and
memory holds one chunk of pixels and the polygons. The pixel staircase is then simplified
by Douglas-Peucker in pixel units (``simplify``, at most half a pixel: the outline stays
within half a pixel of the pixels' edges), and each polygon carries its ``area`` in ground
square metres (geodesic on the datum's ellipsoid, :mod:`roadseg.ground`; square pixels for
a raster without a CRS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from roadseg.errors import RoadsegError
from roadseg.vectors import length_units, road_raster, road_windows, vector_transform

MAX_SIMPLIFY = 0.5  # pixels


def surface_polygons(path: str | Path, *, threshold: float = 0.5, chunk: int = 2048,
                     margin: int = 64, clean=None, simplify: float = MAX_SIMPLIFY,
                     progress: bool = False) -> tuple[list, object, Affine]:  # fmt: skip
    """The road polygons of a one-band road raster in pixel coordinates (x column, y row,
    pixel corners at integers), simplified to ``simplify`` pixels; and its CRS and
    transform. ``threshold``, ``chunk``, ``margin``, ``clean`` as
    :func:`roadseg.vectors.vectorize_raster` takes them."""
    if not 0 <= simplify <= MAX_SIMPLIFY:
        raise RoadsegError(f"surfaces are simplified by 0 to {MAX_SIMPLIFY} px, not {simplify}")
    done, edge = [], []
    with road_raster(path) as src:
        size = (src.width, src.height)
        windows = road_windows(src, threshold=threshold, chunk=chunk, margin=margin,
                               clean=clean, progress=progress, desc="outlining")  # fmt: skip
        for road, _, owned, (r0, c0) in windows:
            part = road[owned]
            origin = (c0 + owned[1].start, r0 + owned[0].start)
            for poly in _chunk_polygons(part, origin):
                (edge if _on_inner_border(poly, origin, part.shape, size) else done).append(poly)
        crs, transform = src.crs, src.transform
    if edge:  # the pieces of polygons cut by chunk borders, joined again
        done += list(shapely.get_parts(shapely.union_all(edge)))
    done.sort(key=lambda p: (p.bounds[1], p.bounds[0], -p.area))
    if simplify > 0:
        done = [p.simplify(simplify, preserve_topology=True) for p in done]
    return done, crs, transform


def _chunk_polygons(part: np.ndarray, origin: tuple[int, int]) -> list:
    from rasterio.features import shapes
    from shapely.geometry import shape

    pixels = part.astype(np.uint8)
    return [shape(geom) for geom, _ in shapes(pixels, mask=part, connectivity=4,
                                              transform=Affine.translation(*origin))]  # fmt: skip


def _on_inner_border(poly, origin, shape: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether a polygon of a chunk reaches one of the chunk's sides that another chunk
    continues."""
    x0, y0, x1, y1 = poly.bounds
    left, top = origin
    right, bottom = left + shape[1], top + shape[0]
    return ((x0 == left and left > 0) or (y0 == top and top > 0)
            or (x1 == right and right < size[0]) or (y1 == bottom and bottom < size[1]))  # fmt: skip


def surfaces_frame(polygons: list, crs, transform: Affine):
    """A GeoDataFrame of the polygons in the raster's CRS (pixels with y up without one,
    as :func:`roadseg.vectors.vector_transform`), with ``area`` in ground square metres
    (``frame.attrs["units"]``: ``m²``, or ``px²`` without a CRS)."""
    import geopandas as gpd

    to_map = vector_transform(crs, transform)
    pixels = np.asarray(polygons, dtype=object)

    def mapped(coords):
        xs, ys = to_map @ (coords[:, 0], coords[:, 1])
        return np.column_stack([xs, ys])

    geoms = shapely.transform(pixels, mapped) if len(pixels) else pixels
    measure = length_units(crs, to_map)
    frame = gpd.GeoDataFrame({"area": _areas(pixels, geoms, measure)}, geometry=list(geoms),
                             crs=crs)  # fmt: skip
    frame.attrs["units"] = f"{measure.unit}²"
    frame.attrs["how"] = measure.how.replace("lengths and widths", "areas")
    return frame


def _areas(pixels: np.ndarray, geoms: np.ndarray, measure) -> np.ndarray:
    """Areas of the polygons in ``measure``'s unit squared: geodesic on the datum's
    ellipsoid, a local CRS's unit as metres, or pixels."""
    if not len(geoms):
        return np.zeros(0)
    if measure.geo is not None:
        geo = measure.geo

        def lonlat(coords):
            return np.column_stack(geo.lonlat(coords[:, 0], coords[:, 1]))

        return np.array([abs(geo.geod.geometry_area_perimeter(shapely.transform(g, lonlat))[0])
                         for g in geoms])  # fmt: skip
    if measure.factor is not None:
        return shapely.area(geoms) * measure.factor**2
    return shapely.area(pixels)


def describe_surfaces(frame) -> str:
    """One line: polygons, total area, CRS."""
    crs = frame.crs.to_string() if frame.crs is not None else "no CRS: pixel coordinates, y up"
    how = frame.attrs.get("how")
    return (f"{len(frame)} road surfaces, total area {frame['area'].sum():.1f} "
            f"{frame.attrs.get('units', 'map units²')}, {crs}" + (f", {how}" if how else ""))  # fmt: skip
