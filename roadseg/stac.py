"""A folder run's outputs as a STAC ItemCollection (plain JSON; pystac is not needed to
write it, only the tests use it to validate).

One Item per scene: its footprint and bbox in WGS84 (the raster's bounds densified and
taken to longitude/latitude; none for a raster without a CRS), the projection extension
(``proj:code``, or ``proj:wkt2`` for a CRS without a code, ``proj:shape``,
``proj:transform``, ``proj:bbox`` in the raster's CRS), the raster extension on the
prediction's asset (type, nodata, scale, ground resolution), a ``derived_from`` link to
the scene it was predicted from, and how it was made in its properties: ``roadseg:models``
(the models' SHA-256), ``roadseg:decision``, ``roadseg:identity`` (as the output's tags
say), ``roadseg:output``. Asset hrefs are relative to the collection's file, so the folder
can be moved or served as it is. ``datetime`` is when the output was written: roadseg does
not know when the imagery was taken.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from roadseg.io import atomic_path

STAC_VERSION = "1.1.0"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
GEOTIFF = "image/tiff; application=geotiff"
MEDIA = {".gpkg": "application/geopackage+sqlite3", ".geojson": "application/geo+json",
         ".json": "application/geo+json", ".qml": "text/xml"}  # fmt: skip
TITLES = {"prob": "road probability", "prob8": "road probability (8-bit, scaled)",
          "mask": "road mask (1 road, 0 not)"}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One scene's outputs: its id, where it was read from, its raster, its vector files
    (kind -> path) and the decision its outputs were made with."""

    id: str
    source: str
    raster: Path
    vectors: dict = field(default_factory=dict)
    decision: str = ""


def footprint(crs, bounds) -> tuple[dict, list[float]]:
    """(GeoJSON polygon, bbox) of a raster's bounds in WGS84, edges densified (a
    projected rectangle is curved in longitude and latitude), counter-clockwise."""
    import pyproj
    import shapely
    from shapely.geometry import box, mapping
    from shapely.geometry.polygon import orient

    to_wgs84 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = bounds
    ring = box(*bounds).segmentize(max(right - left, top - bottom) / 8)
    polygon = shapely.set_precision(shapely.transform(ring, lambda c: _lonlat(to_wgs84, c)), 1e-9)
    bbox = [round(v, 9) for v in to_wgs84.transform_bounds(*bounds, densify_pts=21)]
    return mapping(orient(polygon, 1.0)), bbox  # after set_precision, which turns rings clockwise


def _placed_footprint(src, entry) -> tuple[dict | None, list[float] | None]:
    """:func:`footprint`, or none (said on stderr) for a scene whose footprint is no simple
    lon/lat polygon: one across the antimeridian or around a pole (GEOS refused it)."""
    import sys

    from shapely.errors import GEOSException

    try:
        return footprint(src.crs, src.bounds)
    except GEOSException as err:
        print(f"roadseg: warning: {entry.raster}: its STAC item has no footprint (crosses "
              f"the antimeridian or holds a pole: {err})", file=sys.stderr)  # fmt: skip
        return None, None


def _lonlat(transformer, coords):
    import numpy as np

    lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat])


def _projection(src) -> dict:
    import pyproj

    crs = pyproj.CRS.from_user_input(src.crs) if src.crs is not None else None
    code = crs.to_authority() if crs is not None else None
    fields = {"proj:code": f"{code[0]}:{code[1]}" if code else None}
    if crs is not None and not code:
        fields["proj:wkt2"] = crs.to_wkt()
    fields["proj:shape"] = [src.height, src.width]
    fields["proj:transform"] = list(src.transform)[:6]
    if crs is not None:
        fields["proj:bbox"] = list(src.bounds)
    return fields


def _band(src) -> dict:
    from roadseg.ground import raster_pixel_metres

    band = {"data_type": src.dtypes[0], "sampling": "area"}
    if src.nodata is not None:  # NaN is not JSON: the extension's "nan"
        band["nodata"] = src.nodata if src.nodata == src.nodata else "nan"
    if (src.scales[0], src.offsets[0]) != (1.0, 0.0):
        band.update(scale=src.scales[0], offset=src.offsets[0])
    try:
        sides, _ = raster_pixel_metres(src)
    except Exception:  # noqa: BLE001 - no ground resolution (a local CRS): left out
        sides = None
    if sides:
        band["spatial_resolution"] = round((sides[0] * sides[1]) ** 0.5, 6)
    return band


def _asset(path: Path, folder: Path, roles: list[str], **more) -> dict:
    media = MEDIA.get(path.suffix.lower(), GEOTIFF)
    href = "./" + path.resolve().relative_to(folder.resolve()).as_posix()
    return {"href": href, "type": media, "roles": roles, **more}


def _assets(entry: Entry, src, folder: Path) -> dict:
    cog = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    output = src.tags().get("roadseg_output", "")
    assets = {"roads": _asset(entry.raster, folder, ["data"], title=TITLES.get(output, output),
                              type=GEOTIFF + ("; profile=cloud-optimized" if cog else ""),
                              **{"raster:bands": [_band(src)]})}  # fmt: skip
    files = {"roads": entry.raster, **entry.vectors}
    for kind, path in files.items():
        if kind != "roads":
            assets[kind] = _asset(Path(path), folder, ["data"], title=f"road {kind}")
        style = Path(path).with_suffix(".qml")
        if style.is_file():
            assets[f"{kind}-style"] = _asset(style, folder, ["style"], title="QGIS style")
    return assets


def _source_link(source: str) -> dict:
    local = "://" not in source and not source.startswith("/vsi")
    href = str(Path(source).resolve()) if local else source
    return {"rel": "derived_from", "href": href, "type": GEOTIFF, "title": "the scene predicted"}


def _when(path: Path) -> str:
    stamp = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def scene_item(entry: Entry, folder: Path) -> dict:
    """The STAC Item of one scene's outputs (module doc)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(entry.raster) as src:
            tags = src.tags()
            placed = src.crs is not None and not src.transform.is_identity
            geometry, bbox = _placed_footprint(src, entry) if placed else (None, None)
            projection, assets = _projection(src), _assets(entry, src, folder)
    when = _when(entry.raster)
    properties = {"datetime": when, "created": when,
                  "roadseg:output": tags.get("roadseg_output", ""),
                  "roadseg:models": tags.get("roadseg_models", "").split(),
                  "roadseg:decision": entry.decision or tags.get("roadseg_decision", ""),
                  "roadseg:identity": tags.get("roadseg_identity", ""),
                  "roadseg:version": tags.get("roadseg_version", ""), **projection}  # fmt: skip
    item = {"type": "Feature", "stac_version": STAC_VERSION,
            "stac_extensions": [PROJECTION, RASTER], "id": entry.id, "geometry": geometry}  # fmt: skip
    if bbox is not None:
        item["bbox"] = bbox
    item.update(properties=properties, links=[_source_link(entry.source)], assets=assets)
    return item


def write_item_collection(path: Path, entries: list[Entry]) -> int:
    """The STAC ItemCollection of ``entries`` to ``path`` (atomically); returns its items."""
    items = [scene_item(entry, path.parent) for entry in entries]
    collection = {"type": "FeatureCollection", "features": items}
    text = json.dumps(collection, indent=1) + "\n"
    with atomic_path(path, suffix=".tmp.json") as tmp:
        tmp.write_text(text)
    return len(items)
