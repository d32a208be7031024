import numpy as np
import torch

from roadseg.dataset import RandomWindowDataset, SeededSampler, TileDataset
from roadseg.index import scan
from roadseg.patches import patch_labels
from tests.conftest import make_cil_dataset, write_raster


def test_training_windows_are_a_function_of_the_seed(cil_root):
    frame = scan(cil_root).query("split == 'train'")
    dataset = RandomWindowDataset(frame, crop_size=32, augment="full")
    a, b, c = dataset[(2, 11)], dataset[(2, 11)], dataset[(2, 12)]
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (1, 32, 32)
    assert a["image"].dtype == torch.float32 and set(a["mask"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_cached_and_window_reads_give_the_same_samples(cil_root):
    frame = scan(cil_root).query("split == 'train'")
    cached = RandomWindowDataset(frame, crop_size=40, augment="d4", cache=True)
    direct = RandomWindowDataset(frame, crop_size=40, augment="d4", cache=False)
    for key in [(0, 1), (3, 99), (5, 7)]:
        assert torch.equal(cached[key]["image"], direct[key]["image"])
        assert torch.equal(cached[key]["mask"], direct[key]["mask"])


def test_window_is_read_from_a_large_geotiff_without_the_rest(tmp_path):
    size = 3000
    image = np.zeros((3, size, size), np.uint8)
    image[:, :, 1500:] = 200
    write_raster(
        tmp_path / "scene" / "images" / "scene_1.tif",
        image,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    write_raster(
        tmp_path / "scene" / "groundtruth" / "scene_1.tif",
        (image[0] > 0).astype(np.uint8) * 255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    frame = scan(tmp_path / "scene")
    dataset = RandomWindowDataset(frame, crop_size=128, augment="none")
    dataset.reader.cache_max_pixels = 2048 * 2048  # this scene counts as large: windows only
    sample = dataset[(0, 5)]
    assert sample["image"].shape == (3, 128, 128)
    np.testing.assert_array_equal((sample["image"][0] > 0).numpy(), sample["mask"][0].numpy() > 0)
    assert dataset.reader._cache == {}


def test_small_tiles_are_padded_to_the_crop(tmp_path):
    root = make_cil_dataset(tmp_path / "small", n_train=1, n_test=0, size=24)
    sample = RandomWindowDataset(scan(root), crop_size=32, augment="none")[(0, 0)]
    assert sample["image"].shape == (3, 32, 32)


def test_evaluation_tiles_carry_the_competition_patch_labels(tmp_path):
    root = make_cil_dataset(tmp_path / "grey", n_train=1, n_test=0, size=32)
    grey = np.zeros((32, 32), np.uint8)
    grey[:, :16] = 80  # 80/255 = 0.31 > 0.25 as grey, but not road when binarised at 127
    write_raster(root / "training" / "groundtruth" / "satimage_1.png", grey)
    sample = TileDataset(scan(root))[0]
    assert sample["mask"].sum() == 0
    np.testing.assert_array_equal(sample["patches"][0].numpy(), patch_labels(grey / 255.0))
    np.testing.assert_array_equal(sample["patches"][0].numpy(), [[1, 0], [1, 0]])


def test_sampler_is_repeatable_per_epoch_and_covers_tiles():
    sampler = SeededSampler(5, samples_per_epoch=12, seed=3)
    first = list(sampler)
    assert len(first) == 12 and first == list(sampler)
    assert {i for i, _ in first} == set(range(5))
    sampler.set_epoch(1)
    assert list(sampler) != first
