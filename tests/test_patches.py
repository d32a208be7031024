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
