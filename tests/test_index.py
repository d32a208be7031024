import numpy as np
import pytest

from roadseg.errors import RoadsegError
from roadseg.index import scan, scan_many, split_train_val, tile_id
from tests.conftest import make_cil_dataset, road_tile, write_raster


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("satimage_144.png", 144),
        ("satImage_007.png", 7),
        ("test_10.png", 10),
        ("img-1002.png", 1002),
        ("v2_tile_3_0045.tif", 45),
    ],
)
def test_tile_id_is_the_last_run_of_digits_in_the_file_name(name, expected):
    assert tile_id(f"/data/cil-2022/run7/{name}") == expected


def test_tile_id_needs_digits():
    with pytest.raises(RoadsegError, match="no digits"):
        tile_id("data/2022/tile.png")


def test_scan_cil_layout(cil_root):
    frame = scan(cil_root)
    assert frame.groupby("split").size().to_dict() == {"test": 2, "train": 6}
    train = frame[frame.split == "train"]
    assert train.tile_id.tolist() == [1, 2, 3, 4, 5, 6]
    assert train["mask"].notna().all() and frame[frame.split == "test"]["mask"].isna().all()
    assert set(frame.height) == {64} and set(frame.source) == {"cil"}


def test_scan_generic_and_plain_folders(tmp_path):
    for i in (3, 9):
        image, mask = road_tile(32, i)
        write_raster(tmp_path / "extra" / "images" / f"img-{i}.png", image[:3])
        write_raster(tmp_path / "extra" / "groundtruth" / f"img-{i}.png", mask)
    frame = scan(tmp_path / "extra")
    assert frame.tile_id.tolist() == [3, 9] and set(frame.split) == {"train"}
    plain = scan(tmp_path / "extra" / "images")
    assert plain.tile_id.tolist() == [3, 9] and plain["mask"].isna().all()


def test_image_without_mask(cil_root):
    (cil_root / "training" / "groundtruth" / "satimage_2.png").unlink()
    with pytest.raises(RoadsegError, match=r"satimage_2.png: image without a mask"):
        scan(cil_root)


def test_mask_without_image(cil_root):
    (cil_root / "training" / "images" / "satimage_3.png").unlink()
    with pytest.raises(RoadsegError, match=r"satimage_3.png: mask without an image"):
        scan(cil_root)


def test_image_and_mask_of_different_sizes(cil_root):
    write_raster(
        cil_root / "training" / "groundtruth" / "satimage_4.png", np.zeros((32, 64), np.uint8)
    )
    with pytest.raises(RoadsegError, match=r"satimage_4.png: mask is 64x32 but its image is 64x64"):
        scan(cil_root)


def test_two_tiles_with_the_same_id(cil_root):
    write_raster(cil_root / "test" / "images" / "satimage_0144.png", road_tile(64, 0)[0])
    with pytest.raises(RoadsegError, match="share the id 144"):
        scan(cil_root)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(RoadsegError, match="dataset folder not found"):
        scan(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RoadsegError, match="no images"):
        scan(tmp_path / "empty")


def test_validation_split_is_seeded_and_extras_only_train(tmp_path):
    main = make_cil_dataset(tmp_path / "main", n_train=10)
    extra = make_cil_dataset(tmp_path / "extra", n_train=4, n_test=0)
    frame = scan_many([main, extra])
    a = split_train_val(frame, val_fraction=0.3, seed=1)
    b = split_train_val(frame, val_fraction=0.3, seed=1)
    c = split_train_val(frame, val_fraction=0.3, seed=2)
    val = a[a.stage == "val"]
    assert len(val) == 3 and set(val.source) == {"main"}
    assert a.stage.tolist() == b.stage.tolist() != c.stage.tolist()
    assert set(a[a.split == "test"].stage) == {"test"}


def test_real_datasets_are_indexed(shared_data):
    counts = {
        name: scan(shared_data / name).groupby("split").size().to_dict()
        for name in ("cil-2022", "cil-2020", "massachusetts-400")
    }
    assert counts == {
        "cil-2022": {"test": 144, "train": 120},
        "cil-2020": {"test": 94, "train": 80},
        "massachusetts-400": {"train": 100},
    }
    cil2020 = scan(shared_data / "cil-2020")
    assert set(cil2020[cil2020.split == "test"].height) == {608}
