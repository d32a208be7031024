"""The honest validation figure: thresholds scored on tiles they were not tuned on."""

from __future__ import annotations

import numpy as np
import pytest

from roadseg.crossfit import best_pair, cross_fit, halves
from roadseg.evaluation import ValidationScores
from roadseg.scoring import patch_scores
from roadseg.thresholds import PATCH_GRID, PIXEL_GRID
from tests.conftest import write_raster

SIDE = 96  # 6 x 6 patches


def _tile(tmp_path, name: str, road_share: float, other_share: float):
    """A tile whose top two rows of patches are road: its mask, and a 0/1 map with the
    share ``road_share`` of each road patch's pixels on and ``other_share`` of the others'."""
    truth = np.zeros((6, 6), np.uint8)
    truth[:2] = 1
    mask = np.kron(truth, np.ones((16, 16), np.uint8)) * 255
    prob = np.zeros((SIDE, SIDE), np.float32)
    for r in range(6):
        for c in range(6):
            on = round((road_share if truth[r, c] else other_share) * 256)
            block = np.zeros(256, np.float32)
            block[:on] = 1
            prob[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = block.reshape(16, 16)
    return prob, str(write_raster(tmp_path / f"{name}.png", mask))


def test_thresholds_that_suit_one_half_score_the_other_half_honestly(tmp_path):
    """Tile X wants a patch threshold in [0.15, 0.30) (its roads cover 30% of a patch, its
    noise 15%), tile Y one below 0.12 (its roads cover 12%). Tuned on both, 0.25 scores
    F1 0.667 on both; tuned on X (0.25) Y's roads are all missed, tuned on Y (0.1) X's noise
    is all road: every tile scored at thresholds tuned on the other, F1 is 0.4."""
    x = _tile(tmp_path, "x", 0.30, 0.15)
    y = _tile(tmp_path, "y", 0.12, 0.0)
    scores = ValidationScores([x[0], y[0]], [x[1], y[1]])
    tuned = scores.tune()
    assert (tuned.pixel, tuned.patch, tuned.val_patch_f1) == (0.5, 0.25, pytest.approx(2 / 3))
    honest = cross_fit(scores.grid(), "f1", first=np.array([True, False]))
    assert honest.pairs == ((0.5, 0.25), (0.5, 0.1))  # tuned on X, then on Y
    # X at Y's 0.1: 12 roads found, 24 noise patches called road; Y at X's 0.25: 12 missed
    assert honest.scores["patch_f1"] == pytest.approx(2 * 12 / (2 * 12 + 24 + 12))
    assert honest.scores["patch_accuracy"] == pytest.approx((12 + 0 + 0 + 24) / 72)
    assert honest.sizes == (1, 1) and "1 + 1 tiles" in honest.describe()
    assert scores.cross_fit().scores["patch_f1"] == pytest.approx(0.4)  # either way round


def test_cross_fit_is_tune_on_one_half_and_score_on_the_other(tmp_path):
    """The same figure computed the long way: ValidationScores of each half alone, tuned,
    and the other half's labels at those thresholds, pooled."""
    rng = np.random.default_rng(4)
    probs, masks = [], []
    for k in range(7):
        truth = (rng.random((6, 6)) < 0.3).astype(np.uint8)
        masks.append(
            str(
                write_raster(
                    tmp_path / f"m{k}.png", np.kron(truth, np.ones((16, 16), np.uint8)) * 255
                )
            )
        )
        noisy = (
            np.kron(truth, np.ones((16, 16))) * rng.uniform(0.3, 0.9)
            + rng.random((SIDE, SIDE)) * 0.6
        )
        probs.append(np.clip(noisy, 0, 1).astype(np.float32))
    scores = ValidationScores(probs, masks)
    first = halves(7, seed=3)
    assert first.sum() == 3
    pred, true = [], []
    for tuned_on in (first, ~first):
        alone = ValidationScores([p for p, t in zip(probs, tuned_on, strict=True) if t],
                                 [m for m, t in zip(masks, tuned_on, strict=True) if t])  # fmt: skip
        other = ValidationScores([p for p, t in zip(probs, tuned_on, strict=True) if not t],
                                 [m for m, t in zip(masks, tuned_on, strict=True) if not t])  # fmt: skip
        best = alone.tune(metric="accuracy")
        pred.append(other.road_share(best.pixel) > best.patch)
        true.append(other.truth)
    expected = patch_scores(np.concatenate(pred), np.concatenate(true))
    assert scores.cross_fit("accuracy", seed=3).scores == pytest.approx(expected)
    # every grid pair's counts are those of patch_scores at that pair
    a, b = best_pair(scores.grid().sum(axis=2), "f1")
    tuned = scores.tune()
    assert (float(PIXEL_GRID[a]), float(PATCH_GRID[b])) == (tuned.pixel, tuned.patch)


def test_halves_are_fixed_by_the_seed_and_one_tile_has_none(tmp_path):
    np.testing.assert_array_equal(halves(24), halves(24))
    assert halves(24).sum() == 12 and halves(5).sum() == 2
    prob, mask = _tile(tmp_path, "x", 0.3, 0.0)
    assert ValidationScores([prob], [mask]).cross_fit() is None
    with pytest.raises(ValueError, match="2 tiles or more"):
        cross_fit(np.zeros((len(PIXEL_GRID), len(PATCH_GRID), 1, 4)))
