"""Ground units: the same ground gives the same metres per pixel and the same line lengths
whatever CRS, unit, projection scale or transform describes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from shapely.geometry import LineString, MultiLineString

from roadseg.errors import RoadsegError
from roadseg.ground import Ruler, line_metres, pixel_metres, ruler
from roadseg.imagery import COMPETITION
from roadseg.reading import ground_resolution, scene_factor
from roadseg.reading import pixel_metres as raster_pixel_metres
from tests.conftest import write_raster

GEOD = Geod(ellps="WGS84")
ZURICH = (8.5, 47.4)  # lon, lat
MANHATTAN = (-73.98, 40.75)  # inside New York Long Island's state plane (EPSG:2263, US ft)
SIDE = 16  # pixels of the test rasters
LOCAL = 'LOCAL_CS["local",UNIT["metre",1]]'
SITE_FEET = ('ENGCRS["site",EDATUM["local"],CS[Cartesian,2],'
             'AXIS["x",east,ORDER[1],LENGTHUNIT["foot",0.3048]],'
             'AXIS["y",north,ORDER[2],LENGTHUNIT["foot",0.3048]]]')  # fmt: skip

# (CRS, where, the pixel's rotation clockwise in degrees): one ground, many descriptions
GROUNDS = {
    "utm": ("EPSG:32632", ZURICH, 0),
    "web_mercator": ("EPSG:3857", ZURICH, 0),
    "wgs84": ("EPSG:4326", ZURICH, 0),
    "state_plane_feet": ("EPSG:2263", MANHATTAN, 0),
    "swiss_lv95": ("EPSG:2056", ZURICH, 0),
    "utm_rotated": ("EPSG:32632", ZURICH, 30),
    "wgs84_rotated": ("EPSG:4326", ZURICH, -20),
}


def ground_transform(crs: str, where, metres: float = 0.5, rotation: float = 0.0) -> Affine:
    """The transform of a ``SIDE`` px grid centred at ``where`` whose pixel is ``metres``
    on the ground along each axis: its column and row vectors are geodesic steps (east and
    south, turned by ``rotation``) projected into ``crs``, independently of roadseg."""
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    lon, lat = where
    east = GEOD.fwd(lon, lat, 90 + rotation, metres / 2)[:2]
    west = GEOD.fwd(lon, lat, 270 + rotation, metres / 2)[:2]
    south = GEOD.fwd(lon, lat, 180 + rotation, metres / 2)[:2]
    north = GEOD.fwd(lon, lat, rotation, metres / 2)[:2]
    (x0, y0), (xe, ye), (xw, yw), (xs, ys), (xn, yn) = (
        to_crs.transform(*p) for p in ((lon, lat), east, west, south, north)
    )
    a, d, b, e = xe - xw, ye - yw, xs - xn, ys - yn
    c, f = x0 - (a + b) * SIDE / 2, y0 - (d + e) * SIDE / 2
    return Affine(a, b, c, d, e, f)


def geodesic_line(where, metres: float, azimuth: float = 60.0, points: int = 40):
    """(lon, lat) points along a geodesic of ``metres`` from ``where``."""
    lon, lat = where
    end = GEOD.fwd(lon, lat, azimuth, metres)[:2]
    inner = GEOD.npts(lon, lat, *end, points - 2)
    return [(lon, lat), *inner, end]


@pytest.fixture(params=sorted(GROUNDS))
def ground_raster(request, tmp_path):
    """A tiny raster of a 0.5 m ground pixel, in one of :data:`GROUNDS`' descriptions."""
    crs, where, rotation = GROUNDS[request.param]
    transform = ground_transform(crs, where, 0.5, rotation)
    pixels = np.zeros((1, SIDE, SIDE), np.uint8)
    return write_raster(tmp_path / f"{request.param}.tif", pixels, crs=crs, transform=transform)


def test_the_same_ground_pixel_is_half_a_metre_in_every_crs(ground_raster):
    with rasterio.open(ground_raster) as src:
        sides, how = raster_pixel_metres(src)
        assert sides == pytest.approx((0.5, 0.5), rel=5e-3), how
        assert ground_resolution(src)[0] == pytest.approx(0.5, rel=5e-3)
        scales, line = scene_factor(src, COMPETITION, "auto")
    assert scales == (1.0, 1.0) and "read as it is" in line


def test_web_mercator_says_its_map_metres_and_scale(tmp_path):
    """Web Mercator at 47.4 N: 0.738 map m per pixel are 0.5 ground m (before: 0.738, and
    the scene was resampled x1.48)."""
    transform = ground_transform("EPSG:3857", ZURICH)
    sides, how = pixel_metres("EPSG:3857", transform, SIDE, SIDE)
    assert math.hypot(transform.a, transform.d) == pytest.approx(0.738, abs=1e-3)
    assert sides == pytest.approx((0.5, 0.5), rel=1e-4)
    assert "EPSG:3857" in how and "0.738 map m/px x scale 0.677 at 47.4 N" in how
    path = write_raster(tmp_path / "wm.tif", np.zeros((1, SIDE, SIDE), np.uint8),
                        crs="EPSG:3857", transform=transform)  # fmt: skip
    with rasterio.open(path) as src:
        line = scene_factor(src, COMPETITION, "auto")[1]
    assert line.startswith(f"resolution: 0.5 m/px ({how}), the model's 0.5 m: read as it is")


def test_utm_and_state_plane_map_units_are_kept_where_their_scale_is_about_1():
    """Within 0.1% of the ground, a projection's own unit is read as it is (exact)."""
    utm = Affine(0.5, 0, 500_000, 0, -0.5, 5_250_000)
    assert pixel_metres("EPSG:32632", utm, SIDE, SIDE) == ((0.5, 0.5), "EPSG:32632, metre")
    feet = Affine(1.0, 0, 990_000, 0, -1.0, 210_000)
    sides, how = pixel_metres("EPSG:2263", feet, SIDE, SIDE)
    assert sides == pytest.approx((1200 / 3937, 1200 / 3937)) and "US survey foot" in how


@pytest.mark.parametrize("crs", ["EPSG:32632", "EPSG:3857", "EPSG:4326", "EPSG:2056", "EPSG:2263"])
def test_a_line_of_1000_ground_metres_is_1000_m_long_in_every_crs(crs):
    where = MANHATTAN if crs == "EPSG:2263" else ZURICH
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    points = geodesic_line(where, 1000.0)
    line = LineString(np.column_stack(to_crs.transform(*np.array(points).T)))
    assert line_metres([line], crs)[0] == pytest.approx(1000.0, rel=5e-3)
    measure = ruler(CRS.from_user_input(crs), ground_transform(crs, where))
    assert measure.unit == "m" and "geodesic" in measure.how
    assert measure.lengths([line])[0] == pytest.approx(1000.0, rel=5e-3)


def test_many_lines_and_parts_are_measured_in_one_call():
    """Each line's own length: parts of a MultiLineString are not joined end to start."""
    import geopandas as gpd

    to_crs = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    lines = []
    for k in range(2000):
        points = geodesic_line(ZURICH, 10.0 + k % 50, azimuth=k % 360, points=5)
        lines.append(LineString(np.column_stack(to_crs.transform(*np.array(points).T))))
    frame = gpd.GeoSeries(lines, crs="EPSG:3857")
    lengths = line_metres(frame)
    np.testing.assert_allclose(lengths, 10.0 + np.arange(2000) % 50, rtol=1e-4)
    two = MultiLineString([lines[0], lines[1]])
    assert line_metres([two, lines[2]], "EPSG:3857") == pytest.approx(
        [lengths[0] + lengths[1], lengths[2]], rel=1e-9
    )
    assert len(line_metres([], "EPSG:3857")) == 0


def test_a_local_crs_is_refused_for_reading_unless_the_resolution_is_given(tmp_path):
    local = {"crs": CRS.from_wkt(LOCAL), "transform": Affine(0.5, 0, 0, 0, -0.5, 100)}
    path = write_raster(tmp_path / "local.tif", np.zeros((1, SIDE, SIDE), np.uint8), **local)
    with rasterio.open(path) as src:
        with pytest.raises(RoadsegError, match=r"local\.tif: .*local CRS.*--resolution METRES"):
            raster_pixel_metres(src)
        with pytest.raises(RoadsegError, match="--resolution METRES"):
            scene_factor(src, COMPETITION, "auto")
        assert scene_factor(src, COMPETITION, 0.5)[0] == (1.0, 1.0)  # given: never measured


def test_lines_of_a_local_crs_are_in_its_unit_as_metres_and_said_so():
    measure = ruler(CRS.from_wkt(SITE_FEET), Affine(2.0, 0, 0, 0, -2.0, 0))
    assert measure.unit == "m" and "local CRS" in measure.how and "foot" in measure.how
    assert measure.lengths([LineString([(0, 0), (100, 0)])])[0] == pytest.approx(30.48)
    assert measure.pixel_side([1.0], [1.0])[0] == pytest.approx(0.6096)


def test_a_transform_without_crs_has_unknown_units_and_lengths_in_pixels(tmp_path):
    transform = Affine(2.0, 0, 1000, 0, -2.0, 5000)
    path = write_raster(tmp_path / "nocrs.tif", np.zeros((1, SIDE, SIDE), np.uint8),
                        transform=transform)  # fmt: skip
    with rasterio.open(path) as src:
        sides, how = raster_pixel_metres(src)
        assert sides is None and "a transform but no CRS" in how
        assert "no CRS" in scene_factor(src, COMPETITION, "auto")[1]
    measure = ruler(None, transform)
    assert measure.unit == "px" and "pixels" in measure.how and "unknown" in measure.how
    assert measure.lengths([LineString([(1000, 5000), (1100, 5000)])])[0] == pytest.approx(50)
    assert isinstance(measure, Ruler) and measure.pixel_side([0.0], [0.0])[0] == 1.0


def test_gcps_give_an_approximate_resolution(tmp_path):
    transform = ground_transform("EPSG:4326", ZURICH, 0.5)
    corners = [(0, 0), (0, SIDE), (SIDE, 0), (SIDE, SIDE)]
    gcps = [GroundControlPoint(r, c, *(transform @ (c, r))) for r, c in corners]
    path = write_raster(tmp_path / "gcps.tif", np.zeros((1, SIDE, SIDE), np.uint8),
                        gcps=gcps, crs="EPSG:4326")  # fmt: skip
    with rasterio.open(path) as src:
        sides, how = raster_pixel_metres(src)
    assert sides == pytest.approx((0.5, 0.5), rel=5e-3) and "4 GCPs" in how


def test_rpcs_alone_are_said_and_left_to_the_resolution_option(tmp_path):
    from rasterio.rpc import RPC

    def poly(*first: float) -> list[float]:  # 20 RPC coefficients: the first few given
        return [*first, *[0.0] * (20 - len(first))]

    # sample = x, line = -y of the normalised lon/lat: a 16 px image over 0.02 deg
    rpc = RPC(height_off=0, height_scale=1, lat_off=47.4, lat_scale=0.01, line_off=8,
              line_scale=8, line_num_coeff=poly(0, 0, -1), line_den_coeff=poly(1),
              long_off=8.5, long_scale=0.01, samp_off=8, samp_scale=8,
              samp_num_coeff=poly(0, 1), samp_den_coeff=poly(1))  # fmt: skip
    path = write_raster(tmp_path / "rpc.tif", np.zeros((1, SIDE, SIDE), np.uint8), rpcs=rpc)
    with rasterio.open(path) as src:
        assert src.rpcs is not None
        sides, how = raster_pixel_metres(src)
        assert sides is None and "RPC" in how
        line = scene_factor(src, COMPETITION, "auto")[1]
    assert "RPC" in line and "--resolution METRES" in line


def test_no_georeference_is_none(tmp_path):
    path = write_raster(tmp_path / "plain.png", np.zeros((1, SIDE, SIDE), np.uint8))
    with rasterio.open(path) as src:
        assert raster_pixel_metres(src) == (None, "no georeference")
