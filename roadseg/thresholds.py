"""Thresholds tuned on the validation split, and the patch scores they reach.

A submission turns probabilities into patch labels with two thresholds: a pixel is
road when its probability is above ``pixel``; a 16x16 patch is road when its share
of road pixels is above ``patch``. The pair that maximises validation road patch F1
(or patch accuracy, the leaderboard's number: ``roadseg tune --metric accuracy``) is
found on a grid and stored beside the checkpoint (``<ckpt>.thresholds.json``), where
``roadseg submit`` finds it. When post-processing is switched on, the thresholds are
tuned with it applied, and the file records the post-processing they were tuned for.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path, read_mask_grey
from roadseg.patches import PATCH_THRESHOLD, patch_grid, patch_labels, patch_means
from roadseg.paths import read_text
from roadseg.postprocess import Decision
from roadseg.scoring import f1_from_counts, patch_scores

PIXEL_GRID = np.round(np.arange(0.20, 0.81, 0.05), 2)
PATCH_GRID = np.round(np.arange(0.10, 0.51, 0.025), 3)


@dataclass(frozen=True)
class Thresholds:
    """The two thresholds of a submission, the post-processing they were tuned with, and
    the validation patch F1 they reached."""

    pixel: float = 0.5
    patch: float = PATCH_THRESHOLD
    val_patch_f1: float | None = None
    val_patch_accuracy: float | None = None
    close_gaps: int = 0
    min_area: int = 0
    tta: bool | None = None  # whether the probabilities they were tuned on used TTA
    metric: str = "f1"  # what they maximise: f1 (road patch F1) or accuracy (patch accuracy)

    def decision(self) -> Decision:
        return Decision(self.pixel, self.patch, self.close_gaps, self.min_area)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        try:
            values = json.loads(read_text(path, "thresholds file"))
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as err:
            raise RoadsegError(
                f"not a thresholds file written by roadseg tune ({type(err).__name__}); "
                "delete it and run roadseg tune again",
                path,
            ) from err


def thresholds_path(ckpt: str | Path) -> Path:
    """Where the tuned thresholds of a checkpoint live."""
    return Path(f"{ckpt}.thresholds.json")


def stored_decision(ckpt: str | Path) -> tuple[Decision, str, Thresholds | None]:
    """The decision every output of a checkpoint uses unless options override it: the
    thresholds ``roadseg tune`` stored beside it, else the defaults. Returns the decision,
    where it came from, and the stored thresholds (``None`` when there are none)."""
    path = thresholds_path(ckpt)
    if not path.is_file():
        return Decision(), "defaults", None
    tuned = Thresholds.load(path)
    return tuned.decision(), f"tuned on validation, {path}", tuned


def validation_frame(ckpt: dict) -> pd.DataFrame:
    """The validation tiles of the split a checkpoint was trained with: the datamodule it
    was trained with, rebuilt from its saved arguments, makes the split again."""
    from roadseg.datamodule import RoadDataModule

    saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
    # training-only: validation never has pseudo-labels
    saved["pseudo_labels"], saved["pseudo_validation"] = None, False
    datamodule = RoadDataModule(**{k: v for k, v in saved.items() if not k.startswith("_")})
    datamodule.setup()
    return datamodule.frame("val")


def patch_rings(shape: tuple[int, int], rings: int = 4) -> np.ndarray:
    """For a tile of ``shape`` pixels: each 16x16 patch's distance in patches from the
    tile border, capped at ``rings`` (``(rows, cols)`` int)."""
    rows, cols = patch_grid(*shape)
    r, c = np.arange(rows)[:, None], np.arange(cols)[None, :]
    return np.minimum(np.minimum(r, rows - 1 - r), np.minimum(c, cols - 1 - c)).clip(max=rings)


def ring_names(rings: int = 4) -> list[str]:
    """Names of the rings of :func:`patch_rings`: ``"0"`` (border) ... ``f"{rings}+"``."""
    return [str(k) for k in range(rings)] + [f"{rings}+"]


class ValidationScores:
    """Patch scores (:mod:`roadseg.scoring`) of stored validation probabilities at any pair
    of thresholds."""

    def __init__(
        self,
        probs: list[np.ndarray],
        masks: list[str],
        clean: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        """``clean``: post-processing applied to each binary mask before the patch rule."""
        self.probs = probs
        self.clean = clean
        greys = [read_mask_grey(m) for m in masks]
        self.truth = np.concatenate([patch_labels(g).ravel() for g in greys])
        self.roads = [g > 0.5 for g in greys]  # true road pixels, for APLS

    def with_clean(self, clean: Callable[[np.ndarray], np.ndarray] | None) -> ValidationScores:
        """The same maps and truth (masks read once) with another post-processing."""
        other = copy.copy(self)
        other.clean = clean
        return other

    def masks(self, pixel: float) -> Iterator[np.ndarray]:
        """Each tile's predicted road pixels at this threshold, after the clean-up."""
        clean = self.clean or (lambda mask: mask)
        return (clean(p > pixel) for p in self.probs)

    def road_share(self, pixel: float) -> np.ndarray:
        """Share of road pixels per patch, all tiles concatenated."""
        return np.concatenate(
            [patch_means(m.astype(np.float32)).ravel() for m in self.masks(pixel)]
        )

    def scores(self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD) -> dict[str, float]:
        """Every patch score at these thresholds."""
        return patch_scores(self.road_share(pixel) > patch, self.truth)

    def all_scores(self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD) -> dict[str, float]:
        """Every patch score, and pixel IoU, precision and recall against the masks' road
        pixels (grey above 0.5, as training binarises them): each tile's mask made once."""
        tp = fp = fn = 0
        shares = []
        for mask, road in zip(self.masks(pixel), self.roads, strict=True):
            tp += int(np.sum(mask & road))
            fp += int(np.sum(mask & ~road))
            fn += int(np.sum(~mask & road))
            shares.append(patch_means(mask.astype(np.float32)).ravel())
        return {
            **patch_scores(np.concatenate(shares) > patch, self.truth),
            "iou": tp / max(tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1),
        }  # fmt: skip

    def _tile_counts(self, pixel: float, patch: float, rings: int) -> np.ndarray:
        """Patch counts per tile ``(tiles, 4 + 3 * (rings + 1))``: tp, fp, fn, tn over all
        its patches, then tp, fp, fn in each ring of :func:`patch_rings`. Every per-tile and
        per-ring score, and the bootstrap over tiles, is a sum of these rows."""
        pred = self.road_share(pixel) > patch
        truth = self.truth.astype(bool)
        counts, start = [], 0
        for prob in self.probs:
            ring = patch_rings(prob.shape, rings).ravel()
            p, t = pred[start : start + ring.size], truth[start : start + ring.size]
            row = [np.sum(p & t), np.sum(p & ~t), np.sum(~p & t), np.sum(~p & ~t)]
            for k in range(rings + 1):
                at = ring == k
                row += [np.sum(p & t & at), np.sum(p & ~t & at), np.sum(~p & t & at)]
            counts.append(row)
            start += ring.size
        return np.asarray(counts, dtype=np.float64).reshape(len(self.probs), 4 + 3 * (rings + 1))

    @staticmethod
    def _scores_of(counts: np.ndarray, rings: int) -> dict[str, np.ndarray]:
        """F1 and accuracy over all patches and each ring's F1, from counts summed over
        tiles (``(..., columns)`` of :meth:`_tile_counts`)."""
        values = {
            "f1": f1_from_counts(counts[..., 0], counts[..., 1], counts[..., 2]),
            "accuracy": (counts[..., 0] + counts[..., 3]) / counts[..., :4].sum(axis=-1),
        }
        for k, name in enumerate(ring_names(rings)):
            tp, fp, fn = (counts[..., 4 + 3 * k + i] for i in range(3))
            values[f"ring {name}"] = f1_from_counts(tp, fp, fn)
        return values

    def ring_f1(
        self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD, rings: int = 4
    ) -> dict[str, float]:
        """Road patch F1 per ring of patches counted from the tile border: ``"0"`` the
        border patches, ..., ``f"{rings}+"`` everything further in."""
        total = self._tile_counts(pixel, patch, rings).sum(axis=0)
        values = self._scores_of(total, rings)
        return {name: float(values[f"ring {name}"]) for name in ring_names(rings)}

    def per_tile(
        self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD
    ) -> list[dict[str, float]]:
        """Each tile's road patch F1 with its true and predicted road patch counts, in the
        order of the tiles: where the errors are."""
        return [
            {"patch_f1": float(f1_from_counts(tp, fp, fn)), "true": int(tp + fn),
             "predicted": int(tp + fp), "hit": int(tp)}
            for tp, fp, fn in self._tile_counts(pixel, patch, rings=0)[:, :3]
        ]  # fmt: skip

    def intervals(
        self,
        pixel: float = 0.5,
        patch: float = PATCH_THRESHOLD,
        rings: int = 4,
        draws: int = 2000,
        level: float = 0.95,
        seed: int = 0,
    ) -> dict[str, tuple[float, float]]:
        """How far other tiles of the same maps could move these scores: a bootstrap over
        tiles. The validation tiles are drawn with replacement ``draws`` times (seeded, so
        the same scores give the same intervals) and the central ``level`` share of the
        resampled scores is returned: ``"f1"`` and ``"accuracy"`` over all patches, and
        ``"ring <k>"`` the road F1 of each ring of :meth:`ring_f1`.

        Tiles, not patches, are resampled: neighbouring patches of a tile are alike, so
        patches drawn one by one would give intervals far too narrow."""
        table = self._tile_counts(pixel, patch, rings)
        rng = np.random.default_rng(seed)
        drawn = table[rng.integers(0, len(table), size=(draws, len(table)))].sum(axis=1)
        tail = (1 - level) / 2 * 100
        return {
            name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
            for name, v in self._scores_of(drawn, rings).items()
        }

    def apls(self, pixel: float = 0.5) -> float:
        """Mean APLS of the tiles (:mod:`roadseg.apls`): the centre lines of the predicted
        pixels (after the clean-up) against those of the true masks."""
        from roadseg.apls import mask_apls

        return float(np.mean([mask_apls(road, mask)
                              for mask, road in zip(self.masks(pixel), self.roads, strict=True)]))  # fmt: skip

    def f1(self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD) -> float:
        """Road patch F1 at these thresholds."""
        return self.scores(pixel, patch)["patch_f1"]

    def tune(self, close_gaps: int = 0, min_area: int = 0, metric: str = "f1") -> Thresholds:
        """The grid pair with the best ``metric`` (``f1``: road patch F1; ``accuracy``: patch
        accuracy, the leaderboard's number); ties go to the pair nearest the defaults.

        ``close_gaps``, ``min_area``: the post-processing ``clean`` does, recorded in the result.
        """
        key = {"f1": "patch_f1", "accuracy": "patch_accuracy"}.get(metric)
        if key is None:
            raise ValueError(f"unknown metric {metric!r}; use f1 or accuracy")
        best = (-1.0, 0.0, 0.0, 0.0)
        for pixel in PIXEL_GRID:
            share = self.road_share(float(pixel))
            for patch in PATCH_GRID:
                value = patch_scores(share > patch, self.truth)[key]
                closeness = -abs(pixel - 0.5) - abs(patch - PATCH_THRESHOLD)
                best = max(best, (round(value, 6), closeness, float(pixel), float(patch)))
        reached = self.scores(best[2], best[3])
        return Thresholds(
            pixel=best[2], patch=best[3], val_patch_f1=round(reached["patch_f1"], 6),
            val_patch_accuracy=round(reached["patch_accuracy"], 6), close_gaps=close_gaps,
            min_area=min_area, metric=metric,
        )  # fmt: skip
