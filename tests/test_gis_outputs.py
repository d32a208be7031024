"""GIS-ready outputs (#35): vectors of folder runs and their merged layer, a VRT of the
rasters, a STAC ItemCollection, vectors in the CRS asked for (GeoJSON in WGS84), road
surfaces as polygons, and a QGIS style beside every output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import cv2
import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.windows import from_bounds

from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.identity import file_digest
from roadseg.styles import style_path
from tests.conftest import write_raster, write_small_checkpoint
from tests.test_jobs import write_scenes

ARGS = ["--window", "256", "--overlap", "64", "--backend", "torch", "--quiet"]
UTM = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}


@pytest.fixture
def ckpt(tmp_path):
    return write_small_checkpoint(tmp_path / "m.ckpt")


@pytest.fixture
def road_mask(tmp_path):
    """A drawn road network (a T junction and an oblique branch, 9 px wide) as a 0/255
    mask in UTM 32N, 0.5 m pixels."""
    mask = np.zeros((400, 480), np.uint8)
    for a, b in (((40, 80), (440, 80)), ((240, 80), (240, 360)), ((240, 240), (400, 360))):
        cv2.line(mask, a, b, 255, 7)
    mask[300:330, 40:70] = 255  # a block with a hole: a polygon with an interior ring
    mask[310:320, 50:60] = 0
    return write_raster(tmp_path / "mask.tif", mask, **UTM), mask


def renderer(qml) -> ET.Element:
    """The renderer element of a QGIS style file, parsed as XML."""
    root = ET.parse(qml).getroot()
    assert root.tag == "qgis"
    found = root.find("pipe/rasterrenderer")
    return found if found is not None else root.find("renderer-v2")


def validate_stac(path):
    """Each Item of the collection validated with pystac: against every schema when they
    can be fetched; offline (the extensions' schemas are only online) against the core
    Item schema pystac ships, the extensions' fields read through pystac's classes."""
    pystac = pytest.importorskip("pystac")  # installed with roadseg[dev]: CI runs this
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.validation import RegisteredValidator
    from pystac.validation.stac_validator import GetSchemaError

    items = list(pystac.ItemCollection.from_file(str(path)))
    online = True
    for item in items:
        try:
            if not online:
                raise GetSchemaError("not fetched again", None)
            item.validate()
        except GetSchemaError:
            online = False
            data = item.to_dict(include_self_link=False)
            RegisteredValidator.get_validator().validate_core(
                data, pystac.STACObjectType.ITEM, data["stac_version"], item.id
            )
        projection = ProjectionExtension.ext(item)
        assert projection.code and len(projection.shape) == 2 and len(projection.transform) == 6
        assert RasterExtension.ext(item.assets["roads"]).bands[0].data_type is not None
    return items, online


def test_a_folder_run_with_vectors_and_cogs_is_ready_for_a_gis(tmp_path, ckpt, capsys):
    write_scenes(tmp_path / "in", sizes=((200, 260), (230, 180)))
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--out", str(out), "--ckpt", str(ckpt), *ARGS,
            "--output", "prob8", "--cog", "--vector", "--pixel-threshold", "0.3"]  # fmt: skip
    assert main(args) == 0
    ids = ["scene_0", "scene_1"]
    # the merged GeoPackage: one layer, every scene's lines with its id, the scenes' CRS
    assert [list(layer) for layer in pyogrio.list_layers(out / "all-lines.gpkg")] == [
        ["roads", "LineString"]
    ]
    merged = gpd.read_file(out / "all-lines.gpkg")
    assert sorted(merged["scene"].unique()) == ids and merged.crs.to_epsg() == 32632
    for scene in ids:
        own = gpd.read_file(out / f"{scene}-lines.gpkg")
        assert len(own) == (merged["scene"] == scene).sum() > 0
    # the VRT covers every output, pixel for pixel
    with rasterio.open(out / "all-rasters.vrt") as vrt:
        assert vrt.crs.to_epsg() == 32632 and vrt.scales[0] == pytest.approx(1 / 254)
        for scene in ids:
            with rasterio.open(out / f"{scene}.tif") as tif:
                window = from_bounds(*tif.bounds, transform=vrt.transform)
                window = window.round_offsets().round_lengths()
                assert window.col_off >= 0 and window.col_off + window.width <= vrt.width
                assert window.width == tif.width and window.height == tif.height
                np.testing.assert_array_equal(vrt.read(1, window=window), tif.read(1))
    # the STAC ItemCollection: valid, one item per scene, with what made it
    items, online = validate_stac(out / "outputs.stac.json")
    assert [item.id for item in items] == ids
    for item, scene in zip(items, ids, strict=True):
        assert item.properties["roadseg:models"] == [file_digest(ckpt)]
        assert item.properties["roadseg:decision"].startswith("pixel 0.3")
        assert item.properties["proj:code"] == "EPSG:32632"
        with rasterio.open(out / f"{scene}.tif") as tif:
            assert item.properties["proj:shape"] == list(tif.shape)
        west, south, east, north = item.bbox
        assert 8.99 < west < east < 9.05 and 46.9 < south < north < 47.0  # lon/lat, WGS84
        assert shapely.geometry.shape(item.geometry).within(shapely.box(*item.bbox).buffer(1e-9))
        assert shapely.geometry.shape(item.geometry).exterior.is_ccw  # RFC 7946's right-hand rule
        assert item.assets["roads"].media_type.endswith("profile=cloud-optimized")
        assert item.assets["lines"].href == f"./{scene}-lines.gpkg"
        source = [link for link in item.links if link.rel == "derived_from"]
        assert source[0].href == str((tmp_path / "in" / f"{scene}.tif").resolve())
    print(f"STAC validated {'against every schema' if online else 'offline: core schema'}")
    # every output has its style: probability ramps, lines by width
    rasters = [*out.glob("*.tif"), *out.glob("*.vrt")]
    vectors = list(out.glob("*.gpkg"))
    assert len(rasters) == 3 and len(vectors) == 3
    for raster in rasters:
        assert renderer(style_path(raster)).get("type") == "singlebandpseudocolor"
    for vector in vectors:
        lines = renderer(style_path(vector))
        assert lines.get("type") == "singleSymbol"
        assert lines.find("symbols/symbol").get("type") == "line"
        expression = [o.get("value") for o in lines.iter("Option") if o.get("name") == "expression"]
        assert expression == ['coalesce("width", 4)']  # drawn as wide as the road, in metres


def test_a_rerun_that_skips_every_scene_still_merges_them_all(tmp_path, ckpt, capsys):
    write_scenes(tmp_path / "in", sizes=((96, 128), (128, 96)))
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--out", str(out), "--ckpt", str(ckpt), *ARGS,
            "--output", "mask", "--pixel-threshold", "0.3", "--vector", "--vector-kind", "both"]  # fmt: skip
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("scene_*-*.gpkg")}
    assert len(before) == 4
    for merged in ("all-lines.gpkg", "all-surfaces.gpkg", "outputs.stac.json", "all-rasters.vrt"):
        (out / merged).unlink()
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "2 done before" in said and "0 scenes written, 2 current before" in said
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("scene_*-*.gpkg")} == before
    for kind in ("lines", "surfaces"):
        merged = gpd.read_file(out / f"all-{kind}.gpkg")
        assert sorted(merged["scene"].unique()) == ["scene_0", "scene_1"]
    assert len(json.loads((out / "outputs.stac.json").read_text())["features"]) == 2
    assert renderer(out / "scene_0.qml").get("type") == "paletted"  # a mask: one colour
    fill = renderer(out / "all-surfaces.qml").find("symbols/symbol")
    assert fill.get("type") == "fill" and fill.find("layer").get("class") == "SimpleFill"
    # other vector options: the vectors are written again, the rasters are not
    assert main([*args, "--vector-crs", "EPSG:3857"]) == 0
    assert "2 scenes written" in capsys.readouterr().out
    assert gpd.read_file(out / "all-lines.gpkg").crs.to_epsg() == 3857
    # lines alone, as GeoJSON: the files of the earlier options are named as not this run's
    # (break-test), never removed (a GIS user may have edited them)
    before = {p.name for p in out.iterdir()}
    assert main([*args[: args.index("--vector")], "--vector", "geojson"]) == 0
    said = capsys.readouterr().out
    assert (
        "5 vector files in " in said and "are from an earlier run with other vector options" in said
    )
    assert "scene_0-lines.gpkg, scene_0-surfaces.gpkg, scene_1-lines.gpkg" in said
    assert before <= {p.name for p in out.iterdir()}
    assert {"scene_0-lines.geojson", "scene_1-lines.geojson"} <= {p.name for p in out.iterdir()}


def test_geojson_is_wgs84_lon_lat_without_a_crs_member_and_other_crss_are_asked_for(
    road_mask, tmp_path
):
    path, _ = road_mask
    out = tmp_path / "roads.geojson"
    assert main(["vectorize", str(path), "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert "crs" not in doc  # RFC 7946: WGS84 longitude, latitude
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0]
    assert 9.0 < lon < 9.01 and 46.95 < lat < 46.96
    utm = gpd.read_file(out).to_crs(32632)
    assert utm.total_bounds[0] >= 500_000 and utm.total_bounds[3] <= 5_200_000
    gpkg = tmp_path / "roads.gpkg"
    assert main(["vectorize", str(path), "--out", str(gpkg), "--quiet"]) == 0
    assert gpd.read_file(gpkg).crs.to_epsg() == 32632  # a GeoPackage keeps the raster's
    lv95 = tmp_path / "lv95.gpkg"
    assert main(["vectorize", str(path), "--out", str(lv95), "--vector-crs", "EPSG:2056",
                 "--quiet"]) == 0  # fmt: skip
    lines = gpd.read_file(lv95)
    assert lines.crs.to_epsg() == 2056 and lines["length"].sum() == pytest.approx(
        gpd.read_file(gpkg)["length"].sum()
    )  # ground lengths whatever the CRS
    assert renderer(style_path(lv95)).find("symbols/symbol").get("type") == "line"


def test_bad_crs_and_options_without_vectors_are_refused_in_one_line(road_mask, tmp_path, capsys):
    path, _ = road_mask
    out = tmp_path / "x.gpkg"
    assert main(["vectorize", str(path), "--out", str(out), "--vector-crs", "EPSG:99999"]) == 2
    assert "--vector-crs: pyproj cannot read 'EPSG:99999'" in capsys.readouterr().err
    plain = write_raster(tmp_path / "plain.tif", np.zeros((32, 32), np.uint8))
    assert main(["vectorize", str(plain), "--out", str(out), "--vector-crs", "EPSG:4326"]) == 2
    assert "has no CRS, so its vectors are in pixels" in capsys.readouterr().err
    assert not out.exists()
    scene = write_scenes(tmp_path / "in", sizes=((64, 64),))[0]
    base = ["predict", str(scene), "--out", str(tmp_path / "p.tif"), "--ckpt", "m.ckpt"]
    assert main([*base, "--vector-kind", "surfaces"]) == 2
    assert "--vector-kind: only with --vector" in capsys.readouterr().err
    many = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--ckpt", "m.ckpt"]
    assert main([*many, "--vector", "lines.gpkg"]) == 2
    assert "give no file name, or the format" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_surfaces_are_the_masks_polygons_within_half_a_pixel(road_mask, tmp_path):
    from rasterio.features import shapes

    from roadseg.surfaces import surface_polygons

    path, mask = road_mask
    out = tmp_path / "surfaces.gpkg"
    assert main(["vectorize", str(path), "--out", str(out), "--vector-kind", "surfaces",
                 "--quiet"]) == 0  # fmt: skip
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 32632 and len(frame) == 2  # the network, the block
    assert list(frame.geometry.interiors.map(len)) == [0, 1]
    assert frame["area"].sum() == pytest.approx((mask > 0).sum() * 0.25, rel=0.01)
    exact = shapely.union_all([shapely.geometry.shape(g) for g, _ in shapes(
        (mask > 0).astype(np.uint8), mask=mask > 0, transform=UTM["transform"])])  # fmt: skip
    assert shapely.hausdorff_distance(shapely.union_all(frame.geometry), exact) <= 0.5 * 0.5
    whole, _, _ = surface_polygons(path, chunk=4096)
    for chunk in (64, 100):  # borders through the junction and along the roads
        parts, _, _ = surface_polygons(path, chunk=chunk, margin=16)
        assert [p.normalize().wkb for p in parts] == [p.normalize().wkb for p in whole]
    assert renderer(style_path(out)).find("symbols/symbol").get("type") == "fill"
    with pytest.raises(RoadsegError, match="0 to 0.5 px"):
        surface_polygons(path, simplify=1.0)


def test_scenes_in_two_crss_get_one_vrt_each(tmp_path):
    from roadseg.vrt import write_vrts

    folder = tmp_path / "out"
    rasters = []
    for k, crs in enumerate(("EPSG:32632", "EPSG:32633", "EPSG:32632")):
        data = np.full((1, 50, 60), k, np.uint8)
        transform = from_origin(500_000 + 30 * k, 5_200_000, 0.5 if k < 2 else 1.0, 0.5)
        rasters.append(write_raster(folder / f"s{k}.tif", data, crs=crs, transform=transform,
                                    nodata=255))  # fmt: skip
    written, left_out = write_vrts(folder, rasters, "all-rasters")
    assert [p.name for p in written] == ["all-rasters-EPSG_32632.vrt", "all-rasters-EPSG_32633.vrt"]
    assert left_out == []
    with rasterio.open(written[0]) as vrt:  # s0 and s2 (1 m pixels across): the finest grid
        assert vrt.crs.to_epsg() == 32632 and vrt.res == (0.5, 0.5)
        assert vrt.bounds == pytest.approx((500_000, 5_199_975, 500_120, 5_200_000))
        assert set(np.unique(vrt.read(1))) == {0, 2, 255}
    # one CRS again: one VRT, and those of the CRSs gone are removed
    written, _ = write_vrts(folder, rasters[:1], "all-rasters")
    assert sorted(p.name for p in folder.glob("*.vrt")) == ["all-rasters.vrt"]


def test_a_scene_whose_outputs_would_share_a_style_is_refused():
    from roadseg.products import VectorSpec, check_names

    check_names(["a", "b-lines"], None)
    with pytest.raises(RoadsegError, match="scene 'b': its lines would share the style b-lines"):
        check_names(["b", "b-lines"], VectorSpec())
    with pytest.raises(RoadsegError, match="mosaic"):
        check_names(["all-rasters"], None)


def test_real_tiles_as_a_folder_run_are_ready_for_a_gis(shared_data, tmp_path, ckpt):
    """Two real test tiles, georeferenced side by side, through the whole GIS path."""
    from roadseg.io import read_raster

    tiles = sorted((shared_data / "cil-2022" / "test" / "images").glob("*.png"))[:2]
    for k, tile in enumerate(tiles):
        write_raster(tmp_path / "in" / f"{tile.stem}.tif", read_raster(tile)[:3],
                     crs="EPSG:32632", transform=from_origin(500_000 + 200 * k, 5_200_000, 0.5, 0.5))  # fmt: skip
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--out", str(out), "--ckpt", str(ckpt), *ARGS,
            "--output", "mask", "--pixel-threshold", "0.4", "--vector", "geojson"]  # fmt: skip
    assert main(args) == 0
    with rasterio.open(out / "all-rasters.vrt") as vrt:
        assert vrt.shape == (400, 800)  # two 400-px tiles (200 m at 0.5 m) side by side
    items, _ = validate_stac(out / "outputs.stac.json")
    assert [item.id for item in items] == [t.stem for t in tiles]
    for tile in tiles:
        assert "crs" not in json.loads((out / f"{tile.stem}-lines.geojson").read_text())
        assert style_path(out / f"{tile.stem}-lines.geojson").is_file()
    assert set(gpd.read_file(out / "all-lines.gpkg")["scene"]) <= {t.stem for t in tiles}
