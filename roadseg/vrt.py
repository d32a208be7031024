"""A mosaic of a folder run's rasters as a GDAL VRT, as ``gdalbuildvrt`` makes it, written
as XML (GDAL's Python bindings need not be installed; rasterio has no ``buildvrt``).

One VRT holds rasters of one CRS: scenes in several CRSs get one VRT per CRS (named by
it). Rasters that cannot be placed on a north-up grid (rotated or sheared transforms,
control points or RPCs only, no CRS) are left out and named. The mosaic's pixels are the
finest of its rasters' (``gdalbuildvrt -resolution highest``), its extent their union;
each raster is a ``ComplexSource`` whose nodata lets the rasters under it show through,
later rasters drawn over earlier ones. Sources are named relative to the VRT, so the
folder can be moved or served as it is.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path

GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
              "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}  # fmt: skip
MARKER = "roadseg_mosaic"  # metadata item that says roadseg wrote a VRT


@dataclass(frozen=True)
class Grid:
    """What a VRT needs of one raster."""

    path: Path
    crs: object
    bounds: tuple[float, float, float, float]  # left, bottom, right, top
    res: tuple[float, float]
    shape: tuple[int, int]  # height, width
    dtype: str
    nodata: float | None
    scale: float
    offset: float
    block: tuple[int, int]  # height, width


def read_grid(path: Path) -> Grid | str:
    """A raster's :class:`Grid`, or why it cannot be placed in a VRT."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            t = src.transform
            if src.crs is None or t.is_identity:
                return "no CRS or transform"
            if t.b or t.d or t.e >= 0:
                return "not a north-up grid (rotated or sheared)"
            return Grid(path, src.crs, tuple(src.bounds), (t.a, -t.e), (src.height, src.width),
                        src.dtypes[0], src.nodata, src.scales[0], src.offsets[0],
                        src.block_shapes[0])  # fmt: skip


def crs_name(crs) -> str:
    """A CRS as a file name part: ``EPSG_32632``, else a short hash of its WKT."""
    import hashlib

    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG_{epsg}"
    return "crs_" + hashlib.sha256(crs.to_wkt().encode()).hexdigest()[:8]


def group_by_crs(grids: list[Grid]) -> list[list[Grid]]:
    """The grids in groups of one CRS, in the order their CRSs first appear."""
    groups: list[list[Grid]] = []
    for grid in grids:
        for group in groups:
            if group[0].crs == grid.crs:
                group.append(grid)
                break
        else:
            groups.append([grid])
    return groups


def vrt_xml(grids: list[Grid], folder: Path) -> str:
    """The VRT of rasters of one CRS, sources relative to ``folder`` (the VRT's)."""
    first = grids[0]
    rx, ry = min(g.res[0] for g in grids), min(g.res[1] for g in grids)
    left, top = min(g.bounds[0] for g in grids), max(g.bounds[3] for g in grids)
    right, bottom = max(g.bounds[2] for g in grids), min(g.bounds[1] for g in grids)
    width, height = _cells((right - left) / rx), _cells((top - bottom) / ry)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = first.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        f"{v:.17g}" for v in (left, rx, 0.0, top, 0.0, -ry)
    )
    meta = ET.SubElement(root, "Metadata")
    ET.SubElement(meta, "MDI", key=MARKER).text = str(len(grids))
    band = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[first.dtype], band="1")
    if first.nodata is not None:
        ET.SubElement(band, "NoDataValue").text = f"{first.nodata:.17g}"
    if (first.scale, first.offset) != (1.0, 0.0):
        ET.SubElement(band, "Offset").text = f"{first.offset:.17g}"
        ET.SubElement(band, "Scale").text = f"{first.scale:.17g}"
    ET.SubElement(band, "ColorInterp").text = "Gray"
    for grid in grids:
        _source(band, grid, folder, (left, top), (rx, ry))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _cells(extent: float) -> int:
    return max(1, math.ceil(extent - 1e-6))


def _source(band: ET.Element, grid: Grid, folder: Path, origin, res) -> None:
    source = ET.SubElement(band, "ComplexSource")
    name = ET.SubElement(source, "SourceFilename", relativeToVRT="1")
    name.text = Path(grid.path).resolve().relative_to(folder.resolve()).as_posix()
    ET.SubElement(source, "SourceBand").text = "1"
    height, width = grid.shape
    ET.SubElement(source, "SourceProperties", RasterXSize=str(width), RasterYSize=str(height),
                  DataType=GDAL_TYPES[grid.dtype], BlockXSize=str(grid.block[1]),
                  BlockYSize=str(grid.block[0]))  # fmt: skip
    ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
    dst = {"xOff": (grid.bounds[0] - origin[0]) / res[0],
           "yOff": (origin[1] - grid.bounds[3]) / res[1],
           "xSize": width * grid.res[0] / res[0], "ySize": height * grid.res[1] / res[1]}  # fmt: skip
    ET.SubElement(source, "DstRect", {k: f"{v:.17g}" for k, v in dst.items()})
    if grid.nodata is not None:
        ET.SubElement(source, "NODATA").text = f"{grid.nodata:.17g}"


def write_vrts(folder: Path, rasters: list[Path], stem: str) -> tuple[list[Path], list[str]]:
    """``folder/<stem>.vrt`` of ``rasters`` (all in ``folder``), or one
    ``<stem>-<CRS>.vrt`` per CRS when they are in several; each written atomically, and
    VRTs of this stem that roadseg wrote before and that no longer apply removed. Returns
    the VRTs and one line per raster left out (why)."""
    grids, left_out = [], []
    for path in rasters:
        grid = read_grid(path)
        if isinstance(grid, str):
            left_out.append(f"{path.name}: {grid}")
        else:
            grids.append(grid)
    groups = group_by_crs(grids)
    written = []
    for group in groups:
        name = f"{stem}.vrt" if len(groups) == 1 else f"{stem}-{crs_name(group[0].crs)}.vrt"
        path = folder / name
        text = vrt_xml(group, folder)
        if not (path.is_file() and path.read_text() == text):
            with atomic_path(path, suffix=".tmp.vrt") as tmp:
                tmp.write_text(text)
        written.append(path)
    _remove_stale(folder, stem, written)
    return written, left_out


def _remove_stale(folder: Path, stem: str, keep: list[Path]) -> None:
    """Remove this stem's VRTs (and their styles) that roadseg wrote before and that this
    run did not write again (the scenes' CRSs changed)."""
    for path in [folder / f"{stem}.vrt", *folder.glob(f"{stem}-*.vrt")]:
        if path in keep or not path.is_file():
            continue
        try:
            ours = f'key="{MARKER}"' in path.read_text()
        except (OSError, UnicodeDecodeError):
            ours = False
        if ours:
            path.unlink()
            path.with_suffix(".qml").unlink(missing_ok=True)


def check_vrt(path: Path) -> None:
    """Open a written VRT with GDAL (through rasterio): a broken one is refused."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            src.read(1, window=((0, 1), (0, 1)))
    except rasterio.errors.RasterioError as err:
        raise RoadsegError(f"GDAL cannot read this VRT ({err})", path) from err
