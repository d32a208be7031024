"""One real scene in the encodings GIS users bring, each read as roadseg reads it and
compared with its 8-bit twin: the radiometry rule checks itself against the training
imagery; NaN, palettes, band order and alpha are read as what they mean."""

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

from roadseg.imagery import COMPETITION, RULE_TOLERANCE
from roadseg.reading import ReadOptions, SceneReader
from tests.conftest import write_raster

UTM = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}


@pytest.fixture(scope="module")
def rgb(shared_data) -> np.ndarray:
    """Two cil-2022 training tiles side by side (400 x 800, roads on them): the twin."""
    tiles = sorted((shared_data / "cil-2022" / "training" / "images").glob("*.png"))[:2]
    with rasterio.open(tiles[0]) as a, rasterio.open(tiles[1]) as b:
        return np.concatenate([a.read()[:3], b.read()[:3]], axis=2)


def mapped(path, read=None, imagery=COMPETITION):
    """(the whole scene as the network gets it, its valid pixels, the reader)."""
    with rasterio.open(path) as src:
        reader = SceneReader(src, imagery, read)
        image, valid = reader.read(Window(0, 0, src.width, src.height))
    return image, valid, reader


def pooled(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.percentile(image[:, valid], (2, 98))


def test_offset_raw_counts_are_not_divided_as_14_bit_but_stretched(rgb, tmp_path):
    twin, _, _ = mapped(write_raster(tmp_path / "rgb8.tif", rgb, **UTM))
    counts = rgb.astype(np.uint16) * 40 + 1000  # 0..255 -> 1,000..11,200
    image, valid, reader = mapped(write_raster(tmp_path / "counts.tif", counts, **UTM))
    how = reader.radiometry.how
    assert "do not fill 14 bits as imagery does" in how and "stretched" in how
    assert "they would map to 0.18..0.65, the model saw 0.14..0.95" in how  # 2,920..10,720
    # before: divided by 16383, 2-98% at 0.18..0.65; now the model's 0.137..0.949
    np.testing.assert_allclose(pooled(image, valid), COMPETITION.pooled, atol=0.005)
    # the stretch moves this tile's own 0.188..0.953 onto the training imagery's: a gain,
    # not the lost top third of the range
    assert np.abs(image - twin).mean() < 0.03 and np.abs(image - twin).max() < 0.06
    assert reader.warning is None


@pytest.mark.parametrize(
    ("name", "encode", "full"),
    [
        ("12-bit", lambda x, noise: (x.astype(np.uint16) * 16 + noise).astype(np.uint16), 4095),
        ("16-bit", lambda x, noise: x.astype(np.uint16) * 257, 65535),
    ],
)
def test_integers_filling_their_bit_depth_are_still_divided_bit_for_bit(
    rgb, tmp_path, name, encode, full
):
    noise = np.random.default_rng(0).integers(0, 16, rgb.shape)
    raw = encode(rgb, noise)
    image, _, reader = mapped(write_raster(tmp_path / "s.tif", raw, **UTM))
    assert f"divided by {full}, as 8-bit by 255" in reader.radiometry.how
    # what roadseg computed before the check: raw * (1 / full), clipped
    before = np.clip(raw.astype(np.float32) * np.float32(1 / full), 0, 1)
    np.testing.assert_array_equal(image, before)
    twin = rgb.astype(np.float32) / 255
    assert np.abs(image - twin).max() < 16 / 4095  # the 12-bit scene's extra precision


def test_an_explicit_range_is_kept_and_warned_about_when_far_from_the_training_imagery(
    rgb, tmp_path
):
    counts = write_raster(tmp_path / "counts.tif", rgb.astype(np.uint16) * 40 + 1000, **UTM)
    twin = rgb.astype(np.float32) / 255
    right, _, reader = mapped(counts, ReadOptions(input_range=(1000.0, 11200.0)))
    np.testing.assert_allclose(right, twin, atol=1e-6)  # the user's range, exactly
    assert reader.warning is None
    full, valid, reader = mapped(counts, ReadOptions(input_range="none"))
    np.testing.assert_allclose(full, counts_over(rgb, 65535), atol=1e-6)  # kept as given
    assert "--input-range none maps the scene's 2-98% far from the training imagery's" in (
        reader.warning
    )
    assert "they would map to 0.04..0.16, the model saw 0.14..0.95" in reader.warning
    assert np.abs(pooled(full, valid) - COMPETITION.pooled).max() > RULE_TOLERANCE


def counts_over(rgb: np.ndarray, full: float) -> np.ndarray:
    return (rgb.astype(np.float32) * 40 + 1000) / full


def test_float_scenes_are_stretched_alike_and_nan_is_no_data_without_a_tag(rgb, tmp_path):
    unit = rgb.astype(np.float32) / 255
    holes = np.zeros(rgb.shape[1:], bool)
    holes[100:180, 200:300] = True
    holes[300:, 700:] = True
    images = {}
    for name, data, tag in [
        ("float01", unit, {}),
        ("reflectance10000", unit * 10000, {}),
        ("reflectance03", unit * np.float32(0.3), {}),
        ("nan", np.where(holes, np.nan, unit).astype(np.float32), {}),
        ("nan-tagged", np.where(holes, np.nan, unit).astype(np.float32), {"nodata": np.nan}),
        ("inf", np.where(holes, np.inf, unit).astype(np.float32), {}),
    ]:
        image, valid, reader = mapped(write_raster(tmp_path / f"{name}.tif", data, **UTM, **tag))
        assert "stretched onto the model's training imagery's" in reader.radiometry.how
        assert reader.warning is None
        np.testing.assert_array_equal(valid, ~holes if name.startswith(("nan", "inf")) else True)
        # no data is filled with a nearby valid pixel's value: finite, as the ground beside
        assert np.isfinite(image).all()
        if not valid.all():
            beside = image[:, 136:145, 192:200].reshape(3, -1)  # valid, left of the hole
            assert (beside == image[:, 140, 201][:, None]).all(axis=0).any()
        images[name] = image
    # one stretch whatever the scale or the marking of the holes: the same image
    for a, b in [("reflectance10000", "float01"), ("reflectance03", "float01"),
                 ("nan-tagged", "nan"), ("inf", "nan")]:  # fmt: skip
        np.testing.assert_allclose(images[a], images[b], atol=1e-5)
    # and the 8-bit twin's, up to the gain that moves this tile's 2-98% onto the model's
    for name in ("float01", "nan"):
        assert np.abs(images[name] - unit)[:, ~holes].mean() < 0.03


def palette_twin(rgb: np.ndarray) -> tuple[np.ndarray, dict]:
    """The scene quantized to 256 colours: (indices ``(1, H, W)``, colour table)."""
    quantized = Image.fromarray(rgb.transpose(1, 2, 0)).quantize(colors=256)
    table = np.asarray(quantized.getpalette(), np.uint8).reshape(-1, 3)
    colormap = {i: (*map(int, table[i]), 255) for i in range(len(table))}
    return np.asarray(quantized)[None], colormap


@pytest.mark.parametrize("metres", [0.5, 1.0])
def test_a_palette_raster_is_read_through_its_colour_table(rgb, tmp_path, metres):
    indices, colormap = palette_twin(rgb)
    georef = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, metres, metres)}
    path = write_raster(tmp_path / "palette.tif", indices, **georef)
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, colormap)
    lut = np.array([colormap[i][:3] for i in range(len(colormap))], np.uint8).T
    twin = write_raster(tmp_path / "rgb.tif", lut[:, indices[0]], **georef)
    expected, _, _ = mapped(twin)
    image, valid, reader = mapped(path)
    assert "band 1 read through its colour table as R,G,B" in reader.lines()
    assert reader.radiometry.how == "8-bit, divided by 255"
    assert valid.all()
    if metres == 0.5:
        np.testing.assert_array_equal(image, expected)
    else:  # resampled x2: bicubic here, GDAL's cubic for the RGB twin
        assert image.shape == expected.shape == (3, 800, 1600)
        assert np.abs(image - expected).mean() < 0.01


def test_bgr_with_band_interpretation_and_alpha_map_as_the_rgb_twin(rgb, tmp_path):
    twin, _, _ = mapped(write_raster(tmp_path / "rgb.tif", rgb, **UTM))
    alpha = np.full((1, *rgb.shape[1:]), 255, np.uint8)
    alpha[0, 50:150, 300:500] = 0
    path = write_raster(tmp_path / "bgra.tif", np.concatenate([rgb[::-1], alpha]), **UTM)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha]
    image, valid, reader = mapped(path)
    assert reader.bands == (3, 2, 1)
    np.testing.assert_array_equal(valid, alpha[0] > 0)
    np.testing.assert_array_equal(image[:, valid], twin[:, valid])  # no data: nearest filled


def test_no_data_is_filled_with_the_nearest_ground_not_black():
    """The network sees the ground go on at a nodata border (a reprojected scene's wedges),
    as at a raster's edge, instead of a black wall: each pixel off the valid mask takes the
    nearest valid pixel's value, on the model's grid when the scene is resampled."""
    from roadseg.reading import fill_nodata

    image = np.arange(3 * 6 * 8, dtype=np.float32).reshape(3, 6, 8) / 200
    valid = np.ones((6, 8), bool)
    assert fill_nodata(image, valid) is image  # nothing to fill: the same array
    assert fill_nodata(image, ~valid) is image  # nothing to fill from
    valid[:, 5:] = False  # a wedge of no data on the right
    filled = fill_nodata(image, valid)
    np.testing.assert_array_equal(filled[:, :, :5], image[:, :, :5])
    for col in (5, 6, 7):
        np.testing.assert_array_equal(filled[:, :, col], image[:, :, 4])
    big = np.repeat(np.repeat(image, 2, axis=1), 2, axis=2)  # the image at twice the scene's scale
    filled = fill_nodata(big, valid)
    np.testing.assert_array_equal(filled[:, :, :10], big[:, :, :10])
    np.testing.assert_array_equal(filled[:, :, 15], big[:, :, 9])


def test_the_fill_copies_no_pixel_the_resampling_spoiled():
    """A resampled float scene's NaN spreads (cubic) into pixels beside a hole, read as 0:
    those are no ground to fill the hole with (break-test: holes of resampled NaN scenes
    were filled with 0, the black wall the fill removes)."""
    from roadseg.reading import fill_nodata

    image = np.arange(3 * 6 * 8, dtype=np.float32).reshape(3, 6, 8) / 200
    valid = np.ones((6, 8), bool)
    valid[:, 6:] = False
    usable = np.ones((6, 8), bool)
    usable[:, 5] = False  # spoiled by the resampling: valid, not to be copied
    filled = fill_nodata(image, valid, usable)
    np.testing.assert_array_equal(filled[:, :, :5], image[:, :, :5])
    for col in (5, 6, 7):
        np.testing.assert_array_equal(filled[:, :, col], image[:, :, 4])
