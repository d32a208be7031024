"""Ground units in one place: how many metres on the ground a pixel is, and how long a
line is, in any CRS.

Every measure is taken on the ellipsoid of the CRS's own geodetic datum: points go to
longitude and latitude (pyproj) and are measured geodesically (``pyproj.Geod``). A
projection's scale (Web Mercator's 1/cos(latitude), a UTM zone's 0.9996, a state
plane's), its unit (metres, US feet, degrees) and a rotated or sheared transform are so
all accounted for alike; heights are not (metres on the ellipsoid). A pixel whose map
size is its ground size within 0.1% (UTM, state planes, national grids) keeps its map
size exactly (:func:`pixel_metres`); lines are measured geodesically in every CRS with a
datum.

Without a datum there are no ground metres. A raster without a CRS or with only RPCs has
an unknown resolution (None, and the reason); a local (engineering) CRS is refused in one
line naming what to give instead. Lines without a datum are measured in the CRS's linear
unit converted to metres, else in pixels, and :class:`Ruler` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

from roadseg.errors import RoadsegError

if TYPE_CHECKING:  # pyproj and shapely are imported where a CRS or lines are measured
    import pyproj

# a projection's map metres within this of ground metres at the scene are taken as they are
MAP_SCALE_TOLERANCE = 1e-3
# transforms whose lines are in pixel coordinates (vectors.vector_transform: y up)
PIXEL_TRANSFORMS = (Affine.identity(), Affine(1, 0, 0, 0, -1, 0))


@dataclass(frozen=True)
class Geodetic:
    """A CRS's way to the ground: its points as (lon, lat) on its datum, and the datum's
    ellipsoid to measure them on."""

    to_lonlat: pyproj.Transformer
    geod: pyproj.Geod
    ellipsoid: str

    def lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates -> (longitude, latitude) in degrees (arrays)."""
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        lon, lat = self.to_lonlat.transform(x, y)
        lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
            raise RoadsegError(
                "points outside the area where their CRS has longitudes and latitudes"
            )
        return lon, lat

    def distances(self, x0, y0, x1, y1) -> np.ndarray:
        """Geodesic metres between map points ``(x0, y0)`` and ``(x1, y1)`` (arrays)."""
        n = len(np.atleast_1d(x0))
        lon, lat = self.lonlat(np.concatenate([np.atleast_1d(x0), np.atleast_1d(x1)]),
                               np.concatenate([np.atleast_1d(y0), np.atleast_1d(y1)]))  # fmt: skip
        _, _, dist = self.geod.inv(lon[:n], lat[:n], lon[n:], lat[n:])
        return np.asarray(dist, np.float64)


def as_pyproj(crs) -> pyproj.CRS:
    """Any CRS (rasterio's, pyproj's, ``"EPSG:3857"``, WKT) as a pyproj CRS."""
    import pyproj

    return crs if isinstance(crs, pyproj.CRS) else pyproj.CRS.from_user_input(crs)


def geodetic(crs) -> Geodetic | None:
    """:class:`Geodetic` of a CRS; None for one without a geodetic datum (a local or
    engineering CRS) or that pyproj cannot take to longitude and latitude."""
    return _geodetic(as_pyproj(crs).to_wkt())


@lru_cache(maxsize=32)
def _geodetic(wkt: str) -> Geodetic | None:
    import pyproj

    crs = pyproj.CRS.from_wkt(wkt)
    datum = crs.geodetic_crs
    if datum is None:
        return None
    try:
        to_lonlat = pyproj.Transformer.from_crs(crs, datum, always_xy=True)
    except pyproj.exceptions.ProjError:
        return None
    ellipsoid = datum.ellipsoid
    geod = datum.get_geod() or pyproj.Geod(ellps="WGS84")
    return Geodetic(to_lonlat, geod, ellipsoid.name if ellipsoid else "WGS 84")


def crs_label(crs) -> str:
    """A CRS in a few words: ``EPSG:3857``, else its name."""
    crs = as_pyproj(crs)
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.name


def linear_unit(crs) -> tuple[str, float] | None:
    """(name, metres per unit) of a CRS's first axis; None when it is not a length
    (degrees) or not said."""
    axes = as_pyproj(crs).axis_info
    if not axes or axes[0].unit_name in ("", "unknown") or "degree" in axes[0].unit_name:
        return None
    return axes[0].unit_name, float(axes[0].unit_conversion_factor)


def _no_datum(crs, hint: str, name=None) -> RoadsegError:
    return RoadsegError(
        f"its CRS ({crs_label(crs)}) is a local CRS without a geodetic datum, so its pixels "
        f"cannot be measured on the ground: give {hint}",
        name,
    )


def pixel_sides(crs, transform: Affine, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Ground metres ``(across, down)`` of the pixels of ``transform`` centred at map points
    ``(x, y)`` of ``crs``: the geodesic lengths of the pixel's column and row vectors (so
    rotated and sheared transforms too). RoadsegError for a CRS without a datum."""
    geo = geodetic(crs)
    if geo is None:
        raise _no_datum(crs, "the resolution in metres")
    x = np.atleast_1d(np.asarray(x, np.float64))
    y = np.atleast_1d(np.asarray(y, np.float64))
    t = transform
    across = geo.distances(x - t.a / 2, y - t.d / 2, x + t.a / 2, y + t.d / 2)
    down = geo.distances(x - t.b / 2, y - t.e / 2, x + t.b / 2, y + t.e / 2)
    return across, down


def pixel_metres(
    crs, transform: Affine, width: int, height: int, *, name=None, hint="--resolution METRES"
) -> tuple[tuple[float, float] | None, str]:
    """A grid's pixel ``(across, down)`` in ground metres at its centre, and how it was found
    (a few words for the printed line); None when it has no CRS (units unknown). A CRS
    without a datum is a RoadsegError naming ``name`` and saying to give ``hint``.

    Where a projection's map metres are ground metres within :data:`MAP_SCALE_TOLERANCE` at the
    centre (UTM, state planes, national grids), the map metres are taken as they are: a
    UTM zone's 0.9996 is not worth resampling a scene by 0.04%."""
    if crs is None:
        return None, "a transform but no CRS, so its units are unknown"
    if geodetic(crs) is None:
        raise _no_datum(crs, hint, name)
    x, y = transform @ (width / 2, height / 2)
    try:
        ground = tuple(float(s[0]) for s in pixel_sides(crs, transform, x, y))
    except RoadsegError as err:
        raise RoadsegError(f"its centre: {err}", name) from None
    unit = None if as_pyproj(crs).is_geographic else linear_unit(crs)
    if unit is not None:
        t = transform
        mapped = (math.hypot(t.a, t.d) * unit[1], math.hypot(t.b, t.e) * unit[1])
        if all(abs(g / m - 1) <= MAP_SCALE_TOLERANCE for g, m in zip(ground, mapped, strict=True)):
            return mapped, f"{crs_label(crs)}, {unit[0]}"
    return ground, _how(crs, transform, (x, y), ground)


def _how(crs, transform: Affine, centre, sides) -> str:
    """How a pixel's ground metres were measured, for the printed line: the CRS, its
    degrees or its map metres and the projection's scale (ground over map) at the scene."""
    crs = as_pyproj(crs)
    lat = float(geodetic(crs).lonlat(*centre)[1][0])
    where = f"{abs(lat):.1f} {'N' if lat >= 0 else 'S'}"
    size = math.sqrt(abs(transform.determinant))  # map units per pixel
    if crs.is_geographic:
        return f"{crs_label(crs)}, {size:.3g} deg = {sides[0]:.3g} x {sides[1]:.3g} m at {where}"
    unit = linear_unit(crs)
    if unit is None:
        return f"{crs_label(crs)}, measured on the ellipsoid at {where}"
    scale = math.sqrt(sides[0] * sides[1]) / (size * unit[1])
    return (f"{crs_label(crs)} {crs.name}: {size * unit[1]:.3g} map m/px x scale {scale:.3g} "
            f"at {where}")  # fmt: skip


def raster_georeference(src) -> tuple[object, Affine | None, str]:
    """(CRS, transform, note) of an open raster: its own; for a raster georeferenced by
    GCPs an approximate transform fitted to them (noted); transform None (and why) when it
    has neither."""
    if not src.transform.is_identity:
        return src.crs, src.transform, ""
    gcps, gcp_crs = src.gcps
    if len(gcps) >= 3 and gcp_crs is not None:
        from rasterio.transform import from_gcps

        return gcp_crs, from_gcps(gcps), f"approximate, from its {len(gcps)} GCPs"
    if src.rpcs is not None:
        return None, None, "RPC georeference only (no transform): ground resolution not derived"
    return None, None, "no georeference"


def raster_pixel_metres(
    src, hint: str = "--resolution METRES"
) -> tuple[tuple[float, float] | None, str]:
    """:func:`pixel_metres` of an open raster (:func:`raster_georeference`): None (and why)
    without georeference, with only RPCs, or with a transform but no CRS."""
    crs, transform, note = raster_georeference(src)
    if transform is None:
        return None, note
    sides, how = pixel_metres(crs, transform, src.width, src.height, name=src.name, hint=hint)
    return sides, (f"{how}; {note}" if note else how)


def _geometries(lines) -> np.ndarray:
    return np.asarray(list(lines), dtype=object)


def geodesic_lengths(lines, geo: Geodetic) -> np.ndarray:
    """Geodesic metres of lines (LineStrings or MultiLineStrings) in ``geo``'s CRS: all
    their points taken to longitude and latitude in one call, each segment measured on
    the ellipsoid."""
    import shapely

    geoms = _geometries(lines)
    out = np.zeros(len(geoms))
    parts, owner = shapely.get_parts(geoms, return_index=True)
    coords, part = shapely.get_coordinates(parts, return_index=True)
    if len(coords) < 2:
        return out
    lon, lat = geo.lonlat(coords[:, 0], coords[:, 1])
    _, _, seg = geo.geod.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])
    same = part[:-1] == part[1:]  # segments inside one part, not from one part to the next
    return np.bincount(owner[part[:-1][same]], np.asarray(seg)[same], minlength=len(geoms))


def line_metres(lines, crs=None) -> np.ndarray:
    """Ground metres of lines (a GeoSeries, whose CRS is taken when ``crs`` is None, or a
    list of shapely lines) in a CRS with a geodetic datum (else RoadsegError)."""
    crs = crs if crs is not None else getattr(lines, "crs", None)
    if crs is None:
        raise RoadsegError("lines without a CRS have no ground length")
    geo = geodetic(crs)
    if geo is None:
        raise _no_datum(crs, "lines in a CRS with a datum")
    return geodesic_lengths(lines, geo)


@dataclass(frozen=True)
class Ruler:
    """How lines of a raster in ``crs`` (pixels on ``transform``) are measured: ``unit``
    ``"m"`` or ``"px"``, and ``how`` says it in a few words (:func:`ruler`)."""

    unit: str
    how: str
    transform: Affine
    crs: object = None
    geo: Geodetic | None = None
    factor: float | None = None  # metres per map unit, for a CRS without a datum

    def lengths(self, lines) -> np.ndarray:
        """Lengths of lines in ``unit``."""
        import shapely

        if self.geo is not None:
            return geodesic_lengths(lines, self.geo)
        geoms = _geometries(lines)
        if self.factor is not None:
            return shapely.length(geoms) * self.factor
        inverse = ~self.transform
        to_pixels = lambda c: np.stack(inverse @ (c[:, 0], c[:, 1]), axis=1)  # noqa: E731
        return shapely.length(shapely.transform(geoms, to_pixels))

    def pixel_side(self, x, y) -> np.ndarray:
        """A pixel's side in ``unit`` at map points ``(x, y)`` (the geometric mean of its
        ground sides; 1 for pixels)."""
        x = np.atleast_1d(np.asarray(x, np.float64))
        if self.geo is not None:
            across, down = pixel_sides(self.crs, self.transform, x, y)
            return np.sqrt(across * down)
        side = math.sqrt(abs(self.transform.determinant)) * self.factor if self.factor else 1.0
        return np.full(len(x), side)


def ruler(crs, transform: Affine) -> Ruler:
    """:class:`Ruler` of lines in ``crs`` on a raster's ``transform``: geodesic metres on
    the datum's ellipsoid for every CRS with one; a local CRS's linear unit converted to
    metres; else pixels (no CRS, or a transform but no CRS, whose units are unknown)."""
    if crs is None:
        if transform in PIXEL_TRANSFORMS:
            return Ruler("px", "lengths and widths in pixels", transform)
        return Ruler("px", "coordinates from the raster's transform (units unknown), lengths "
                     "and widths in pixels", transform)  # fmt: skip
    geo = geodetic(crs)
    if geo is not None:
        return Ruler("m", f"lengths and widths geodesic on the {geo.ellipsoid} ellipsoid",
                     transform, crs, geo)  # fmt: skip
    unit = linear_unit(crs)
    if unit is None:
        return Ruler("px", "a local CRS without a unit: lengths and widths in pixels", transform)
    return Ruler("m", f"a local CRS (no datum): lengths and widths in its {unit[0]} as metres, "
                 "not measured on the ground", transform, factor=unit[1])  # fmt: skip
