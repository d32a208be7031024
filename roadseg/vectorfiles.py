"""Vector files: GeoPackage and GeoJSON written atomically in the CRS asked for, the
identity of what made them, and many scenes' files merged into one layer.

- CRS: ``crs`` given (any CRS pyproj reads) wins; else a GeoPackage keeps the lines' own
  CRS (the raster's) and GeoJSON is WGS84 longitude/latitude without a ``crs`` member,
  as RFC 7946 asks (GDAL's ``RFC7946=YES``: 7 decimals, about 1 cm). Lines without a CRS
  (pixel coordinates) stay so, said by the caller.
- Identity: a short hash (:func:`roadseg.identity.identity_hash` of the raster's identity
  and every option that changes the vectors) in the GeoPackage layer's metadata, or as
  the GeoJSON FeatureCollection's foreign member ``roadseg``; :func:`file_identity` reads
  it back, so a rerun rewrites only what another raster or other options would change.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
WGS84 = "EPSG:4326"
NUMERIC = ("length", "width", "mean_prob", "area")  # read back as numbers, even all empty
# a GeoJSON file's foreign member, written before its features
_GEOJSON_IDENTITY = re.compile(r'"roadseg"\s*:\s*\{\s*"identity"\s*:\s*"([0-9a-f]+)"')


def vector_driver(out: str | Path) -> str:
    """The OGR driver of a vector file, by its suffix (refused before any work)."""
    suffix = Path(out).suffix.lower()
    if suffix not in DRIVERS:
        raise RoadsegError("unknown vector format: name it .gpkg or .geojson", out)
    return DRIVERS[suffix]


def parse_crs(text: str | None, option: str = "--vector-crs"):
    """A CRS given on the command line as a pyproj CRS (None: not given); one that pyproj
    cannot read is refused in one line."""
    if text is None:
        return None
    import pyproj

    try:
        return pyproj.CRS.from_user_input(text)
    except pyproj.exceptions.CRSError as err:
        raise RoadsegError(f"{option}: pyproj cannot read {text!r} as a CRS ({err})") from None


def target_crs(out: str | Path, frame_crs, crs=None):
    """The CRS ``out`` is written in (module doc): ``crs``, else WGS84 for GeoJSON, else
    ``frame_crs``; None for lines without a CRS (they cannot be reprojected)."""
    if frame_crs is None:
        if crs is not None:
            raise RoadsegError(
                "the raster has no CRS, so its vectors are in pixels and cannot be put in "
                f"{crs}: leave out --vector-crs",
                out,
            )
        return None
    if crs is not None:
        return crs
    return WGS84 if vector_driver(out) == "GeoJSON" else frame_crs


def write_frame(frame, out: str | Path, *, crs=None, identity: str | None = None,
                geometry_type: str | None = None):  # fmt: skip
    """Write a GeoDataFrame to ``out`` (GeoPackage layer ``roads``/``surfaces``, or GeoJSON)
    atomically, in :func:`target_crs`, with ``identity``; returns the frame as written."""
    out = Path(out)
    driver = vector_driver(out)
    target = target_crs(out, frame.crs, crs)
    if target is not None and not frame.crs.equals(target):
        frame = frame.to_crs(target)
    options = _identity_options(driver, identity)
    if driver == "GeoJSON" and target is not None:
        options["RFC7946"] = "YES" if frame.crs.equals(WGS84) else "NO"
    layer = "surfaces" if geometry_type == "Polygon" else "roads"
    with atomic_path(out, suffix=f".tmp{out.suffix}") as tmp:
        tmp.unlink()  # the writer creates the file
        with warnings.catch_warnings():  # no CRS (pixel units) is said by the caller
            warnings.filterwarnings("ignore", message="'crs' was not provided")
            frame.to_file(tmp, driver=driver, layer=layer, engine="pyogrio",
                          geometry_type=geometry_type, **options)  # fmt: skip
    return frame


def _identity_options(driver: str, identity: str | None) -> dict:
    if identity is None:
        return {}
    if driver == "GPKG":
        return {"layer_metadata": {"roadseg_identity": identity}}
    return {"FOREIGN_MEMBERS_COLLECTION": json.dumps({"roadseg": {"identity": identity}})}


def file_identity(path: str | Path) -> str | None:
    """The identity a vector file was written with (None: no file, or none recorded)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        if vector_driver(path) == "GeoJSON":
            with open(path, encoding="utf-8", errors="replace") as f:
                found = _GEOJSON_IDENTITY.search(f.read(4096))
            return found.group(1) if found else None
        import pyogrio

        return (pyogrio.read_info(path).get("layer_metadata") or {}).get("roadseg_identity")
    except (OSError, RoadsegError, ValueError) as err:  # pyogrio's errors are ValueErrors
        del err
        return None


def read_frame(path: str | Path, layer: str | None = None):
    """A vector file (its ``layer``, default the first) as a GeoDataFrame, its measures as
    numbers (an all-empty column of a GeoJSON file reads as text)."""
    import geopandas as gpd
    import pandas as pd

    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as err:  # noqa: BLE001 - pyogrio's and OGR's errors alike
        raise RoadsegError(
            f"cannot be read as vectors ({type(err).__name__}: {err})", path
        ) from err
    for column in NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


COLUMNS = {"lines": ("length", "mean_prob", "width"), "surfaces": ("area",)}


def merge_files(
    files: list[tuple[str, Path]], out: str | Path, crs, *, kind: str
) -> tuple[int, list[str]]:
    """One GeoPackage layer of every ``(scene id, file)``, with a ``scene`` column first,
    in ``crs`` (None: the files' own, when none has a CRS), written atomically one file at
    a time (memory holds one scene's). Returns the features written and the scenes left
    out: files without a CRS where ``crs`` is one (pixels cannot be placed on a map)."""
    out = Path(out)
    written, created, left_out = 0, False, []
    with atomic_path(out, suffix=".tmp.gpkg") as tmp:
        tmp.unlink()
        for scene, path in files:
            frame = read_frame(path)
            if crs is not None and frame.crs is None:
                left_out.append(scene)
                continue
            if not len(frame):
                continue
            if crs is not None and not frame.crs.equals(crs):
                frame = frame.to_crs(crs)
            frame.insert(0, "scene", scene)
            _append(frame, tmp, kind, append=created)
            created, written = True, written + len(frame)
        if not created:  # no feature anywhere: an empty layer of the same columns
            _append(_empty(kind, crs), tmp, kind, append=False)
    return written, left_out


def _empty(kind: str, crs):
    import geopandas as gpd

    columns = {"scene": [], **{c: [] for c in COLUMNS[kind]}}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _append(frame, path: Path, kind: str, *, append: bool) -> None:
    import pyogrio

    geometry = "Polygon" if kind == "surfaces" else "LineString"
    layer = "surfaces" if kind == "surfaces" else "roads"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.write_dataframe(frame, path, driver="GPKG", layer=layer,
                                geometry_type=geometry, append=append)  # fmt: skip
