"""Real tiles as the scenes GIS users bring: other bit depths, band orders, 1 m pixels,
mosaics with missing tiles; and training with a source of another resolution."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from roadseg.checkpoints import read_checkpoint
from roadseg.cli import main

UTM = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}


def geotiff(path, data, **profile):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, **profile) as dst:  # fmt: skip
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def massachusetts_1m(shared_data, tmp_path_factory):
    """Five Massachusetts tiles as GeoTIFFs with their real 1 m pixels."""
    root = tmp_path_factory.mktemp("massachusetts-1m")
    for kind in ("images", "groundtruth"):
        (root / kind).mkdir()
        for k, png in enumerate(
            sorted((shared_data / "massachusetts-400" / kind).glob("*.png"))[:5]
        ):
            with rasterio.open(png) as src:
                data = src.read()
            geotiff(root / kind / f"{png.stem}.tif", data, crs="EPSG:26986",
                    transform=from_origin(230_000 + 400 * k, 905_000, 1.0, 1.0))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def mixed_checkpoint(shared_data, tmp_path_factory):
    """A quick model trained on cil-2022 with the Massachusetts tiles (1 m) as extra data."""
    run = tmp_path_factory.mktemp("mixed")
    args = ["fit", "--config", "configs/quick.yaml", "--data.root", str(shared_data / "cil-2022"),
            "--data.extra_roots", f"[{shared_data / 'massachusetts-400'}]",
            "--data.resolutions", f"{{{shared_data / 'massachusetts-400'}: 1.0}}",
            "--trainer.max_steps", "2", "--data.samples_per_epoch", "16",
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert main(args) == 0
    return run / "checkpoints" / "best.ckpt"


def test_training_resamples_a_1m_source_and_the_checkpoint_records_its_imagery(mixed_checkpoint):
    imagery = read_checkpoint(mixed_checkpoint)["roadseg_imagery"]
    assert imagery["resolution"] == 0.5 and imagery["dtype"] == "uint8"
    low, high = imagery["pooled"]
    assert 0.0 < low < 0.25 and 0.75 < high <= 1.0  # ordinary aerial photographs


def test_1m_geotiffs_are_resampled_to_the_model_with_no_flag(
    mixed_checkpoint, massachusetts_1m, tmp_path, capsys
):
    out = tmp_path / "mass.csv"
    args = [
        "evaluate",
        "--ckpt",
        str(mixed_checkpoint),
        "--data",
        str(massachusetts_1m),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1 m/px (EPSG:26986, metre), resampled x2 to the model's 0.5 m/px" in text
    assert "pixel road F1" in text and "road patch F1" in text
    assert len(out.read_text().splitlines()) == 1 + 5 * 625  # scored on their own 400 px grid


def test_one_real_scene_as_8bit_12bit_and_bgr_gives_one_prediction(
    mixed_checkpoint, shared_data, tmp_path, capsys
):
    tiles = sorted((shared_data / "cil-2022" / "training" / "images").glob("*.png"))[:2]
    with rasterio.open(tiles[0]) as a, rasterio.open(tiles[1]) as b:
        rgb = np.concatenate([a.read()[:3], b.read()[:3]], axis=2)  # 400 x 800
    noise = np.random.default_rng(0).integers(0, 16, rgb.shape)
    versions = {
        "rgb8": (rgb, []),
        "rgb12": ((rgb.astype(np.uint16) * 16 + noise).astype(np.uint16), []),
        "bgr8": (rgb[::-1].copy(), ["--bands", "3,2,1"]),
    }
    probs = {}
    for name, (data, flags) in versions.items():
        scene = geotiff(tmp_path / f"{name}.tif", data, **UTM)
        out = tmp_path / f"{name}-prob.tif"
        assert (
            main(
                [
                    "predict",
                    str(scene),
                    "--ckpt",
                    str(mixed_checkpoint),
                    "--out",
                    str(out),
                    "--quiet",
                    *flags,
                ]
            )
            == 0
        )
        with rasterio.open(out) as src:
            probs[name] = src.read(1)
    text = capsys.readouterr().out
    assert "uint16 of 12-bit values filling their range" in text and "divided by 4095" in text
    assert "bands 3,2,1 read as R,G,B (--bands)" in text
    np.testing.assert_array_equal(probs["bgr8"], probs["rgb8"])
    diff = np.abs(probs["rgb12"] - probs["rgb8"])
    assert diff.mean() < 0.01 and np.percentile(diff, 99) < 0.05  # only the 12-bit detail differs


def test_a_map_mosaic_marks_its_missing_tiles_and_predict_keeps_them_nodata(
    mixed_checkpoint, shared_data, tmp_path
):
    from roadseg.maps import write_maps

    table = write_maps([shared_data / "cil-2022"], tmp_path / "maps")
    mosaic = tmp_path / "maps" / "map_0_image.tif"
    with rasterio.open(mosaic) as src:
        valid = src.dataset_mask() > 0
        places = table[table["map"] == 0]
        assert valid.sum() == len(places) * 400 * 400  # every missing place is nodata
        missing = np.argwhere(~valid[::400, ::400])[0] * 400  # the corner of one
        crop = rasterio.windows.Window(int(missing[1]) - 200, int(missing[0]) - 200, 800, 800)
        crop = crop.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
        data, mask = src.read(window=crop), src.dataset_mask(window=crop)
    part = tmp_path / "part.tif"
    with rasterio.open(part, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(data)
        dst.write_mask(mask)
    out = tmp_path / "part-mask.tif"
    assert (
        main(
            [
                "predict",
                str(part),
                "--ckpt",
                str(mixed_checkpoint),
                "--out",
                str(out),
                "--output",
                "mask",
                "--quiet",
            ]
        )
        == 0
    )
    with rasterio.open(out) as src:
        predicted = src.read(1)
    assert ((predicted == 255) == (mask == 0)).all() and (mask == 0).any()
