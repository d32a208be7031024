"""Roads as lines: centre lines of a mask, APLS, and scenes predicted in parts."""

from __future__ import annotations

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from shapely.geometry import LineString, MultiLineString, Point

from roadseg.apls import apls, mask_apls
from roadseg.cli import main
from roadseg.vectors import describe, to_frame, vectorize_raster
from tests.conftest import write_raster

# a road network drawn with known geometry (x, y pixel centres): a T junction at (600, 200)
# and an oblique branch leaving the vertical road at (600, 600); free ends inside the raster
ROADS = [((100, 200), (1100, 200)), ((600, 200), (600, 900)), ((600, 600), (1000, 900))]
JUNCTIONS = [(600, 200), (600, 600)]
# the segments between junctions and ends, and their drawn lengths in pixels (thinning
# shortens a free end by about half a road's width, and moves an oblique crossing a few
# pixels: both well under 2% of these lengths)
SEGMENTS = {
    ((100, 200), (600, 200)): 500.0,
    ((600, 200), (1100, 200)): 500.0,
    ((600, 200), (600, 600)): 400.0,
    ((600, 600), (600, 900)): 300.0,
    ((600, 600), (1000, 900)): 500.0,
}
PIXEL = 0.5  # metres
ORIGIN = (2_600_000.0, 1_200_000.0)  # Swiss LV95 (EPSG:2056)


def _draw(shape, roads, width=7) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for a, b in roads:
        cv2.line(mask, a, b, 255, width)
    return mask


@pytest.fixture
def road_scene(tmp_path):
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    path = write_raster(tmp_path / "roads.tif", _draw((1000, 1200), ROADS), crs="EPSG:2056",
                        transform=transform)  # fmt: skip
    return path, transform


def _to_pixels(geom, transform) -> np.ndarray:
    xs, ys = np.asarray(geom.coords).T
    cols, rows = ~transform * (xs, ys)
    return np.stack([cols - 0.5, rows - 0.5], axis=1)  # pixel centres as (x, y)


def _joins(line: LineString, a, b, tolerance: float = 5.0) -> bool:
    """Whether a line runs from near point a to near point b (either way)."""
    ends = [Point(line.coords[0]), Point(line.coords[-1])]
    near = [[e.distance(Point(p)) <= tolerance for p in (a, b)] for e in ends]
    return (near[0][0] and near[1][1]) or (near[0][1] and near[1][0])


def test_centre_lines_junctions_lengths_and_crs_of_a_drawn_network(road_scene, tmp_path):
    path, transform = road_scene
    out = tmp_path / "roads.gpkg"
    assert main(["vectorize", str(path), "--out", str(out), "--quiet"]) == 0
    lines = gpd.read_file(out)
    assert lines.crs.to_epsg() == 2056
    assert {"length", "mean_prob", "width"} <= set(lines.columns)
    drawn = MultiLineString([list(map(tuple, r)) for r in ROADS])
    pixel_lines = [LineString(_to_pixels(g, transform)) for g in lines.geometry]
    # every vectorized point lies within 2 px of a drawn road
    for line in pixel_lines:
        for x, y in line.coords:
            assert drawn.distance(Point(x, y)) <= 2.0
    # junctions: points where three lines end, within 5 px of the drawn crossings (the
    # thinning moves a crossing of thick roads a few pixels)
    ends = [Point(c) for line in pixel_lines for c in (line.coords[0], line.coords[-1])]
    for jx, jy in JUNCTIONS:
        assert sum(e.distance(Point(jx, jy)) <= 5 for e in ends) == 3
    # each drawn segment is one line of the same length (within 2%), in map units
    assert len(lines) == len(SEGMENTS)
    for (a, b), length in SEGMENTS.items():
        matches = [k for k, line in enumerate(pixel_lines) if _joins(line, a, b)]
        assert len(matches) == 1, f"segment {a}-{b} is one line"
        assert lines["length"].iloc[matches[0]] == pytest.approx(length * PIXEL, rel=0.02)
    # cv2 draws thickness 7 as 9 px across a straight road: 4.5 m
    straight = lines[lines["width"].notna()]["width"]
    assert straight.median() == pytest.approx(9 * PIXEL, rel=0.1)
    assert lines["mean_prob"].isna().all()  # a mask has no probabilities


def test_a_road_across_chunk_borders_is_one_line(road_scene):
    path, _ = road_scene
    whole, _, _ = vectorize_raster(path, chunk=4096)
    # chunk borders at 200, 600, ... pass through both junctions and along the roads
    for chunk in (200, 256):
        parts, _, _ = vectorize_raster(path, chunk=chunk, margin=32)
        assert sorted(map(lambda p: p.pixels.tolist(), parts)) == sorted(
            map(lambda p: p.pixels.tolist(), whole)
        )


def test_probabilities_give_the_mean_probability_of_each_line(tmp_path):
    prob = np.zeros((200, 200), np.float32)
    prob[95:106, 10:190] = 0.8
    prob[95:106, 100:190] = 0.6
    path = write_raster(tmp_path / "prob.tif", prob)
    out = tmp_path / "lines.gpkg"
    assert main(["vectorize", str(path), "--out", str(out), "--quiet"]) == 0
    lines = gpd.read_file(out)
    assert len(lines) == 1 and 0.6 < lines["mean_prob"].iloc[0] < 0.8
    assert lines.crs is None  # no CRS in, none out: pixel units


def test_bad_vector_outputs_and_inputs_are_refused_before_work(road_scene, tmp_path, capsys):
    path, _ = road_scene
    assert main(["vectorize", str(path), "--out", str(tmp_path / "roads.shp")]) == 2
    assert "name it .gpkg or .geojson" in capsys.readouterr().err
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 16, 16), np.uint8))
    assert main(["vectorize", str(rgb), "--out", str(tmp_path / "x.gpkg")]) == 2
    assert "has 3 bands" in capsys.readouterr().err
    assert not (tmp_path / "x.gpkg").exists()


def test_apls_scores_routes_not_pixels():
    truth = _draw((400, 400), [((0, 100), (399, 100)), ((200, 100), (200, 399))]) > 0
    assert mask_apls(truth, truth) == pytest.approx(1.0)
    shifted = np.roll(truth, 2, axis=0)  # a 2 px offset keeps every route
    assert mask_apls(truth, shifted) > 0.98
    cut = truth.copy()
    cut[:, 140:150] = False  # 10 px of 800: pixel F1 barely moves, routes across break
    missing = _draw((400, 400), [((0, 100), (399, 100))]) > 0
    assert 0.5 < mask_apls(truth, cut) < 0.95
    assert mask_apls(truth, missing) < mask_apls(truth, cut)
    empty = np.zeros_like(truth)
    assert mask_apls(truth, empty) == 0.0 and mask_apls(empty, empty) == 1.0
    # symmetric in its two directions: a false road costs as a missed one does
    assert apls([np.array([[0, 0], [0, 100.0]])], []) == 0.0


def test_score_reports_apls_for_a_folder_of_masks(tmp_path, capsys):
    truth = _draw((400, 400), [((0, 100), (399, 100)), ((200, 100), (200, 399))])
    write_raster(tmp_path / "truth" / "satimage_7.png", truth)
    write_raster(tmp_path / "pred" / "mask_7.png", truth)
    assert main(["score", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 0
    printed = capsys.readouterr().out
    assert "APLS" in printed and "1.0000" in printed.split("APLS")[1].splitlines()[0]


class Counting(torch.nn.Module):
    """Logits of the first channel; counts the pixels it was run on."""

    def __init__(self):
        super().__init__()
        self.pixels = 0

    def forward(self, x):
        self.pixels += x.shape[0] * x.shape[2] * x.shape[3]
        p = x[:, :1].clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


def test_a_scene_predicted_in_parts_resumes_and_equals_one_run(tmp_path):
    from roadseg.parts import parts_dir
    from roadseg.predict import Predictor

    pixels = (np.random.default_rng(0).random((3, 200, 260)) * 255).astype(np.uint8)
    src = write_raster(tmp_path / "scene.tif", pixels, crs="EPSG:2056",
                       transform=from_origin(*ORIGIN, PIXEL, PIXEL))  # fmt: skip
    one = Predictor([Counting()], window=64, overlap=16, progress=False)
    one.predict_scene(src, tmp_path / "one.tif", chunk=96)
    # two processes' shares, the second killed before it wrote anything
    first = Predictor([Counting()], window=64, overlap=16, progress=False)
    out = tmp_path / "two.tif"
    first.predict_scene(src, out, chunk=96, rank=0, world=2, merge=False)
    parts = parts_dir(out)
    (parts / ".chunk_000001.tif.x.tmp.tif").write_bytes(b"half a file")  # what a kill leaves
    done = sorted(p.name for p in parts.glob("chunk_*.tif"))
    # chunks of 80 px (96 aligned to whole windows 48 apart): 3 x 4, rank 0 the even ones
    assert done == [f"chunk_{k:06d}.tif" for k in range(0, 12, 2)]
    # run again as one process: only the 4 missing chunks are predicted, then merged
    again = Predictor([Counting()], window=64, overlap=16, progress=False)
    again.predict_scene(src, out, chunk=96)
    assert 0 < again.models[0].pixels < one.models[0].pixels
    assert not parts.exists()
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.transform == a.transform
        np.testing.assert_array_equal(a.read(), b.read())


def test_parts_of_another_run_are_refused(tmp_path):
    from roadseg.errors import RoadsegError
    from roadseg.predict import Predictor

    src = write_raster(tmp_path / "scene.tif", np.zeros((3, 100, 100), np.uint8))
    predictor = Predictor([Counting()], window=64, overlap=16, progress=False)
    predictor.predict_scene(src, tmp_path / "p.tif", chunk=48, rank=0, world=2, merge=False)
    with pytest.raises(RoadsegError, match="another prediction"):
        predictor.predict_scene(src, tmp_path / "p.tif", chunk=48, output="mask")
    with pytest.raises(RoadsegError, match="not predicted yet"):
        predictor.predict_scene(src, tmp_path / "p.tif", chunk=48, rank=0, world=2)


def _tiny_checkpoint(path):
    from roadseg.models import create_model

    torch.manual_seed(0)
    args = {"encoder": "tu-tf_efficientnet_lite0", "encoder_weights": None,
            "decoder_channels": [16, 16, 16, 16, 16]}  # fmt: skip
    weights = create_model("unet", **args).state_dict()
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in weights.items()},
            "hyper_parameters": {"model": "unet", "model_args": args},
        },
        path,
    )
    return path


def test_two_processes_write_the_scene_one_writes_and_its_lines(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    pixels = (np.random.default_rng(1).random((3, 200, 230)) * 255).astype(np.uint8)
    scene = write_raster(tmp_path / "scene.tif", pixels, crs="EPSG:2056",
                         transform=from_origin(*ORIGIN, PIXEL, PIXEL))  # fmt: skip
    common = ["--ckpt", str(ckpt), "--chunk", "96", "--window", "128", "--overlap", "32", "--quiet"]
    # one thread here, as each of the two processes gets on two cores: the same float sums
    # (other thread counts agree to about 1e-5, the order of the sums being another)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["predict", str(scene), "--out", str(tmp_path / "one.tif"), *common]) == 0
    finally:
        torch.set_num_threads(threads)
    two = tmp_path / "two.tif"
    args = ["predict", str(scene), "--out", str(two), "--processes", "2", *common, "--threads", "1",
            "--vector", str(tmp_path / "two.gpkg")]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "predicting with 2 processes" in printed and "two.gpkg" in printed
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(two) as b:
        assert b.crs == a.crs and b.transform == a.transform
        np.testing.assert_array_equal(a.read(), b.read())
    assert not (tmp_path / "two.tif.parts").exists()
    assert gpd.read_file(tmp_path / "two.gpkg").crs.to_epsg() == 2056


def test_lines_of_a_geographic_crs_measure_in_metres_as_in_utm(tmp_path):
    """The same roads in UTM and warped to EPSG:4326: lengths and widths in metres agree."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    mask = np.zeros((600, 600), np.uint8)
    mask[100:112, 50:550] = 1  # 250 m east-west, 6 m wide
    mask[150:550, 300:310] = 1  # 200 m north-south, 5 m wide
    utm = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_250_000, 0.5, 0.5)}
    a = write_raster(tmp_path / "utm.tif", mask, **utm)
    transform, w, h = calculate_default_transform("EPSG:32632", "EPSG:4326", 600, 600,
                                                  *rasterio.transform.array_bounds(600, 600, utm["transform"])[::1])  # fmt: skip
    warped = np.zeros((h, w), np.uint8)
    reproject(mask, warped, src_transform=utm["transform"], src_crs="EPSG:32632",
              dst_transform=transform, dst_crs="EPSG:4326", resampling=Resampling.nearest)  # fmt: skip
    b = write_raster(tmp_path / "wgs84.tif", warped, crs="EPSG:4326", transform=transform)
    lines_utm, lines_deg = (to_frame(*vectorize_raster(p)) for p in (a, b))
    assert lines_deg.attrs["units"] == lines_utm.attrs["units"] == "m"
    assert lines_deg["length"].sum() == pytest.approx(lines_utm["length"].sum(), rel=0.02)
    assert lines_utm["length"].sum() == pytest.approx(450, rel=0.03)
    widths = lambda f: np.average(f["width"], weights=f["length"])  # noqa: E731
    assert widths(lines_deg) == pytest.approx(widths(lines_utm), rel=0.1)
    assert "geodesic" in describe(lines_deg) and " m, EPSG:4326" in describe(lines_deg)


def test_lines_in_web_mercator_measure_ground_metres_as_in_utm(tmp_path):
    """The same roads warped to Web Mercator (at 47.4 N its map metres are 1.48 ground
    metres): lengths and widths in ground metres agree with UTM's (before: 1.48x longer)."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    mask = np.zeros((600, 600), np.uint8)
    mask[100:112, 50:550] = 1  # 250 m east-west, 6 m wide
    mask[150:550, 300:310] = 1  # 200 m north-south, 5 m wide
    utm = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_250_000, 0.5, 0.5)}
    a = write_raster(tmp_path / "utm.tif", mask, **utm)
    bounds = rasterio.transform.array_bounds(600, 600, utm["transform"])
    transform, w, h = calculate_default_transform("EPSG:32632", "EPSG:3857", 600, 600, *bounds)
    warped = np.zeros((h, w), np.uint8)
    reproject(mask, warped, src_transform=utm["transform"], src_crs="EPSG:32632",
              dst_transform=transform, dst_crs="EPSG:3857", resampling=Resampling.nearest)  # fmt: skip
    b = write_raster(tmp_path / "mercator.tif", warped, crs="EPSG:3857", transform=transform)
    lines_utm, lines_wm = (to_frame(*vectorize_raster(p)) for p in (a, b))
    assert lines_wm.attrs["units"] == "m" and "geodesic" in describe(lines_wm)
    assert lines_wm["length"].sum() == pytest.approx(lines_utm["length"].sum(), rel=0.02)
    map_over_ground = lines_wm.geometry.length.sum() / lines_wm["length"].sum()
    assert map_over_ground == pytest.approx(1.48, rel=0.01)  # what it measured before
    widths = lambda f: np.average(f["width"], weights=f["length"])  # noqa: E731
    assert widths(lines_wm) == pytest.approx(widths(lines_utm), rel=0.1)


def test_lines_of_a_raster_without_crs_are_in_pixels_with_y_up(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[10:14, 4:60] = 1
    lines = to_frame(*vectorize_raster(write_raster(tmp_path / "plain.png", mask * 255)))
    ys = np.asarray(lines.geometry.iloc[0].coords)[:, 1]
    assert lines.attrs["units"] == "px" and np.allclose(ys, -12, atol=1)  # row 12 -> y -12


def test_a_0_1_mask_with_nodata_255_still_has_its_roads(tmp_path):
    """roadseg predict --output mask writes 0/1 with nodata 255 (a mosaic's missing tiles):
    the nodata value must not make the 1s read as a 0/255 mask's background."""
    mask = np.zeros((64, 64), np.uint8)
    mask[10:14, 4:60] = 1
    mask[40:, 40:] = 255
    path = write_raster(tmp_path / "mask.tif", mask, nodata=255, crs="EPSG:2056",
                        transform=from_origin(*ORIGIN, PIXEL, PIXEL))  # fmt: skip
    lines = to_frame(*vectorize_raster(path))
    assert len(lines) == 1 and lines["length"].iloc[0] == pytest.approx(52 * 0.5, rel=0.05)
