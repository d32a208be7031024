"""Road labels of a scene from vector geometry: lines buffered to a road width on the
ground, polygons filled, rasterised on any window of the scene's grid.

A GIS user's labels are most often lines (OpenStreetMap, a cadastre) in their own CRS. A
:class:`VectorLabels` reads them once (GeoPackage, GeoJSON, Shapefile: anything OGR
reads), and for each window of the scene gives the mask a training window needs:

- **widths on the ground**: a line becomes a road of its width in metres (one width, one
  per attribute value such as OSM's ``highway`` classes, or the line's own width column),
  buffered in a local equidistant projection centred on the labels (metres true in every
  direction within a scene's extent), whatever the CRS of the lines or of the scene:
  buffering in Web Mercator's own units would widen roads by 1/cos(latitude), 1.35x at 42°;
- **the scene's grid**: the roads are reprojected to the scene's CRS and burnt with the
  window's transform (a pixel is road when its centre is inside);
- **coverage**: ground outside the labels' coverage (an ``aoi`` polygon file, else the
  bounding box of the labelled roads) is :data:`IGNORE`, not background: a line file that
  covers half a scene does not teach that the other half has no roads.

Errors before any work, one line each: a file with no CRS, geometry that is neither lines
nor polygons, labels or an AOI that do not overlap the scene, an empty AOI, a width
attribute the file does not have.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError

IGNORE = 255  # mask value of ground outside the labels' coverage: neither road nor not
ROAD, BACKGROUND = 1, 0


@dataclass(frozen=True)
class Widths:
    """How wide, on the ground, a labelled line's road is.

    ``metres``: every line's width, and the width of lines the others do not give one;
    ``column``: a numeric attribute holding each line's own width in metres;
    ``attribute``/``table``: a width per value of an attribute (``{"motorway": 20, ...}``).
    """

    metres: float = 6.0
    column: str | None = None
    attribute: str | None = None
    table: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, metres: float | None = None, column: str | None = None,
              by: str | None = None) -> Widths:  # fmt: skip
        """From the command line: ``--width M``, ``--width-column NAME``, ``--width-by
        ATTR=VALUE:M,VALUE:M`` (for example ``highway=motorway:20,residential:7``)."""
        table, attribute = {}, None
        if by:
            attribute, _, pairs = by.partition("=")
            try:
                for pair in filter(None, pairs.split(",")):
                    value, _, width = pair.rpartition(":")
                    table[value] = float(width)
            except ValueError:
                raise RoadsegError(
                    f"--width-by {by!r}: write ATTRIBUTE=VALUE:METRES,VALUE:METRES"
                ) from None
            if not attribute or not table:
                raise RoadsegError(f"--width-by {by!r}: write ATTRIBUTE=VALUE:METRES,VALUE:METRES")
        widths = cls(metres if metres is not None else 6.0, column, attribute, table)
        for w in (widths.metres, *table.values()):
            if not w > 0:
                raise RoadsegError(f"a road width must be positive metres, got {w:g}")
        return widths

    def of(self, frame, path) -> np.ndarray:
        """Each row's width in metres (rows the column or table leave out: ``metres``)."""
        import pandas as pd

        widths = np.full(len(frame), self.metres, dtype=float)
        for name in (self.column, self.attribute):
            if name and name not in frame:
                have = ", ".join(c for c in frame.columns if c != "geometry") or "none"
                raise RoadsegError(f"no attribute {name!r} for road widths (it has: {have})", path)
        if self.column:
            given = pd.to_numeric(frame[self.column], errors="coerce").to_numpy(float)
            widths = np.where(np.isfinite(given) & (given > 0), given, widths)
        if self.attribute and len(frame):
            values = frame[self.attribute]
            if pd.api.types.is_numeric_dtype(values):  # 2.0 (a column with NULLs) is "2"
                table = {float(k): v for k, v in self.table.items() if _number(k) is not None}
                mapped = values.astype(float).map(table).to_numpy(float)
            else:
                mapped = values.astype(str).map(self.table).to_numpy(float)
            if not np.isfinite(mapped).any():
                seen = ", ".join(map(str, values.dropna().unique()[:8])) or "none"
                raise RoadsegError(
                    f"no line's {self.attribute} is any of the width table's values "
                    f"({', '.join(self.table)}); its values: {seen}",
                    path,
                )
            widths = np.where(np.isfinite(mapped), mapped, widths)
        return widths

    def describe(self) -> str:
        parts = [f"{self.metres:g} m"]
        if self.column:
            parts.insert(0, f"column {self.column!r}")
        if self.attribute:
            listed = ", ".join(f"{k} {v:g} m" for k, v in self.table.items())
            parts.insert(0, f"by {self.attribute}: {listed}")
        return "; else ".join(parts)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def footprint(window, transform):
    """The ground of a window as a polygon in its raster's CRS: its four corners, so a
    rotated or sheared grid is covered exactly (a bounding box from two corners is not)."""
    from shapely import Polygon

    c0, r0 = float(window.col_off), float(window.row_off)
    c1, r1 = c0 + float(window.width), r0 + float(window.height)
    return Polygon([transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def read_vectors(path: str | Path, layer: str | None = None):
    """A vector file as a GeoDataFrame in its own CRS; one without a CRS is refused."""
    from roadseg.vectorfiles import read_frame

    frame = read_frame(path, layer)
    if frame.crs is None:
        raise RoadsegError(
            "vectors with no CRS: the ground they cover is unknown. Give the file its CRS "
            "(ogr2ogr -a_srs EPSG:XXXX out.gpkg in.shp, or a .prj beside a Shapefile)",
            path,
        )
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    if frame.crs.is_geographic and len(frame):
        west, south, east, north = frame.total_bounds
        if min(west, south) < -180.0001 or east > 360.0001 or north > 90.0001 or south < -90.0001:
            raise RoadsegError(
                f"coordinates up to {max(abs(west), abs(east), abs(north), abs(south)):.6g} are "
                f"not longitude/latitude, though the file says {frame.crs.to_string()} (a "
                "GeoJSON is always WGS84): write it in its true CRS (ogr2ogr -s_srs EPSG:XXXX "
                "-t_srs EPSG:4326 out.geojson in.geojson, or a GeoPackage)",
                path,
            )
    return frame


def local_metres(frame):
    """An azimuthal equidistant CRS centred on ``frame``'s labels: metres true in every
    direction over a scene's extent (0.1% at 90 km from the centre)."""
    import pyproj

    lon, lat = frame.to_crs("EPSG:4326").geometry.union_all().centroid.coords[0]
    return pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m")


class VectorLabels:
    """Road masks of a scene's windows from a vector file (module doc)."""

    def __init__(self, path: str | Path, src, *, widths: Widths | None = None,
                 aoi: str | Path | None = None, layer: str | None = None):  # fmt: skip
        from rasterio.windows import Window
        from shapely import STRtree, box

        self.path, self.widths = Path(path), widths or Widths()
        if src.crs is None:
            raise RoadsegError(
                "a scene with no CRS cannot be labelled by vectors (their ground is not "
                "known on it)",
                src.name,
            )
        frame = read_vectors(path, layer)
        kinds = set(frame.geom_type)
        lines = frame[frame.geom_type.isin(["LineString", "MultiLineString"])]
        polygons = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
        if frame.empty or len(lines) + len(polygons) < len(frame):
            raise RoadsegError(
                f"road labels must be lines or polygons; the file has "
                f"{', '.join(sorted(kinds)) or 'no geometry'}",
                path,
            )
        metric = local_metres(frame)
        widths = self.widths.of(lines, path)
        roads = lines.to_crs(metric).geometry.buffer(widths / 2)
        roads = [*roads, *polygons.to_crs(metric).geometry]
        import geopandas as gpd

        scene_crs = src.crs
        self.roads = gpd.GeoSeries(roads, crs=metric).to_crs(scene_crs).to_numpy()
        scene_box = footprint(Window(0, 0, src.width, src.height), src.transform)
        if aoi is not None:
            area = read_vectors(aoi)
            area = area[area.geom_type.isin(["Polygon", "MultiPolygon"])]
            if area.empty or area.geometry.union_all().area == 0:
                raise RoadsegError("the AOI holds no polygon with an area", aoi)
            self.coverage = area.to_crs(scene_crs).geometry.union_all()
            self.coverage_how = f"the AOI {aoi}"
        else:
            self.coverage = box(*gpd.GeoSeries(self.roads, crs=scene_crs).total_bounds)
            self.coverage_how = "the labels' bounding box"
        if not self.coverage.intersects(scene_box):
            what = "the AOI" if aoi is not None else "the labels"
            raise RoadsegError(
                f"{what} do not overlap the scene {src.name} (labels in {frame.crs.to_string()}, "
                f"scene in {scene_crs.to_string()}): check the files and their CRS",
                aoi if aoi is not None else path,
            )
        self.coverage = self.coverage.intersection(scene_box)
        self.tree = STRtree(self.roads)
        self.src = src
        self.lines, self.polygons, self.crs = len(lines), len(polygons), frame.crs

    def describe(self) -> str:
        return (
            f"labels: {self.lines} lines (widths {self.widths.describe()}, buffered in metres "
            f"on the ground) and {self.polygons} polygons from {self.path} "
            f"({self.crs.to_string()}), burnt on the scene's grid ({self.src.crs.to_string()}); "
            f"outside {self.coverage_how}: ignored, not background"
        )

    def covered(self, window) -> float:
        """The share of ``window``'s ground inside the labels' coverage."""
        area = footprint(window, self.src.transform)
        return float(self.coverage.intersection(area).area / area.area) if area.area else 0.0

    def window(self, window, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask of ``window`` (a rasterio Window of the scene): :data:`ROAD`,
        :data:`BACKGROUND`, or :data:`IGNORE` outside the labels' coverage; ``shape``: burnt
        on a finer or coarser grid over the same ground (the model's resolution), not the
        scene's pixels."""
        import shapely
        from affine import Affine
        from rasterio.features import rasterize

        h, w = int(window.height), int(window.width)
        transform = self.src.window_transform(window)
        if shape is not None and tuple(shape) != (h, w):
            transform = transform * Affine.scale(w / shape[1], h / shape[0])
            h, w = int(shape[0]), int(shape[1])
        area = footprint(window, self.src.transform)
        mask = np.full((h, w), IGNORE, np.uint8)
        # its areas only: coverage that meets the window along an edge intersects it in a
        # line, which rasterize would burn as a row of labelled pixels (a neighbour's edge)
        cover = [g for g in shapely.get_parts(self.coverage.intersection(area))
                 if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]  # fmt: skip
        if not cover:
            return mask
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shapes outside the window: burnt nowhere
            mask = rasterize([(g, BACKGROUND) for g in cover], out=mask, transform=transform)
            hits = self.tree.query(area)
            if len(hits):
                inside = rasterize([(g, 1) for g in self.roads[hits]], out_shape=(h, w),
                                   transform=transform, fill=0, dtype=np.uint8)  # fmt: skip
                mask[(inside == 1) & (mask == BACKGROUND)] = ROAD
        return mask


def open_raster(path):
    """An open raster; a file that is not one is a one-line error naming it."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise RoadsegError(f"not a raster GDAL reads ({str(err).splitlines()[0]})", path) from None


class RasterLabels:
    """Road labels from a mask raster: on the scene's grid, or reprojected to it (nearest).
    Grey masks (0-255, road white) follow the competition's rule; 0/1 masks are read as
    they are; nodata and ground outside the raster are :data:`IGNORE`."""

    def __init__(self, path: str | Path, src):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        from roadseg.io import MASK_THRESHOLD

        self.path, self.src = Path(path), src
        self.file = open_raster(path)
        if self.file.count != 1:
            raise RoadsegError(f"a mask raster has one band; this one has {self.file.count}", path)
        same = (self.file.crs in (src.crs, None) and self.file.transform == src.transform
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
        if 1 < top < 128:
            raise RoadsegError(
                f"mask values up to {top:g}: neither a 0/1 mask nor a 0-255 grey one (road "
                "white); classes? write roads as 1 (or 255) and the rest as 0",
                path,
            )
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


def write_label_raster(labels: VectorLabels, out: str | Path, *, chunk: int = 2048) -> dict:
    """The labels of the whole scene as a uint8 GeoTIFF on its grid (1 road, 0 background,
    255 outside the coverage, its nodata), written window by window and atomically;
    returns the road and covered shares."""
    import rasterio
    from rasterio.windows import Window

    from roadseg.io import atomic_path

    src = labels.src
    profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
               "dtype": "uint8", "nodata": IGNORE, "crs": src.crs, "transform": src.transform,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}  # fmt: skip
    road = covered = 0
    with atomic_path(out, suffix=".tmp.tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, src.height, chunk):
            for col in range(0, src.width, chunk):
                win = Window(col, row, min(chunk, src.width - col), min(chunk, src.height - row))
                mask = labels.window(win)
                road += int((mask == ROAD).sum())
                covered += int((mask != IGNORE).sum())
                dst.write(mask[None], window=win)
    total = src.width * src.height
    return {"road_share": road / covered if covered else 0.0, "covered_share": covered / total}
