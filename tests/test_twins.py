"""Twin scenes (#32): the same ground, encoded, projected, resampled, chunked or scheduled
another way, gives the same roads and the same lengths. The twin is a mosaic of four real
cil-2022 tiles; the model a quick one trained on cil-2022 (its roads are real roads, if
rough). Each variant's thresholds, and why, are in roadseg/twins.py."""

import random

import pytest

from roadseg.cli import main
from roadseg.options import PredictOptions
from roadseg.scenes import predict_scene_run
from roadseg.twins import (
    HOLE,
    VARIANTS,
    around_hole,
    compare,
    encoded,
    label_twin,
    masked,
    plain_twin,
    reprojected,
    resampled,
    road_length,
    then,
    warped_prediction,
)

THRESHOLD = 0.5


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory):
    """configs/quick.yaml trained for 96 steps on cil-2022: it finds roads, roughly."""
    run = tmp_path_factory.mktemp("twin-model")
    args = ["fit", "--config", "configs/quick.yaml", "--data.root", str(shared_data / "cil-2022"),
            "--trainer.max_steps", "96", "--trainer.max_epochs", "12",
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert main(args) == 0
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def twin(shared_data, model, tmp_path_factory):
    """(the plain twin, its prediction, the options)."""
    folder = tmp_path_factory.mktemp("twins")
    images = sorted((shared_data / "cil-2022" / "training" / "images").glob("*.png"))[:4]
    scene = plain_twin(images, folder / "twin.tif")
    options = PredictOptions(ckpt=(str(model),), backend="torch", quiet=True,
                             pixel_threshold=THRESHOLD)  # fmt: skip
    pred = folder / "twin-pred.tif"
    predict_scene_run(options, scene, pred, output="prob8")
    return scene, pred, options


def check(twin, variant_build, tmp_path, *, iou, length, options=None, holes=False):
    scene, twin_pred, opts = twin
    built = variant_build(scene, tmp_path / "variant.tif")
    pred = tmp_path / "variant-pred.tif"
    predict_scene_run(opts, built, pred, output="prob8", **(options or {}))
    reference = masked(twin_pred, HOLE, tmp_path / "twin-holed.tif") if holes else twin_pred
    match = compare(reference, pred, scene, THRESHOLD, exclude=around_hole() if holes else None)
    assert match.twin_length > 200  # the twin has roads to lose
    assert match.iou >= iou, f"roads IoU {match.iou:.3f} < {iou}"
    assert abs(match.ratio - 1) <= length, f"length ratio {match.ratio:.3f}"
    return match


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_a_variant_gives_the_twins_roads_and_lengths(twin, variant, tmp_path):
    check(twin, variant.build, tmp_path, iou=variant.iou, length=variant.length,
          options=variant.options, holes="hole" in variant.name)  # fmt: skip


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:4326", "EPSG:2249", "EPSG:32618"])
def test_the_same_roads_warped_into_another_crs_have_the_same_length(shared_data, tmp_path, crs):
    """Ground units alone: the twin's true roads (its tiles' masks) warped into Web
    Mercator (read 1.48x long before), geographic degrees, US survey feet and a
    neighbouring UTM zone measure the same ground length within 1.5% (the warp moves
    line ends by a pixel)."""
    masks = sorted((shared_data / "cil-2022" / "training" / "groundtruth").glob("*.png"))[:4]
    roads = label_twin(masks, tmp_path / "roads.tif")
    like = reprojected(crs)(roads, tmp_path / "like.tif")
    warped = warped_prediction(roads, like, tmp_path / "warped.tif")
    assert road_length(warped, 127) == pytest.approx(road_length(roads, 127), rel=0.015)


ENCODINGS = [("16-bit counts", encoded(40, 1000, "uint16")), ("float 0..1", encoded(1 / 255, 0, "float32")),
             ("12-bit", encoded(16, 0, "uint16")), ("8-bit", encoded(1, 0, "uint8"))]  # fmt: skip
GRIDS = [("Web Mercator", reprojected("EPSG:3857")), ("EPSG:4326", reprojected("EPSG:4326")),
         ("0.125 m", resampled(0.125)), ("US feet", reprojected("EPSG:2249"))]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combinations_of_encoding_grid_and_chunks(twin, tmp_path, seed):
    """Seeded draws of an encoding, then a grid, then a chunk size: interactions a fixed
    list would miss. Thresholds: below the loosest part's (a warp), as each part adds
    its own small differences."""
    rng = random.Random(seed)
    (_, encode), (_, grid) = rng.choice(ENCODINGS), rng.choice(GRIDS)
    chunk = rng.choice([256, 512, 2048])
    check(twin, then(encode, grid), tmp_path, iou=0.7, length=0.25, options={"chunk": chunk})
