"""Thresholds tuned on the validation split, and the patch F1 they reach.

A submission turns probabilities into patch labels with two thresholds: a pixel is
road when its probability is above ``pixel``; a 16x16 patch is road when its share
of road pixels is above ``patch``. The pair that maximises validation patch F1 is
found on a grid and stored beside the checkpoint (``<ckpt>.thresholds.json``), where
``roadseg submit`` finds it. When post-processing is switched on, the thresholds are
tuned with it applied, and the file records the post-processing they were tuned for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.io import atomic_path, read_mask_grey
from roadseg.patches import PATCH_THRESHOLD, patch_labels, patch_means
from roadseg.postprocess import Decision

PIXEL_GRID = np.round(np.arange(0.20, 0.81, 0.05), 2)
PATCH_GRID = np.round(np.arange(0.10, 0.51, 0.025), 3)


@dataclass(frozen=True)
class Thresholds:
    """The two thresholds of a submission, the post-processing they were tuned with, and
    the validation patch F1 they reached."""

    pixel: float = 0.5
    patch: float = PATCH_THRESHOLD
    val_patch_f1: float | None = None
    close_gaps: int = 0
    min_area: int = 0

    def decision(self) -> Decision:
        return Decision(self.pixel, self.patch, self.close_gaps, self.min_area)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        return cls(**json.loads(Path(path).read_text()))


def thresholds_path(ckpt: str | Path) -> Path:
    """Where the tuned thresholds of a checkpoint live."""
    return Path(f"{ckpt}.thresholds.json")


def validation_frame(ckpt: dict) -> pd.DataFrame:
    """The validation tiles of the split a checkpoint was trained with: the datamodule it
    was trained with, rebuilt from its saved arguments, makes the split again."""
    from roadseg.datamodule import RoadDataModule

    saved = ckpt.get("datamodule_hyper_parameters") or {}
    datamodule = RoadDataModule(**{k: v for k, v in saved.items() if not k.startswith("_")})
    datamodule.setup()
    return datamodule.frame("val")


def patch_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 of the road patches (1s) of two label arrays."""
    tp = float(np.sum(pred * truth))
    denom = float(np.sum(pred) + np.sum(truth))
    return 2 * tp / denom if denom else 1.0


class ValidationScores:
    """Patch F1 of stored validation probabilities at any pair of thresholds."""

    def __init__(
        self,
        probs: list[np.ndarray],
        masks: list[str],
        clean: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        """``clean``: post-processing applied to each binary mask before the patch rule."""
        self.probs = probs
        self.clean = clean
        self.truth = np.concatenate([patch_labels(read_mask_grey(m)).ravel() for m in masks])

    def road_share(self, pixel: float) -> np.ndarray:
        """Share of road pixels per patch, all tiles concatenated."""
        clean = self.clean or (lambda mask: mask)
        return np.concatenate(
            [patch_means(clean(p > pixel).astype(np.float32)).ravel() for p in self.probs]
        )

    def f1(self, pixel: float = 0.5, patch: float = PATCH_THRESHOLD) -> float:
        return patch_f1((self.road_share(pixel) > patch).astype(np.uint8), self.truth)

    def tune(self, close_gaps: int = 0, min_area: int = 0) -> Thresholds:
        """The grid pair with the best patch F1 (ties: the one nearest the defaults).

        ``close_gaps``, ``min_area``: the post-processing ``clean`` does, recorded in the result.
        """
        best = (-1.0, 0.0, 0.0, 0.0)
        for pixel in PIXEL_GRID:
            share = self.road_share(float(pixel))
            for patch in PATCH_GRID:
                f1 = patch_f1((share > patch).astype(np.uint8), self.truth)
                closeness = -abs(pixel - 0.5) - abs(patch - PATCH_THRESHOLD)
                best = max(best, (round(f1, 6), closeness, float(pixel), float(patch)))
        return Thresholds(
            pixel=best[2], patch=best[3], val_patch_f1=best[0], close_gaps=close_gaps,
            min_area=min_area,
        )  # fmt: skip
