"""Probability or grey masks -> 16x16 patch labels, exactly as the competition scores them.

A patch is road (1) when the mean of its mask values in [0, 1] is above 0.25. At an
edge that is not a multiple of the patch size the patch is what remains (the
competition's script slices ``im[i:i + 16, j:j + 16]``), and its mean is over the
pixels it has.

The mean is computed as the competition's ``mask_to_submission.py`` computes it:
``np.mean(patch) > 0.25`` on the patch sliced from the whole mask, in the mask's own
float type. The 2018-21 script reads masks with ``matplotlib.image.imread``: float32 grey
``v / 255`` (what :func:`roadseg.io.read_mask_grey` returns), summed in float32. Its
anti-aliased masks hold patches whose exact mean is 0.25, where the float rounding
decides: cil-2020 ``satImage_021`` at x=304, y=368 (16,320 of 65,280) has the float32 mean
0.25, not road, whereas a float64 sum of the same float32 values reads 0.2500000019, road
(the rounding may go either way: the script's own decides). The 2022
script's float64 mean of ``uint8 / 255`` gives the same labels on its {0, 255} masks,
whose patch means are exact in either type.
"""

from __future__ import annotations

import numpy as np

PATCH_SIZE = 16
PATCH_THRESHOLD = 0.25
# pixels of the neighbouring tiles around a tile predicted in context (whole patches)
CONTEXT_MARGIN = 96


def patch_grid(height: int, width: int, patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """Number of patch rows and columns of a tile."""
    return -(-height // patch_size), -(-width // patch_size)


def _blocks(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """``mask`` as float64 ``(rows, size, cols, size)`` blocks, the edge ones padded with 0."""
    h, w = mask.shape
    rows, cols = patch_grid(h, w, patch_size)
    padded = np.zeros((rows * patch_size, cols * patch_size), dtype=np.float64)
    padded[:h, :w] = mask
    return padded.reshape(rows, patch_size, cols, patch_size)


def patch_means(mask: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Mean of ``mask`` ``(H, W)`` over each patch: ``(rows, cols)``, each the ``np.mean`` of
    the patch sliced from the (C-ordered) mask, in the type ``np.mean`` gives the mask (its
    float type: float32 for float32 masks), as the competition's script computes it; given
    as float64 (exactly those values), so that every threshold compares in one type.

    A patch of only 0s and 1s has an exact sum in any order and is computed with the others
    at once; a patch with grey levels alone, so that its float rounding is the script's
    own (a grey patch whose exact mean is 0.25 is not road)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    mask = np.ascontiguousarray(mask)
    h, w = mask.shape
    blocks = _blocks(mask, patch_size)
    rows, cols = blocks.shape[0], blocks.shape[2]
    row_len = np.minimum(patch_size, h - np.arange(rows) * patch_size)
    col_len = np.minimum(patch_size, w - np.arange(cols) * patch_size)
    dtype = np.mean(np.zeros(1, mask.dtype)).dtype  # what np.mean gives for this mask
    # np.mean: the sum in the mask's type, then divided by the count as float64
    means = (blocks.sum(axis=(1, 3)) / np.outer(row_len, col_len)).astype(dtype)
    grey = ((blocks != 0) & (blocks != 1)).any(axis=(1, 3))
    for r, c in zip(*np.nonzero(grey), strict=True):
        i, j = r * patch_size, c * patch_size
        means[r, c] = np.mean(mask[i : i + patch_size, j : j + patch_size])
    return means.astype(np.float64)


def patch_labels(
    mask: np.ndarray, patch_size: int = PATCH_SIZE, threshold: float = PATCH_THRESHOLD
) -> np.ndarray:
    """Patch labels ``(rows, cols)`` uint8: 1 where the patch mean (:func:`patch_means`, the
    script's own value) is above ``threshold``, as the script's ``np.mean(patch) > 0.25``."""
    return (patch_means(mask, patch_size) > threshold).astype(np.uint8)


def labels_to_mask(
    labels: np.ndarray, height: int, width: int, patch_size: int = PATCH_SIZE
) -> np.ndarray:
    """Patch labels back to a pixel mask ``(height, width)`` uint8 in {0, 1}."""
    full = np.kron(labels.astype(np.uint8), np.ones((patch_size, patch_size), dtype=np.uint8))
    return full[:height, :width]
