"""Road labels from vectors (roadseg.labels, ``roadseg labels``): lines become roads of
their width on the ground whatever the CRS of the lines or the scene; ground outside the
labels' coverage is ignored, not background; bad inputs are one line before any work."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.labels import IGNORE, ROAD, VectorLabels, Widths
from tests.conftest import smooth_map, write_raster

# a 0.5 m UTM scene of 400 x 300 px (200 m x 150 m) near Zurich (47.4 N)
X0, Y0, RES = 465_000.0, 5_250_000.0, 0.5
SCENE = {"crs": "EPSG:32632", "transform": from_origin(X0, Y0, RES, RES)}


def scene(tmp_path, name="scene.tif"):
    return write_raster(tmp_path / name, smooth_map(300, 400, seed=1), **SCENE)


def lines_file(path, crs="EPSG:32632", **columns):
    """Two roads in the scene: a horizontal one 160 m long at y0 - 50 m and a diagonal one,
    written in ``crs``."""
    import geopandas as gpd
    from shapely import LineString

    roads = [LineString([(X0 + 20, Y0 - 50), (X0 + 180, Y0 - 50)]),
             LineString([(X0 + 30, Y0 - 140), (X0 + 150, Y0 - 70)])]  # fmt: skip
    frame = gpd.GeoDataFrame(columns, geometry=roads, crs="EPSG:32632").to_crs(crs)
    frame.to_file(path, engine="pyogrio")
    return path


def labels_of(scene_path, vectors, **kwargs):
    with rasterio.open(scene_path) as src:
        labels = VectorLabels(vectors, src, **kwargs)
        return labels.window(Window(0, 0, src.width, src.height))


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857", "EPSG:2056"])
def test_the_same_lines_in_another_crs_give_the_same_roads(tmp_path, crs):
    """Twin labels: the lines in WGS84, Web Mercator (1.48x off in its own units here) or
    the Swiss grid give the UTM lines' mask; the road's area is its length times its width."""
    src = scene(tmp_path)
    utm = labels_of(src, lines_file(tmp_path / "utm.gpkg"), widths=Widths(8.0))
    other = labels_of(src, lines_file(tmp_path / "other.gpkg", crs), widths=Widths(8.0))
    road, twin = utm == ROAD, other == ROAD
    assert (road & twin).sum() / (road | twin).sum() > 0.99  # edge pixels may flip
    horizontal = road[int(50 / RES) - 20 : int(50 / RES) + 20, 60:340]  # away from the other
    assert horizontal.sum(axis=0).mean() == pytest.approx(8.0 / RES, abs=1)  # 8 m across


def test_widths_per_attribute_and_per_column(tmp_path):
    src = scene(tmp_path)
    vectors = lines_file(tmp_path / "l.gpkg", highway=["primary", "track"], width=[12.0, None])
    by = labels_of(src, vectors, widths=Widths.parse(4.0, by="highway=primary:16,residential:7"))
    column = labels_of(src, vectors, widths=Widths.parse(4.0, column="width"))
    row = slice(int(50 / RES) - 30, int(50 / RES) + 30)
    assert (by[row, 100] == ROAD).sum() == pytest.approx(16 / RES, abs=1)
    assert (column[row, 100] == ROAD).sum() == pytest.approx(12 / RES, abs=1)
    # the track has no width in either: the default 4 m (cut across at 60 degrees: wider)
    assert (by == ROAD).sum() > (column == ROAD).sum()


def test_ground_outside_the_coverage_is_ignored_not_background(tmp_path):
    import geopandas as gpd
    from shapely import box

    src = scene(tmp_path)
    vectors = lines_file(tmp_path / "l.gpkg")
    boxed = labels_of(src, vectors)  # the labels' bounding box
    assert (boxed[:, :30] == IGNORE).all() and (boxed[:, 40:360][:, :] != IGNORE).any()
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 100, X0 + 100, Y0)], crs="EPSG:32632").to_crs(
        "EPSG:4326"
    ).to_file(aoi, engine="pyogrio")
    inside = labels_of(src, vectors, aoi=aoi)
    assert (inside[:200, :200] != IGNORE).all() and (inside[200:, :] == IGNORE).all()
    assert (inside[:, 200:] == IGNORE).all() and (inside == ROAD).any()


def test_the_command_writes_the_labels_on_the_scene_grid(tmp_path, capsys):
    src = scene(tmp_path)
    vectors = lines_file(tmp_path / "l.geojson", "EPSG:4326")
    out = tmp_path / "labels.tif"
    assert main(["labels", str(src), str(vectors), "--out", str(out), "--width", "8"]) == 0
    said = capsys.readouterr().out
    assert "2 lines" in said and "ignored, not background" in said and "wrote" in said
    with rasterio.open(out) as dst, rasterio.open(src) as s:
        assert dst.crs == s.crs and dst.transform == s.transform and dst.nodata == IGNORE
        written = dst.read(1)
    assert np.array_equal(written, labels_of(src, vectors, widths=Widths(8.0)))


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("no_crs", "vectors with no CRS"),
        ("elsewhere", "do not overlap the scene"),
        ("points", "must be lines or polygons"),
        ("empty_aoi", "the AOI holds no polygon"),
        ("no_attribute", "no attribute 'lanes'"),
    ],
)
def test_bad_labels_are_refused_in_one_line_before_any_output(tmp_path, capsys, case, says):
    import geopandas as gpd
    from shapely import LineString, Point

    src = scene(tmp_path)
    vectors, extra = tmp_path / "l.gpkg", []
    if case == "no_crs":
        gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])]).to_file(vectors)
    elif case == "elsewhere":
        gpd.GeoDataFrame(geometry=[LineString([(8.0, 40.0), (8.01, 40.0)])],
                         crs="EPSG:4326").to_file(vectors)  # fmt: skip
    elif case == "points":
        gpd.GeoDataFrame(geometry=[Point(X0 + 5, Y0 - 5)], crs="EPSG:32632").to_file(vectors)
    else:
        lines_file(vectors)
    if case == "empty_aoi":
        aoi = tmp_path / "aoi.gpkg"
        gpd.GeoDataFrame(geometry=[LineString([(X0, Y0), (X0 + 1, Y0)])],
                         crs="EPSG:32632").to_file(aoi)  # fmt: skip
        extra = ["--aoi", str(aoi)]
    if case == "no_attribute":
        extra = ["--width-column", "lanes"]
    out = tmp_path / "labels.tif"
    assert main(["labels", str(src), str(vectors), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_widths_that_cannot_be_read_are_refused():
    for by in ("highway", "highway=primary", "=primary:3", "highway=primary:x"):
        with pytest.raises(RoadsegError, match="--width-by"):
            Widths.parse(by=by)
    with pytest.raises(RoadsegError, match="positive"):
        Widths.parse(-2.0)
