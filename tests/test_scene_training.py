"""Training on a region of one's own (roadseg.scenedata, ``data.scenes``): GeoTIFF scenes
with road lines or a mask raster, cut into blocks of ground; training windows stay inside
training blocks, validation and ``evaluate`` score held-out blocks; unlabelled ground
weighs nothing; twins in other CRSs give the same ground; bad inputs are one line before
any training."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window, bounds
from shapely import box

from roadseg.cli import main
from roadseg.labels import IGNORE
from roadseg.metrics import RoadMetrics
from roadseg.scenedata import SceneData
from tests.conftest import smooth_map, write_raster

X0, Y0, RES = 465_000.0, 5_250_000.0, 0.5  # a 0.5 m UTM 32N scene near Zurich
H, W = 384, 512  # 192 m x 256 m
ROWS, COLS = (40, 150, 300), (70, 260, 450)  # road centres, pixels
UTM = {"crs": "EPSG:32632", "transform": from_origin(X0, Y0, RES, RES)}
QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def region(tmp_path, *, lines_crs="EPSG:32632", aoi=None, scene=None, extra=""):
    """A scene with grey roads on texture, its road centre lines (6 m wide) in
    ``lines_crs``, and the scene list naming them."""
    import geopandas as gpd
    from shapely import LineString

    image = smooth_map(H, W, seed=1)
    for r in ROWS:
        image[:, r - 6 : r + 6] = 128
    for c in COLS:
        image[:, :, c - 6 : c + 6] = 128
    path = scene or write_raster(tmp_path / "scene.tif", image, **UTM)
    roads = [LineString([(X0, Y0 - r * RES), (X0 + W * RES, Y0 - r * RES)]) for r in ROWS]
    roads += [LineString([(X0 + c * RES, Y0), (X0 + c * RES, Y0 - H * RES)]) for c in COLS]
    frame = gpd.GeoDataFrame(geometry=roads, crs="EPSG:32632").to_crs(lines_crs)
    frame.to_file(tmp_path / "roads.gpkg", engine="pyogrio")
    entry = f"- image: {path.name}\n  labels: roads.gpkg\n  width: 6\n{extra}"
    if aoi is not None:
        gpd.GeoDataFrame(geometry=[aoi], crs="EPSG:32632").to_file(tmp_path / "aoi.gpkg")
        entry += "  aoi: aoi.gpkg\n"
    (tmp_path / "scenes.yaml").write_text(entry)
    return tmp_path / "scenes.yaml"


def fit_args(scenes, run, *extra):
    return ["fit", "--config", str(QUICK), "--data.scenes", str(scenes),
            "--data.block", "64", "--data.crop_size", "64", "--data.batch_size", "2",
            "--data.samples_per_epoch", "4", "--model.model_args.encoder_weights", "null",
            "--model.model_args.decoder_channels", "[16, 8, 8, 8, 8]",
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", *extra]  # fmt: skip


def test_fit_validates_on_held_out_blocks_resumes_and_evaluates_on_ground(tmp_path, capsys):
    scenes = region(tmp_path)
    run = tmp_path / "run"
    assert main(fit_args(scenes, run)) == 0
    printed = capsys.readouterr().out
    assert "12 blocks of 64 m with labelled ground: 10 train, 2 held out" in printed
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    record = ckpt["roadseg_split"]
    assert record["kind"] == "scenes" and len(record["val"]) == 2
    assert not {e["sha256"] for e in record["val"]} & {e["sha256"] for e in record["train"]}
    assert "val_patch_f1" in (run / "metrics.csv").read_text().splitlines()[0]
    # resumed to a second epoch from its last checkpoint
    assert main(fit_args(scenes, run, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4

    # the same model as its own baseline: the same scores, a difference of exactly 0
    best, out = run / "checkpoints" / "best.ckpt", tmp_path / "scores.json"
    assert main(["evaluate", "--ckpt", str(best), "--baseline", str(best), "--out", str(out),
                 "--quiet", "--backend", "torch"]) == 0  # fmt: skip
    scores = json.loads(out.read_text())
    assert scores["heldout"]["blocks"] == 2 and scores["heldout"]["scored_patches"] > 0
    assert scores["before"]["patch_f1"] == scores["after"]["patch_f1"]
    assert scores["difference"]["patch_f1"]["after_minus_before"] == 0
    assert 0 <= scores["after"]["apls"] <= 1 and scores["difference"]["apls"]["interval"] == [0, 0]
    assert "after-before" in capsys.readouterr().out
    # thresholds tuned on the held-out blocks, stored beside the checkpoint, then used
    assert main(["tune", "--ckpt", str(best), "--quiet", "--backend", "torch"]) == 0
    printed = capsys.readouterr().out
    assert "tuned for f1 on these blocks: optimistic" in printed
    # and the honest figure: each held-out block scored at the thresholds the other gave
    honest = next(line for line in printed.splitlines() if "honest" in line)
    assert "on half the blocks, scored on the other half, both ways: 1 + 1 blocks" in honest
    assert 0 <= float(honest.split("road patch F1 ")[1].split(",")[0]) <= 1
    stored = json.loads((run / "checkpoints" / "best.ckpt.thresholds.json").read_text())
    tuned = stored["by_metric"]["f1"]
    assert tuned["val_patch_f1"] >= scores["after"]["patch_f1"] - 1e-9
    assert main(["evaluate", "--ckpt", str(best), "--out", str(out), "--quiet",
                 "--backend", "torch"]) == 0  # fmt: skip
    again = json.loads(out.read_text())["model"]
    assert again["decision"] == f"pixel {tuned['pixel']:g}, patch {tuned['patch']:g}"
    assert abs(again["patch_f1"] - tuned["val_patch_f1"]) < 1e-4


def test_the_threshold_grid_counts_as_the_counts_of_each_pair():
    from roadseg.groundeval import counts, grid_counts

    rng = np.random.default_rng(0)
    maps = []
    for h, w in ((64, 80), (50, 33)):
        target = (rng.random((h, w)) < 0.3).astype(np.uint8)
        target[:7, :] = IGNORE
        maps.append((rng.random((h, w)).astype(np.float32), target))
    pixels, patches = [0.3, 0.5], [0.1, 0.25, 0.4]
    grid = grid_counts(maps, pixels, patches)
    for i, p in enumerate(pixels):
        for j, q in enumerate(patches):
            assert (
                grid[i, j].tolist() == np.sum([counts(pr > p, t, q) for pr, t in maps], 0).tolist()
            )


def test_windows_stay_in_training_blocks_and_unlabelled_ground_is_ignored(tmp_path):
    aoi = box(X0, Y0 - H * RES, X0 + 100, Y0)  # the western 200 px of 512 are labelled
    data = SceneData(region(tmp_path, aoi=aoi), block=64, val_fraction=0.25, seed=0,
                     crop_size=64)  # fmt: skip
    src = data.scenes[0].src
    assert len(data.train) + len(data.val) == 6  # 2 of 4 columns of 128 px blocks, 3 rows
    from roadseg.scenedata import SceneWindows

    windows = []
    scene = data.scenes[0]
    read = scene.read
    scene.read = lambda win: windows.append(win) or read(win)
    dataset = SceneWindows(data.scenes, data.train, crop_size=64, augment="none")
    samples = [dataset[(0, seed)] for seed in range(40)]
    held = [box(*bounds(b.window, src.transform)) for b in data.val]
    for win in windows:
        ground = box(*bounds(win, src.transform))
        assert any(box(*bounds(b.window, src.transform)).contains(ground) for b in data.train)
        assert not any(ground.intersection(h).area > 0 for h in held)
    straddling = 0
    for sample, win in zip(samples, windows, strict=True):
        edge = (X0 + 100 - bounds(win, src.transform)[0]) / RES  # AOI's edge, window px
        weight = sample["weight"][0].numpy()
        assert weight[:, : int(min(edge, 64))].all()
        if edge < 64:
            straddling += 1
            assert not weight[:, int(np.ceil(edge)) :].any()
    assert straddling > 0


@pytest.mark.parametrize("scene_crs, lines_crs", [("EPSG:3857", "EPSG:2056"), ("EPSG:4326", "EPSG:3857")])  # fmt: skip
def test_a_twin_scene_in_another_crs_gives_the_same_ground(tmp_path, scene_crs, lines_crs):
    """The UTM scene warped to Web Mercator or longitude/latitude, its lines in yet another
    CRS: the same labelled ground and the same road share, read at the model's 0.5 m."""
    from rasterio.warp import calculate_default_transform, reproject

    utm = tmp_path / "utm"
    utm.mkdir()
    base = SceneData(region(utm), block=64, val_fraction=0.0, seed=0, resolution=0.5)
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    with rasterio.open(utm / "scene.tif") as src:
        transform, w, h = calculate_default_transform(src.crs, scene_crs, src.width,
                                                      src.height, *src.bounds)  # fmt: skip
        out = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), out, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=scene_crs)  # fmt: skip
    twin_path = write_raster(twin_dir / "scene.tif", out, crs=scene_crs, transform=transform)
    twin = SceneData(region(twin_dir, lines_crs=lines_crs, scene=twin_path), block=64,
                     val_fraction=0.0, seed=0, resolution=0.5)  # fmt: skip

    def road_share(data):
        targets = [data.scenes[0].read(b.window)[1] for b in data.train]
        road = sum(int((t == 1).sum()) for t in targets)
        return road / sum(int((t != IGNORE).sum()) for t in targets), road * 0.25

    (share, area), (twin_share, twin_area) = road_share(base), road_share(twin)
    assert abs(twin_share / share - 1) < 0.05, (share, twin_share)
    assert abs(twin_area / area - 1) < 0.05, (area, twin_area)  # square metres of road
    assert twin.imagery.resolution == 0.5


def test_a_mask_raster_in_another_crs_labels_as_the_lines_do(tmp_path):
    """Labels from a mask GeoTIFF on another grid (reprojected, nearest) and from the lines."""
    from roadseg.labels import VectorLabels, Widths

    scenes = region(tmp_path)
    with rasterio.open(tmp_path / "scene.tif") as src:
        lines = VectorLabels(tmp_path / "roads.gpkg", src, widths=Widths(6.0))
        mask = lines.window(Window(0, 0, W, H))
    grey = np.where(mask == 1, 255, 0).astype(np.uint8)
    write_raster(tmp_path / "mask.tif", grey, **UTM)
    (tmp_path / "masks.yaml").write_text("- image: scene.tif\n  labels: mask.tif\n")
    data = SceneData(tmp_path / "masks.yaml", block=64, val_fraction=0.0, seed=0)
    by_lines = SceneData(scenes, block=64, val_fraction=0.0, seed=0)
    for a, b in zip(data.train, by_lines.train, strict=True):
        ta, tb = data.scenes[0].read(a.window)[1], by_lines.scenes[0].read(b.window)[1]
        assert np.array_equal(ta, tb)


def test_metrics_leave_out_unlabelled_pixels_and_patches():
    prob = torch.zeros(1, 1, 32, 32)
    prob[..., :16] = 1.0  # the left half predicted road
    mask = torch.zeros(1, 1, 32, 32)
    valid = torch.zeros(1, 1, 32, 32)
    valid[..., 16:] = 1  # only the right half is labelled: all of it background
    metrics = RoadMetrics()
    metrics.update(prob, mask, None, valid)
    scores = metrics.compute()
    assert scores["patch_accuracy"] == 1 and metrics.patch_fp == 0 and metrics.fp == 0
    assert metrics.patch_tn == 2  # the two right patches; the left ones are not labelled


@pytest.mark.parametrize(
    "case, says",
    [
        ("far", "do not overlap the scene"),
        ("nocrs", "vectors with no CRS"),
        ("utm-as-geojson", "are not longitude/latitude, though the file says EPSG:4326"),
        ("emptyaoi", "the AOI holds no polygon with an area"),
        ("corner", "block of the scene has labelled ground"),
        ("missing", "no such labels file"),
    ],
)
def test_bad_inputs_are_one_line_before_training(tmp_path, capsys, case, says):
    import geopandas as gpd
    from shapely import LineString, Polygon

    scenes = region(tmp_path)
    if case == "far":  # the lines 50 km away
        gpd.GeoDataFrame(geometry=[LineString([(X0 + 5e4, Y0), (X0 + 5e4 + 100, Y0)])],
                         crs="EPSG:32632").to_file(tmp_path / "roads.gpkg")  # fmt: skip
    elif case in ("nocrs", "utm-as-geojson"):  # a Shapefile without .prj; UTM read as WGS84
        (tmp_path / "roads.gpkg").unlink()
        name = "roads.shp" if case == "nocrs" else "roads.geojson"
        crs = None if case == "nocrs" else "EPSG:4326"  # coordinates in metres all the same
        gpd.GeoDataFrame(geometry=[LineString([(X0, Y0 - 10), (X0 + 100, Y0 - 10)])],
                         crs=crs).to_file(tmp_path / name)  # fmt: skip
        scenes.write_text(scenes.read_text().replace("roads.gpkg", name))
    elif case == "emptyaoi":
        gpd.GeoDataFrame(geometry=[Polygon([(X0, Y0), (X0, Y0), (X0, Y0)])],
                         crs="EPSG:32632").to_file(tmp_path / "aoi.gpkg")  # fmt: skip
        scenes.write_text(scenes.read_text() + "  aoi: aoi.gpkg\n")
    elif case == "corner":  # labels cover 1 m x 1 m: no block has 2% labelled ground
        gpd.GeoDataFrame(geometry=[box(X0 + 1, Y0 - 2, X0 + 2, Y0 - 1)],
                         crs="EPSG:32632").to_file(tmp_path / "roads.gpkg")  # fmt: skip
    else:
        (tmp_path / "roads.gpkg").unlink()
    capsys.readouterr()  # what writing the inputs printed
    run = tmp_path / "run"
    assert main(fit_args(scenes, run)) != 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("roadseg: error: ") and says in lines[0], err
    assert "Traceback" not in err and not (run / "checkpoints").exists()


def test_a_scene_listed_twice_never_trains_on_held_out_ground(tmp_path):
    """Overlapping scenes (two dates, two resolutions) are split by ground: a block of one
    that shares ground with a held-out block of the other trains in neither."""
    scenes = region(tmp_path)
    (tmp_path / "twice.yaml").write_text(scenes.read_text() * 2)
    data = SceneData(tmp_path / "twice.yaml", block=64, val_fraction=0.25, seed=0)
    from roadseg.scenedata import ground_of

    crs = data.scenes[0].src.crs
    held = [ground_of(b, data.scenes, crs) for b in data.val]
    for block in data.train:
        ground = ground_of(block, data.scenes, crs)
        assert all(ground.intersection(h).area < 1e-6 for h in held)
    assert len(data.train) + len(data.val) < 24 and "used for neither" in " ".join(data.lines)


def test_a_rotated_scene_is_labelled_over_all_its_ground(tmp_path):
    """A grid rotated 30 degrees: every pixel inside the AOI is labelled (a bounding box
    from two corners left most of it out)."""
    from affine import Affine

    rotated = Affine.translation(X0, Y0) * Affine.rotation(-30) * Affine.scale(RES, -RES)
    path = write_raster(tmp_path / "scene.tif", smooth_map(H, W, seed=1), crs="EPSG:32632",
                        transform=rotated)  # fmt: skip
    aoi = box(X0 - 500, Y0 - 500, X0 + 500, Y0 + 500)
    data = SceneData(region(tmp_path, aoi=aoi, scene=path), block=64, val_fraction=0.0, seed=0)
    targets = [data.scenes[0].read(b.window)[1] for b in data.train]
    assert len(data.train) == 12 and all((t != IGNORE).all() for t in targets)


def test_blocks_without_image_pixels_are_not_blocks(tmp_path):
    """A float scene that is NaN but for its eastern quarter: only blocks with pixels."""
    image = smooth_map(H, W, seed=1).astype(np.float32)
    image[:, :, : W - 128] = np.nan
    path = write_raster(tmp_path / "scene.tif", image, **UTM)
    data = SceneData(region(tmp_path, scene=path), block=64, val_fraction=0.0, seed=0)
    assert len(data.train) == 3  # the last column of 128 px blocks
    assert all(int(b.window.col_off) == W - 128 for b in data.train)


def test_changed_labels_are_a_changed_split_and_paths_are_recorded_whole(tmp_path, capsys,
                                                                        monkeypatch):  # fmt: skip
    import geopandas as gpd

    scenes = region(tmp_path)
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # the scene list given relative to here
    assert main(fit_args("scenes.yaml", run)) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the record finds its scenes from anywhere
    out = tmp_path / "s.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out), "--quiet"]) == 0
    # an output over an input is refused, the input kept
    lines = (tmp_path / "roads.gpkg").read_bytes()
    for target in ("scenes.yaml", "roads.gpkg"):
        capsys.readouterr()
        assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / target)]) == 2
    assert (tmp_path / "roads.gpkg").read_bytes() == lines
    # one line fewer, the same bounding box: resuming and evaluating are refused
    frame = gpd.read_file(tmp_path / "roads.gpkg")
    frame.iloc[[0, 2, 3, 4, 5]].to_file(tmp_path / "roads.gpkg")
    capsys.readouterr()
    assert main(fit_args(scenes, run, "--trainer.max_epochs", "2", "--ckpt_path", "last")) != 0
    assert "its labels" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out), "--quiet"]) == 2
    assert "its labels" in capsys.readouterr().err
    # a scene-trained model does not submit to a competition unless told what to predict
    assert main(["submit", "--ckpt", str(ckpt), "--out", str(tmp_path / "s.csv")]) == 2
    assert "trained on scenes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "entry, says",
    [
        ("- image: scene.tif\n  labels: roads.gpkg\n  width: 6m\n", "width must be positive"),
        ("- image: 5\n  labels: roads.gpkg\n", "image must be a path"),
        ("- image: scene.tif\n  labels: roads.gpkg\n  oops: [\n", "not a YAML list"),
        ("- image: scenes.yaml\n  labels: roads.gpkg\n", "not a raster GDAL reads"),
        ("- image: scene.tif\n  labels: classes.tif\n", "neither a 0/1 mask nor a 0-255"),
        (
            "- image: scene.tif\n  labels: roads.gpkg\n  width_by: lanes=1:4,2:7\n",
            "no line's lanes is any of",
        ),
    ],
)
def test_bad_scene_lists_are_one_line(tmp_path, capsys, entry, says):
    region(tmp_path)
    write_raster(tmp_path / "classes.tif", np.tile(np.arange(3, dtype=np.uint8), (H, W // 3)),
                 **UTM)  # fmt: skip
    import geopandas as gpd

    frame = gpd.read_file(tmp_path / "roads.gpkg")
    frame["lanes"] = [3.0, 4.0, np.nan, 3.0, 4.0, 3.0]  # numbers with NULLs: read as floats
    frame.to_file(tmp_path / "roads.gpkg")
    (tmp_path / "bad.yaml").write_text(entry)
    capsys.readouterr()
    assert main(fit_args(tmp_path / "bad.yaml", tmp_path / "run")) != 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], err


@pytest.mark.parametrize("option, value", [("val_fraction", "-0.2"), ("val_fraction", "1.5"),
                                           ("val_fraction", "nan"), ("block", "inf")])  # fmt: skip
def test_out_of_range_split_options_are_one_line(tmp_path, capsys, option, value):
    scenes = region(tmp_path)
    capsys.readouterr()
    assert main(fit_args(scenes, tmp_path / "run", f"--data.{option}", value)) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("roadseg: error: ") and f"data.{option}" in err and "\n" not in err


def test_width_by_matches_numbers_in_a_column_with_nulls(tmp_path):
    """lanes 2.0 (a numeric column with NULLs) is the table's "2"."""
    import geopandas as gpd

    from roadseg.labels import Widths

    frame = gpd.GeoDataFrame({"lanes": [1.0, 2.0, np.nan]}, geometry=[None] * 3)
    widths = Widths.parse(5.0, by="lanes=1:4,2:7").of(frame, "roads.gpkg")
    assert widths.tolist() == [4.0, 7.0, 5.0]


def test_ground_beside_the_aoi_is_not_labelled_along_their_shared_edge(tmp_path):
    """An AOI ending exactly on a block's edge meets that block in a line, not an area:
    the block beyond it has no labelled ground (it was burnt a row of background)."""
    from roadseg.labels import VectorLabels, Widths

    aoi = box(X0, Y0 - H * RES, X0 + 64, Y0)  # exactly the first column of 128 px blocks
    data = SceneData(region(tmp_path, aoi=aoi), block=64, val_fraction=0.0, seed=0)
    assert {int(b.window.col_off) for b in data.train} == {0} and len(data.train) == 3
    with rasterio.open(tmp_path / "scene.tif") as src:
        labels = VectorLabels(tmp_path / "roads.gpkg", src, widths=Widths(6.0),
                              aoi=tmp_path / "aoi.gpkg")  # fmt: skip
        assert (labels.window(Window(128, 0, 128, 128)) == IGNORE).all()
        assert (labels.window(Window(128, 0, 128, 128), (16, 16)) == IGNORE).all()


def test_a_resumed_scene_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Windows are drawn by seed, random states are checkpointed: 1 epoch + 1 resumed is
    2 straight, weight for weight (one learning-rate schedule of 2 epochs for all: a run
    stopped after its first epoch, as if killed)."""
    scenes = region(tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    two = ["--model.schedule_epochs", "2"]

    def fit(*args):  # a fresh process each, as runs are
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "roadseg", *fit_args(*args)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]

    fit(scenes, straight, *two, "--trainer.max_epochs", "2")
    fit(scenes, resumed, *two)
    fit(scenes, resumed, *two, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=False)
            for r in (straight, resumed))  # fmt: skip
    # last.ckpt is the last epoch's, improved or not (Lightning 2.6 kept the best epoch's)
    assert a["global_step"] == b["global_step"] == 4
    a, b = a["state_dict"], b["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
