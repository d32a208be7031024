"""Probability or grey masks -> 16x16 patch labels, exactly as the competition scores them.

A patch is road (1) when the mean of its mask values in [0, 1] is above 0.25. At an
edge that is not a multiple of the patch size the patch is what remains (the
competition's script slices ``im[i:i + 16, j:j + 16]``), and its mean is over the
pixels it has.
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


def patch_means(mask: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Mean of ``mask`` ``(H, W)`` over each patch: ``(rows, cols)``, float64."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    rows, cols = patch_grid(h, w, patch_size)
    padded = np.zeros((rows * patch_size, cols * patch_size), dtype=np.float64)
    padded[:h, :w] = mask
    sums = padded.reshape(rows, patch_size, cols, patch_size).sum(axis=(1, 3))
    row_len = np.minimum(patch_size, h - np.arange(rows) * patch_size)
    col_len = np.minimum(patch_size, w - np.arange(cols) * patch_size)
    return sums / np.outer(row_len, col_len)


def patch_labels(
    mask: np.ndarray, patch_size: int = PATCH_SIZE, threshold: float = PATCH_THRESHOLD
) -> np.ndarray:
    """Patch labels ``(rows, cols)`` uint8: 1 where the patch mean is above ``threshold``."""
    return (patch_means(mask, patch_size) > threshold).astype(np.uint8)


def labels_to_mask(
    labels: np.ndarray, height: int, width: int, patch_size: int = PATCH_SIZE
) -> np.ndarray:
    """Patch labels back to a pixel mask ``(height, width)`` uint8 in {0, 1}."""
    full = np.kron(labels.astype(np.uint8), np.ones((patch_size, patch_size), dtype=np.uint8))
    return full[:height, :width]
