import numpy as np
import pytest
import torch

from roadseg.metrics import patch_labels_torch
from roadseg.patches import labels_to_mask, patch_grid, patch_labels, patch_means


def test_a_patch_is_road_only_above_a_quarter():
    mask = np.zeros((16, 48))
    mask[:4, 0:16] = 1  # 64/256 = 0.25 exactly: not above
    mask[:4, 16:32] = 1
    mask[4, 16] = 1  # 65/256: above
    mask[:, 32:48] = 0.3  # grey levels count by value: mean 0.3
    np.testing.assert_array_equal(patch_labels(mask), [[0, 1, 1]])


def test_edge_patches_average_the_pixels_they_have():
    mask = np.zeros((20, 18))
    mask[16:20, 0:16] = 1  # bottom strip: 4x16 patch, all road
    mask[0:16, 16:18] = 0.2  # right strip: 16x2 patch, mean 0.2
    assert patch_grid(20, 18) == (2, 2)
    np.testing.assert_allclose(patch_means(mask), [[0.0, 0.2], [1.0, 0.0]])
    np.testing.assert_array_equal(patch_labels(mask), [[0, 0], [1, 0]])


def test_labels_to_mask_inverts_patch_labels():
    labels = np.array([[1, 0], [0, 1]], np.uint8)
    mask = labels_to_mask(labels, 20, 18)
    assert mask.shape == (20, 18)
    np.testing.assert_array_equal(patch_labels(mask), labels)


@pytest.mark.parametrize("shape", [(64, 64), (400, 400), (50, 37)])
def test_torch_patch_labels_equal_numpy(shape):
    rng = np.random.default_rng(0)
    mask = (rng.random(shape) < rng.random()).astype(np.float32)
    expected = patch_labels(mask)
    got = patch_labels_torch(torch.from_numpy(mask)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(got, expected)


def _script_labels(grey: np.ndarray) -> np.ndarray:
    """The competition's ``mask_to_submission.py`` (2018-21): ``np.mean(patch) > 0.25`` of each
    patch sliced from the float32 image ``matplotlib.image.imread`` gives (``v / 255``)."""
    h, w = grey.shape
    return np.array(
        [[int(np.mean(grey[i : i + 16, j : j + 16]) > 0.25) for j in range(0, w, 16)]
         for i in range(0, h, 16)]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("faint", "road_rows", "road", "script_says"),
    [(5, 4, 240, 0), (3, 4, 246, 1), (3, 9, 111, 0)],
)
@pytest.mark.parametrize("width", [16, 48, 400])
def test_a_grey_patch_of_mean_exactly_a_quarter_is_labelled_as_the_script_labels_it(
    faint, road_rows, road, script_says, width
):
    """A patch of faint grey with an anti-aliased road along its bottom, whose exact mean is
    0.25 (16,320 of 256 x 255): the script's float32 mean decides, whichever way it rounds.
    A float64 sum of the same float32 values reads just above 0.25 in each case (road)."""
    patch = np.full((16, 16), faint, np.uint8)
    patch[16 - road_rows :] = road
    assert int(patch.astype(np.int64).sum()) == 16320  # mean exactly 0.25
    mask = np.zeros((16, width), np.uint8)
    mask[:, :16] = patch
    grey = mask.astype(np.float32) / 255  # as read_mask_grey and matplotlib read it
    assert grey[:, :16].astype(np.float64).mean() > 0.25  # the float64 rounding's answer
    labels = patch_labels(grey)
    np.testing.assert_array_equal(labels, _script_labels(grey))
    assert labels[0, 0] == script_says
    assert patch_means(grey)[0, 0] == np.mean(grey[:, :16])  # the script's float32 mean


def test_the_real_patch_of_mean_a_quarter_is_background_as_the_competition_says(shared_data):
    """cil-2020 satImage_021 at x=304, y=368: 16,320 of 65,280 grey levels, float32 mean 0.25.
    Every patch of every cil-2020 mask gets the script's label."""
    import matplotlib.image as mpimg

    from roadseg.io import read_mask_grey

    truth = shared_data / "cil-2020" / "training" / "groundtruth"
    grey = read_mask_grey(truth / "satImage_021.png")
    assert round(float(grey[368:384, 304:320].astype(np.float64).sum()) * 255) == 16320
    assert patch_labels(grey)[368 // 16, 304 // 16] == 0
    for path in sorted(truth.glob("*.png")):
        image = mpimg.imread(path)
        np.testing.assert_array_equal(read_mask_grey(path), image)
        np.testing.assert_array_equal(patch_labels(read_mask_grey(path)), _script_labels(image))
