"""Thresholds tuned on the validation split, stored beside their checkpoint.

A submission turns probabilities into patch labels with two thresholds: a pixel is
road when its probability is above ``pixel``; a 16x16 patch is road when its share
of road pixels is above ``patch``. The pair that maximises validation road patch F1
(or patch accuracy, the leaderboard's number: ``roadseg tune --metric accuracy``) is
found on a grid and stored beside the checkpoint (``<ckpt>.thresholds.json``), where
``roadseg submit`` finds it. When post-processing is switched on, the thresholds are
tuned with it applied, and the file records the post-processing they were tuned for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path
from roadseg.patches import PATCH_THRESHOLD
from roadseg.paths import read_text
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
