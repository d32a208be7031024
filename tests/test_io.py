import numpy as np
import pytest
from rasterio.windows import Window

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path, read_image, read_mask, read_mask_grey, write_png
from tests.conftest import write_raster


def test_rgba_becomes_rgb_in_unit_range(tmp_path):
    pixels = np.stack([np.full((4, 5), v, np.uint8) for v in (0, 51, 255, 7)])
    image = read_image(write_raster(tmp_path / "a.png", pixels))
    assert image.shape == (3, 4, 5) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, 0, 0], [0.0, 0.2, 1.0])


def test_grey_image_is_repeated_to_three_channels(tmp_path):
    image = read_image(write_raster(tmp_path / "g.png", np.full((3, 3), 102, np.uint8)))
    np.testing.assert_allclose(image[:, 1, 1], [0.4, 0.4, 0.4])


def test_16bit_image_scales_by_its_range(tmp_path):
    pixels = np.full((3, 2, 2), 65535, np.uint16)
    pixels[0] = 0
    image = read_image(write_raster(tmp_path / "w.tif", pixels))
    np.testing.assert_allclose(image[:, 0, 0], [0.0, 1.0, 1.0])


@pytest.mark.parametrize("bands", [2, 5])
def test_unsupported_band_counts_are_refused_naming_the_file(tmp_path, bands):
    path = write_raster(tmp_path / "b.tif", np.zeros((bands, 4, 4), np.uint8))
    with pytest.raises(RoadsegError, match=rf"b\.tif: image has {bands} bands"):
        read_image(path)


def test_float_image_outside_unit_range_is_refused(tmp_path):
    path = write_raster(tmp_path / "f.tif", np.full((3, 2, 2), 300.0, np.float32))
    with pytest.raises(RoadsegError, match="expects floats in"):
        read_image(path)


def test_mask_is_road_above_127(tmp_path):
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    path = write_raster(tmp_path / "m.png", grey)
    np.testing.assert_array_equal(read_mask(path)[0], [[0, 0, 1, 1]])
    np.testing.assert_allclose(read_mask_grey(path), grey / 255.0, atol=1e-7)


def test_window_read_matches_the_slice_of_the_whole(tmp_path):
    pixels = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    path = write_raster(tmp_path / "s.tif", pixels)
    whole = read_image(path)
    part = read_image(path, Window(col_off=7, row_off=3, width=10, height=5))
    np.testing.assert_array_equal(part, whole[:, 3:8, 7:17])


def test_not_an_image_and_missing_file(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_text("this is not a png")
    with pytest.raises(RoadsegError, match="junk.png: not a readable raster"):
        read_image(junk)
    with pytest.raises(RoadsegError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_truncated_png_is_reported(tmp_path):
    good = write_raster(
        tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    )
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(RoadsegError, match="t.png"):
        read_image(good)


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a")
    with atomic_path(tmp_path / "new.csv") as tmp:
        tmp.write_text("a")
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    (tmp_path / "new.csv").chmod(0o640)  # a file replaced keeps its own permissions
    with atomic_path(tmp_path / "new.csv") as tmp:
        tmp.write_text("b")
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o640


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_write_png_round_trip(tmp_path):
    mask = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    write_png(tmp_path / "p.png", mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
    np.testing.assert_allclose(read_mask_grey(tmp_path / "p.png") * 255, mask, atol=1e-4)


def test_a_full_disk_names_the_output_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    """An OSError without a file name (the disk fills up while a CSV is written) is said in
    one line naming the output; the earlier file stays and no temporary file is left."""
    import csv
    import errno

    from roadseg.cli import main

    masks = tmp_path / "masks"
    for n in (1, 2, 3):
        write_raster(masks / f"pred_{n}.png", np.full((32, 32), 255 * (n % 2), np.uint8))
    out = tmp_path / "sub.csv"
    out.write_text("an earlier submission\n")
    real_writer = csv.writer

    class FillingDisk:
        def __init__(self, *args, **kwargs):
            self.writer, self.rows = real_writer(*args, **kwargs), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.writer.writerow(row)

    monkeypatch.setattr(csv, "writer", FillingDisk)
    assert main(["masks-to-submission", str(masks), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"roadseg: error: {out}: cannot be written (No space left on device): free some space "
        "or write elsewhere; an earlier file of this name is unchanged"
    )
    assert out.read_text() == "an earlier submission\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "sub.csv"]


def test_the_block_cache_of_scene_reads_holds_megabytes_not_bytes():
    """rasterio gives GDAL_CACHEMAX to GDALSetCacheMax, in bytes: a cache of 64 (meant as
    MB) made every decimated read of a scene decompress its blocks again (300x slower)."""
    import rasterio
    from rasterio._env import get_gdal_config

    from roadseg.parts import GDAL_CACHE_BYTES

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        assert int(get_gdal_config("GDAL_CACHEMAX")) >= 32 * 1024 * 1024
