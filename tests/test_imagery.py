"""Scenes unlike the training tiles: bit depth, band order, ground resolution, CRS, nodata."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from roadseg.errors import RoadsegError
from roadseg.imagery import COMPETITION, Imagery, imagery_of, plan_radiometry
from roadseg.io import image_to_rgb
from roadseg.predict import Predictor
from roadseg.reading import ReadOptions, SceneReader, ground_resolution, pick_bands
from tests.conftest import write_raster
from tests.test_predict import FirstChannel

UTM = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """8-bit RGB that varies slowly (resampling it up and down gives it back)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    bands = [0.5 + 0.4 * np.sin(3 * xx + 2 * yy + p) for p in phase]
    return (np.stack(bands) * 255).round().astype(np.uint8)


def predicted(path, tmp_path, read=None, imagery=COMPETITION, name="prob.tif", chunk=96):
    predictor = Predictor([FirstChannel()], window=128, overlap=32, progress=False, imagery=imagery)
    out = tmp_path / name
    predictor.predict_scene(path, out, chunk=chunk, read=read)
    with rasterio.open(out) as src:
        return src.read(1), src


def test_8bit_input_is_divided_by_255_bit_for_bit_as_before():
    raw = np.random.default_rng(0).integers(0, 256, (3, 20, 30)).astype(np.uint8)
    radiometry = plan_radiometry(np.uint8, None, COMPETITION, "auto", "x.tif")
    np.testing.assert_array_equal(radiometry.apply(raw), image_to_rgb(raw, "x.tif"))


def test_12bit_values_filling_their_range_are_read_as_the_8bit_scene(tmp_path):
    rgb = smooth_rgb(200, 240)
    noise = np.random.default_rng(1).integers(0, 16, rgb.shape)
    scene12 = write_raster(
        tmp_path / "s12.tif", (rgb.astype(np.uint16) * 16 + noise).astype(np.uint16), **UTM
    )
    scene8 = write_raster(tmp_path / "s8.tif", rgb, **UTM)
    p8, _ = predicted(scene8, tmp_path, name="p8.tif")
    p12, _ = predicted(scene12, tmp_path, name="p12.tif")
    np.testing.assert_allclose(p8, rgb[0] / 255, atol=1e-5)
    np.testing.assert_allclose(p12, p8, atol=5 / 255)  # the 12-bit scene's extra precision


def test_float_reflectance_is_stretched_onto_the_training_range(tmp_path):
    rgb = smooth_rgb(160, 160)
    reflectance = (rgb / 255 * 0.3).astype(np.float32)  # a dark product, 0..0.3
    path = write_raster(tmp_path / "refl.tif", reflectance, **UTM)
    prob, _ = predicted(path, tmp_path)
    low, high = np.percentile(reflectance, (2, 98))
    lo, hi = COMPETITION.pooled
    expected = np.clip((reflectance[0] - low) / (high - low) * (hi - lo) + lo, 0, 1)
    np.testing.assert_allclose(prob, expected, atol=2e-4)
    assert prob.max() > 0.8  # not the near-black image a division by the full range gives


def test_input_range_maps_the_given_values_and_none_the_full_range(tmp_path):
    raw = np.full((3, 64, 64), 1000, np.uint16)
    raw[0, :, 32:] = 3000
    path = write_raster(tmp_path / "s.tif", raw, **UTM)
    given, _ = predicted(path, tmp_path, ReadOptions(input_range=(1000.0, 3000.0)), name="a.tif")
    full, _ = predicted(path, tmp_path, ReadOptions(input_range="none"), name="b.tif")
    np.testing.assert_allclose(given[:, :20], 1e-4, atol=1e-4)  # the model clamps at 1e-4
    np.testing.assert_allclose(given[:, 44:], 1 - 1e-4, atol=1e-4)
    np.testing.assert_allclose(full[:, :20], 1000 / 65535, atol=1e-5)


def test_bands_pick_and_order_and_say_what_they_left_out(tmp_path):
    rgb = smooth_rgb(96, 96)
    bgr = write_raster(tmp_path / "bgr.tif", rgb[::-1].copy(), **UTM)
    rgb_path = write_raster(tmp_path / "rgb.tif", rgb, **UTM)
    a, _ = predicted(rgb_path, tmp_path, name="a.tif")
    b, _ = predicted(bgr, tmp_path, ReadOptions(bands=(3, 2, 1)), name="b.tif")
    np.testing.assert_array_equal(a, b)
    nir = write_raster(tmp_path / "rgbn.tif", np.concatenate([rgb, rgb[:1]]), **UTM)
    with rasterio.open(nir, "r+") as dst:  # GDAL takes a 4th band for alpha unless told
        dst.colorinterp = [
            ColorInterp.red,
            ColorInterp.green,
            ColorInterp.blue,
            ColorInterp.undefined,
        ]
    with rasterio.open(nir) as src:
        bands, notes = pick_bands(src, None)
        assert bands == (1, 2, 3) and any("band 4" in n and "left out" in n for n in notes)
        with pytest.raises(RoadsegError, match="band 5 asked for, the raster has 4"):
            pick_bands(src, (5, 2, 1))


def test_colour_interpretation_orders_the_bands_and_alpha_is_nodata(tmp_path):
    rgb = smooth_rgb(96, 96)
    alpha = np.full((1, 96, 96), 255, np.uint8)
    alpha[0, :30, :40] = 0
    path = tmp_path / "bgra.tif"
    write_raster(path, np.concatenate([rgb[::-1], alpha]), **UTM)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha]
    with rasterio.open(path) as src:
        bands, notes = pick_bands(src, None)
    assert bands == (3, 2, 1) and any("alpha" in n and "nodata" in n for n in notes)
    prob, _ = predicted(path, tmp_path)
    assert (prob[:30, :40] == -1).all()
    np.testing.assert_allclose(prob[40:, 50:], rgb[0, 40:, 50:] / 255, atol=1e-5)


def test_a_mosaic_mask_becomes_nodata_in_the_prediction(tmp_path):
    rgb = smooth_rgb(128, 128)
    path = write_raster(tmp_path / "mosaic.tif", rgb)
    with rasterio.open(path, "r+") as dst:
        valid = np.full((128, 128), 255, np.uint8)
        valid[64:, 64:] = 0  # a missing tile
        dst.write_mask(valid)
    prob, _ = predicted(path, tmp_path)
    assert (prob[64:, 64:] == -1).all() and (prob[:64] >= 0).all()


def test_ground_resolution_of_projected_geographic_and_plain_rasters(tmp_path):
    utm = write_raster(tmp_path / "utm.tif", smooth_rgb(8, 8), **UTM)
    feet = write_raster(tmp_path / "ft.tif", smooth_rgb(8, 8), crs="EPSG:2249",
                        transform=from_origin(700_000, 3_000_000, 1.0, 1.0))  # fmt: skip
    deg = write_raster(tmp_path / "deg.tif", smooth_rgb(8, 8), crs="EPSG:4326",
                       transform=from_origin(8.5, 47.4, 1e-5, 1e-5))  # fmt: skip
    plain = write_raster(tmp_path / "plain.png", smooth_rgb(8, 8))
    with (
        rasterio.open(utm) as a,
        rasterio.open(feet) as b,
        rasterio.open(deg) as c,
        rasterio.open(plain) as d,
    ):
        assert ground_resolution(a)[0] == pytest.approx(0.5)
        assert ground_resolution(b)[0] == pytest.approx(0.3048006, rel=1e-5)  # US survey foot
        # 1e-5 deg at 47.4 N: 0.754 m east-west, 1.112 m north-south; their geometric mean
        assert ground_resolution(c)[0] == pytest.approx(np.sqrt(0.7544 * 1.1116), rel=2e-3)
        assert ground_resolution(d)[0] is None


def test_a_coarser_scene_is_resampled_to_the_model_and_comes_back_on_its_own_grid(tmp_path, capsys):
    rgb = smooth_rgb(300, 260)
    one_metre = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 1.0, 1.0)}
    path = write_raster(tmp_path / "scene.tif", rgb, **one_metre)
    prob, out = predicted(path, tmp_path, chunk=512)
    assert out.shape == (300, 260) and out.transform == one_metre["transform"]
    np.testing.assert_allclose(prob, rgb[0] / 255, atol=0.01)  # smooth: up and down again
    assert "resampled x2 to the model's 0.5 m/px" in capsys.readouterr().out
    with rasterio.open(path) as src:
        reader = SceneReader(src, COMPETITION, None)
        image, valid = reader.read(rasterio.windows.Window(0, 0, 100, 50))
        assert image.shape == (3, 100, 200) and valid.shape == (50, 100)
        assert reader.chunk_side(2048) == 1024
        native = SceneReader(src, COMPETITION, ReadOptions(resolution="native"))
        assert native.factor == 1.0


def test_a_scene_far_from_the_training_imagery_is_warned_about(tmp_path, capsys):
    dark = np.full((3, 64, 64), 2, np.uint8)
    path = write_raster(tmp_path / "dark.tif", dark, **UTM)
    predicted(path, tmp_path)
    err = capsys.readouterr().err
    assert "warning" in err and "100% black" in err and "dark.tif" in err


def test_a_pattern_of_period_three_and_a_short_side_are_sampled_at_every_phase(tmp_path):
    """Half steps lock too (768 px read as 512 take 2 of every 3 phases), and so does a short
    side read at a whole step (a 70 px side read as 35): break-test cases."""
    from roadseg.reading import SceneReader, sample_pixels

    image = np.zeros((3, 768, 768), np.uint8)
    image[:, 1::3, :] = 120  # rows: 67% black
    path = write_raster(tmp_path / "thirds.tif", image, **UTM)
    with rasterio.open(path) as src:
        assert "67% black" in SceneReader(src, COMPETITION, None).warning
    stripes = np.zeros((3, 70, 1024), np.uint8)
    stripes[:, 1::2, :] = 120  # rows: 50% black
    path = write_raster(tmp_path / "short.tif", stripes, **UTM)
    with rasterio.open(path) as src:
        sample = sample_pixels(src, (1, 2, 3), 512)
    assert np.mean(sample[0] == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(("side", "period"), [(1024, 2), (2048, 2), (2048, 4)])
def test_a_regular_pattern_is_sampled_at_every_phase(tmp_path, side, period):
    """A scene 75% black in a regular pattern (one pixel of each period x period block
    lit) is said to be 75% black: a decimated read at a whole step (1,024 px read as 512)
    would see one phase only, all black or none."""
    from roadseg.reading import SceneReader

    image = np.zeros((3, side, side), np.uint8)
    image[:, 1::period, 1::period] = 120
    if period == 4:  # 1 of 16 lit would be 94% black: light 4 of 16, 75% black
        image[:, 1::2, 1::2] = 120
    path = write_raster(tmp_path / "pattern.tif", image, **UTM)
    with rasterio.open(path) as src:
        reader = SceneReader(src, COMPETITION, None)
    assert reader.warning is not None and "75% black" in reader.warning


def test_read_options_refuse_what_they_cannot_read():
    assert ReadOptions.parse("3,2,1", "0 4095", "1.0") == ReadOptions((3, 2, 1), (0.0, 4095.0), 1.0)
    assert ReadOptions.parse(None, None, None) == ReadOptions()
    for bands, rng, res, match in [
        ("3,2", None, None, "one band"), ("a,b,c", None, None, "1-based"),
        (None, "5 1", None, "HIGH"), (None, "bright", None, "auto, none"),
        (None, None, "-1", "positive"), (None, None, "fine", "auto, native"),
    ]:  # fmt: skip
        with pytest.raises(RoadsegError, match=match):
            ReadOptions.parse(bands, rng, res)


def test_checkpoints_without_a_record_get_the_competition_imagery():
    assert imagery_of({}) is COMPETITION and "not recorded" in COMPETITION.origin
    own = Imagery(low=(0.1,) * 3, high=(0.9,) * 3, pooled=(0.1, 0.9), resolution=1.0)
    assert imagery_of({"roadseg_imagery": own.to_dict()}) == own


def test_a_bit_depth_rule_whose_result_is_far_from_the_training_imagery_is_not_used():
    rgb = smooth_rgb(64, 64).reshape(3, -1)
    counts = rgb.astype(np.uint16) * 40 + 1000  # raw counts: 14 bits, the top third empty
    plan = plan_radiometry(np.uint16, counts, COMPETITION, "auto", "c.tif")
    assert plan.divide is None and "do not fill 14 bits as imagery does" in plan.how
    unit = plan.apply(counts[:, :, None])[:, :, 0]
    np.testing.assert_allclose(np.percentile(unit, (2, 98)), COMPETITION.pooled, atol=1e-3)
    # a checkpoint trained on that darker imagery takes the division as it is
    dim = Imagery(low=(0.1,) * 3, high=(0.6,) * 3, pooled=(0.12, 0.6))
    assert "divided by 16383" in plan_radiometry(np.uint16, counts, dim, "auto", "c.tif").how


def test_nan_without_a_nodata_tag_is_nodata_in_the_prediction(tmp_path):
    rgb = smooth_rgb(160, 160).astype(np.float32) / 255
    rgb[:, 20:60, 30:90] = np.nan
    rgb[1, 100:120, 100:120] = np.inf  # one band is enough
    holes = ~np.isfinite(rgb).all(axis=0)
    for metres in (0.5, 1.0):  # read as it is, and resampled (its holes found on its grid)
        georef = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, metres, metres)}
        path = write_raster(tmp_path / f"nan{metres}.tif", rgb, **georef)
        prob, _ = predicted(path, tmp_path, name=f"p{metres}.tif")
        assert (prob[holes] == -1).all() and (prob[~holes] >= 0).all()
        with rasterio.open(path) as src:
            reader = SceneReader(src, COMPETITION, None)
        assert reader.warning is None and "nan" not in reader.radiometry.how


def test_a_palette_png_is_read_through_its_colour_table_without_its_transparent_entries(
    tmp_path,
):
    indices = np.random.default_rng(0).integers(0, 4, (1, 48, 64)).astype(np.uint8)
    table = {0: (0, 0, 0, 0), 1: (200, 60, 40, 255), 2: (60, 200, 40, 255), 3: (9, 9, 9, 0)}
    path = write_raster(tmp_path / "palette.png", indices)
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, table)
    with rasterio.open(path) as src:
        reader = SceneReader(src, COMPETITION, ReadOptions(bands=(1,)))
        image, valid = reader.read(rasterio.windows.Window(0, 0, 64, 48))
    assert "band 1 read through its colour table as R,G,B" in reader.lines()
    assert not any("grey" in line for line in reader.lines())
    np.testing.assert_array_equal(valid, np.isin(indices[0], (1, 2)))
    lut = np.array([table[i][:3] for i in range(4)], np.float32).T / 255
    np.testing.assert_array_equal(image[:, valid], lut[:, indices[0][valid]])


@pytest.mark.parametrize(
    ("shape", "size"), [((90, 70), (150, 40)), ((257, 333), (100, 701)), ((64, 64), (64, 90))]
)
def test_maps_are_resized_as_pytorch_resizes_them_without_torch(shape, size):
    """Scenes at another resolution go back to their grid by numpy and scipy (the light
    install has no torch), as PyTorch's antialiased bilinear would: within 1e-4."""
    import torch
    import torch.nn.functional as F

    from roadseg.reading import resize_maps

    maps = np.random.default_rng(1).random((2, *shape), dtype=np.float32)
    ours = resize_maps(maps, *size)
    ref = F.interpolate(torch.from_numpy(maps)[None], size=size, mode="bilinear",
                        antialias=True, align_corners=False)[0].numpy()  # fmt: skip
    assert ours.shape == (2, *size) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4


def test_the_check_sees_a_dark_pattern_that_repeats_along_rows():
    """The check looks at a random share of the sample: columns black every 4 px in a
    1,024 px sample (75% black) are seen, where a stride of 4 would keep none of them."""
    from roadseg.imagery import check_mapped

    unit = np.random.default_rng(1).random((3, 1024, 1024), dtype=np.float32) * 0.5 + 0.3
    unit[:, :, np.arange(1024) % 4 != 0] = 0
    assert "75% black" in check_mapped(unit.reshape(3, -1), COMPETITION, "stripes.tif")


def test_a_nan_spreads_no_further_in_a_resized_map_than_in_pytorchs():
    import torch
    import torch.nn.functional as F

    from roadseg.reading import resize_maps

    maps = np.array([[[1.0, 0.5, np.nan]]], np.float32)
    ours = resize_maps(maps, 1, 7)
    ref = F.interpolate(torch.from_numpy(maps)[None], size=(1, 7), mode="bilinear",
                        antialias=True, align_corners=False)[0].numpy()  # fmt: skip
    assert not (np.isnan(ours) & ~np.isnan(ref)).any()  # NaN only where PyTorch's has it
    assert np.isnan(ours).any() and np.isfinite(ours[..., :3]).all()
