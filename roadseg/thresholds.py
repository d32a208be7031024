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

    @classmethod
    def from_dict(cls, values: dict, path: str | Path) -> Thresholds:
        try:
            return cls(**values)
        except TypeError as err:
            raise RoadsegError(
                f"not a thresholds file written by roadseg tune ({type(err).__name__}); "
                "delete it and run roadseg tune again",
                path,
            ) from err


def thresholds_path(ckpt: str | Path, *, tta: bool = False) -> Path:
    """Where the thresholds tuned on a checkpoint's maps without (or with) TTA live: the
    two modes' maps differ, and so do their best thresholds."""
    return Path(f"{ckpt}.thresholds{'-tta' if tta else ''}.json")


def _read(path: Path) -> dict:
    try:
        values = json.loads(read_text(path, "thresholds file"))
    except json.JSONDecodeError as err:
        raise RoadsegError(
            "not a thresholds file written by roadseg tune (JSONDecodeError); delete it and "
            "run roadseg tune again",
            path,
        ) from err
    if not isinstance(values, dict):
        raise RoadsegError("not a thresholds file written by roadseg tune; delete it", path)
    return values


def tuned_thresholds(ckpt: str | Path, *, tta: bool) -> tuple[dict[str, Thresholds], str, Path]:
    """The thresholds tuned for each metric in one mode, the metric tuned last, and their
    file (no entries when none). A file of roadseg before per-mode files (one entry at the
    plain path, its mode in ``tta``) counts for the mode it was tuned in."""
    path = thresholds_path(ckpt, tta=tta)
    for candidate in dict.fromkeys((path, thresholds_path(ckpt))):
        if not candidate.is_file():
            continue
        values = _read(candidate)
        if "pixel" in values:  # one entry: the format before per-mode files
            tuned = Thresholds.from_dict(values, candidate)
            if bool(tuned.tta) == tta:
                return {tuned.metric: tuned}, tuned.metric, candidate
        elif candidate == path:
            by_metric = values.get("by_metric") or {}
            entries = {m: Thresholds.from_dict(v, path) for m, v in by_metric.items()}
            return entries, values.get("use", "f1"), path
    return {}, "f1", path


def _write(path: Path, by_metric: dict[str, Thresholds], use: str) -> Path:
    values = {"use": use, "by_metric": {m: asdict(t) for m, t in by_metric.items()}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n")
    return path


def store_thresholds(ckpt: str | Path, tuned: Thresholds) -> Path:
    """Store ``tuned`` for its mode and metric (the other metric's stay), atomically. A file
    of the format before per-mode files is first moved to its own mode's file, so that
    neither mode's thresholds are lost."""
    legacy = thresholds_path(ckpt)
    if legacy.is_file() and "pixel" in (values := _read(legacy)):
        old = Thresholds.from_dict(values, legacy)
        _write(thresholds_path(ckpt, tta=bool(old.tta)), {old.metric: old}, old.metric)
        if old.tta:
            legacy.unlink()
    tta = bool(tuned.tta)
    kept = tuned_thresholds(ckpt, tta=tta)[0]
    return _write(thresholds_path(ckpt, tta=tta), {**kept, tuned.metric: tuned}, tuned.metric)


def stored_decision(
    ckpt: str | Path, *, tta: bool = False, metric: str | None = None
) -> tuple[Decision, str, Thresholds | None]:
    """The decision every output of a checkpoint uses unless options override it: the
    thresholds ``roadseg tune`` stored for maps made as these are (with or without TTA;
    for ``metric``, else the one tuned last), else those of the other mode with a note
    saying so in the origin, else the defaults. Returns the decision, where it came from,
    and the stored thresholds (``None`` when there are none)."""
    for mode in (tta, not tta):
        by_metric, last, path = tuned_thresholds(ckpt, tta=mode)
        chosen = metric if metric in by_metric else last if last in by_metric else None
        if chosen is None:
            continue
        tuned = by_metric[chosen]
        origin = f"tuned for {chosen} {'with' if mode else 'without'} TTA on validation, {path}"
        if metric is not None and chosen != metric:
            origin += f"; none tuned for {metric}: run roadseg tune --metric {metric}"
        if mode != tta:
            origin += (
                f"; none tuned {'with' if tta else 'without'} TTA: for the best match run "
                f"roadseg tune{' --tta' if tta else ''}"
            )
        return tuned.decision(), origin, tuned
    return Decision(), "defaults", None
