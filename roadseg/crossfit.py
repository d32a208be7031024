"""Thresholds scored on tiles they were not tuned on: the honest validation figure.

``roadseg tune`` picks the pixel and patch thresholds that score best on the validation
tiles, and a score of those thresholds on the same tiles reads high: on a real
``configs/cpu.yaml`` checkpoint, its 24 validation tiles split in halves 20 times, tuning
gained +0.0045 road F1 on the half it was tuned on and -0.0034 on the other.
:func:`cross_fit` gives the figure of thresholds tuned elsewhere, as a submission meets
the test tiles: the tiles are split in two halves by a fixed seed, the thresholds tuned
on each half score the other half, and the patch counts of both are summed, so that every
tile is scored once, at thresholds not tuned on it.

Every figure comes from one table (:func:`grid_counts`): each tile's patch counts (true
and false positives and negatives) at every pair of the thresholds' grid. Tuning on some
tiles is then a sum over them and a search of the grid (:func:`best_pair`, which
:meth:`roadseg.evaluation.ValidationScores.tune` uses too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roadseg.patches import PATCH_THRESHOLD, patch_grid
from roadseg.scoring import f1_from_counts, scores_from_counts
from roadseg.thresholds import PATCH_GRID, PIXEL_GRID

SEED = 0  # the halves of the cross-fit: fixed, so the same maps give the same figure


def grid_counts(scores) -> np.ndarray:
    """Patch counts of each tile at every pair of the grid: ``(pixels, patches, tiles, 4)``,
    the last axis true positives, false positives, false negatives, true negatives.

    ``scores``: a :class:`~roadseg.evaluation.ValidationScores` (its clean-up applied)."""
    sizes = [int(np.prod(patch_grid(*prob.shape))) for prob in scores.probs]
    tile_of = np.repeat(np.arange(len(sizes)), sizes)
    truth = scores.truth.astype(bool)
    counts = np.zeros((len(PIXEL_GRID), len(PATCH_GRID), len(sizes), 4))
    for a, pixel in enumerate(PIXEL_GRID):
        share = scores.road_share(float(pixel))
        for b, patch in enumerate(PATCH_GRID):
            pred = share > patch
            cells = (pred & truth, pred & ~truth, ~pred & truth, ~pred & ~truth)
            for k, cell in enumerate(cells):
                counts[a, b, :, k] = np.bincount(tile_of, weights=cell, minlength=len(sizes))
    return counts


def metric_of(counts: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` (``f1``: road patch F1; ``accuracy``: patch accuracy) of counts
    ``(..., 4)``."""
    tp, fp, fn, tn = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    if metric == "f1":
        return f1_from_counts(tp, fp, fn)
    if metric == "accuracy":
        return (tp + tn) / np.maximum(tp + fp + fn + tn, 1)
    raise ValueError(f"unknown metric {metric!r}; use f1 or accuracy")


def best_pair(counts: np.ndarray, metric: str) -> tuple[int, int]:
    """Indices into (:data:`PIXEL_GRID`, :data:`PATCH_GRID`) of the pair with the best
    ``metric`` (rounded to 6 digits) of counts ``(pixels, patches, 4)``, summed over the
    tiles tuned on; ties go to the pair nearest the defaults (pixel 0.5, patch 0.25)."""
    values = metric_of(counts, metric)
    best = max(
        (round(float(values[a, b]), 6), -abs(pixel - 0.5) - abs(patch - PATCH_THRESHOLD),
         float(pixel), float(patch), a, b)
        for a, pixel in enumerate(PIXEL_GRID)
        for b, patch in enumerate(PATCH_GRID)
    )  # fmt: skip
    return best[4], best[5]


def halves(tiles: int, seed: int = SEED) -> np.ndarray:
    """A seeded split of ``tiles`` tiles in two halves: True for the ``tiles // 2`` tiles of
    the first, False for the rest."""
    first = np.zeros(tiles, dtype=bool)
    first[np.random.default_rng(seed).permutation(tiles)[: tiles // 2]] = True
    return first


@dataclass(frozen=True)
class CrossFit:
    """Every tile scored at thresholds tuned on the other half of the tiles."""

    scores: dict[str, float]  # patch scores of the summed counts (roadseg.scoring names)
    pairs: tuple[tuple[float, float], tuple[float, float]]  # (pixel, patch) tuned on each half
    sizes: tuple[int, int]  # tiles in the first and the second half
    metric: str
    seed: int
    unit: str = "tiles"  # what was split: tiles, or blocks of ground (scenes)

    def describe(self) -> str:
        """What was tuned where: the two halves and the thresholds each gave the other."""
        (p1, q1), (p2, q2) = self.pairs
        return (
            f"tuned for {self.metric} on half the {self.unit}, scored on the other half, both "
            f"ways: {self.sizes[0]} + {self.sizes[1]} {self.unit} by seed {self.seed}, pixel "
            f"{p1:g} patch {q1:g} and pixel {p2:g} patch {q2:g}"
        )


def cross_fit(
    counts: np.ndarray, metric: str = "f1", seed: int = SEED, first: np.ndarray | None = None,
    unit: str = "tiles",
) -> CrossFit:  # fmt: skip
    """The tiles of ``counts`` (:func:`grid_counts`; or blocks of ground, ``unit``) in two
    halves (``first``, else :func:`halves` by ``seed``): the thresholds tuned for ``metric``
    on each half score the other half, and the two halves' counts are summed."""
    tiles = counts.shape[2]
    if tiles < 2:
        raise ValueError(f"cross-fitting needs 2 {unit} or more")
    first = halves(tiles, seed) if first is None else np.asarray(first, dtype=bool)
    total, pairs = np.zeros(4), []
    for tuned_on in (first, ~first):
        a, b = best_pair(counts[:, :, tuned_on].sum(axis=2), metric)
        total += counts[a, b, ~tuned_on].sum(axis=0)
        pairs.append((float(PIXEL_GRID[a]), float(PATCH_GRID[b])))
    sizes = (int(first.sum()), int((~first).sum()))
    return CrossFit(scores_from_counts(*total), (pairs[0], pairs[1]), sizes, metric, seed, unit)
