"""Scores of 0/1 patch labels: the leaderboard's number and the course's.

Two numbers describe a submission, and they are not the same:

- **patch accuracy**: the share of patches labelled right. The Kaggle leaderboard of the
  CIL competition computes a per-row mean F-score on 0/1 labels, which for one label per
  row is exactly this (an all-background submission scored 0.847 on the 2018-21
  leaderboard: the share of background patches). This is the number to compare with
  the leaderboard.
- **road patch F1**: the F1 of the road class (1s) over all patches, as the course
  describes the score. It ignores the true negatives, so it is much lower than accuracy
  on the same labels, and 0 for an all-background submission.

Background F1 (the F1 of the 0s), precision and recall of the road class come with them.
Predicted masks (not only patch labels) are also scored by APLS (:mod:`roadseg.apls`):
whether the roads they draw allow the routes the true roads do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS = (
    "patch_accuracy", "patch_f1", "background_f1", "patch_precision", "patch_recall", "apls",
)  # fmt: skip
LABELS = {
    "patch_accuracy": "patch accuracy (the leaderboard's number)",
    "patch_f1": "road patch F1 (the course's score)",
    "background_f1": "background patch F1",
    "patch_precision": "road patch precision",
    "patch_recall": "road patch recall",
    "apls": "APLS (routes along the centre lines)",
}


def f1_from_counts(tp, fp, fn):
    """F1 of true positive, false positive and false negative counts (numbers or arrays of
    them); 1 where nothing was predicted or true: nothing to get wrong."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def scores_from_counts(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Every patch score of road patch counts: true and false positives and negatives."""
    tp, fp, fn, tn = (float(x) for x in (tp, fp, fn, tn))
    return {
        "patch_accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
        "patch_f1": float(f1_from_counts(tp, fp, fn)),
        "background_f1": float(f1_from_counts(tn, fn, fp)),
        "patch_precision": tp / (tp + fp) if tp + fp else 1.0,
        "patch_recall": tp / (tp + fn) if tp + fn else 1.0,
    }


def patch_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Scores of predicted 0/1 labels against true ones (any shape, flattened)."""
    pred = np.asarray(pred, dtype=bool).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"{pred.size} predicted labels but {truth.size} true ones")
    return scores_from_counts(
        np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth), np.sum(~pred & ~truth)
    )


def format_scores(scores: dict[str, float], indent: str = "  ") -> str:
    """One line per score, each with its name saying which number it is."""
    return "\n".join(f"{indent}{LABELS[k]:<42} {scores[k]:.4f}" for k in METRICS if k in scores)


def score_submission(
    submission: str | Path, truth: str | Path
) -> tuple[dict[str, float], int, int]:
    """Score a submission CSV against a folder of ground-truth masks with the competition's
    patch rule (raw grey levels scaled to [0, 1], a patch is road when its mean is above
    0.25). The tiles of the CSV that have a mask are scored, each with all its patches; a
    mask whose tile has no row at all is left out (a CSV of the validation tiles scored
    against every training mask). Refused: a CSV with an id twice, or with ids that the
    truth's tiles do not have (tiles without a mask, or patches outside a mask's grid: the
    CSV's tiles are not the truth's), or that covers none of the masks.

    Returns the scores, the number of tiles and the number of patches scored.
    """
    from roadseg.index import list_rasters, tile_id
    from roadseg.submission import check_predictions, check_unique_ids, read_submission

    frame = read_submission(submission)
    check_unique_ids(frame, submission)
    check_predictions(frame, submission)
    predicted = dict(zip(frame["id"], frame["prediction"], strict=True))
    masks = {f"{tile_id(m):03d}": m for m in list_rasters(truth)}
    _refuse_tiles_without_masks(predicted, masks, submission, truth)
    tiles = {ident.split("_", 1)[0] for ident in predicted}
    covered = [m for t, m in masks.items() if t in tiles] or list(masks.values())
    pred, true = [], []
    for mask in covered:
        rows = _mask_rows(mask, predicted, submission)
        pred += [predicted[ident] == "1" for ident, _ in rows]
        true += [label for _, label in rows]
    if len(true) < len(predicted):
        _refuse_outside_grids(predicted, covered, submission)
    return patch_scores(np.array(pred), np.array(true)), len(covered), len(true)


def _mask_rows(mask: str | Path, predicted: dict[str, str], submission) -> list[tuple[str, int]]:
    """The ``(id, true label)`` rows of one mask, refused when the CSV lacks one of them."""
    from roadseg.errors import RoadsegError
    from roadseg.index import tile_id
    from roadseg.io import read_mask_grey
    from roadseg.patches import patch_labels
    from roadseg.submission import tile_rows

    rows = tile_rows(tile_id(mask), patch_labels(read_mask_grey(mask)))
    missing = [ident for ident, _ in rows if ident not in predicted]
    if missing:
        raise RoadsegError(
            f"has no row {missing[0]} for the mask {Path(mask).name} "
            f"({len(missing)} of its {len(rows)} patches missing)",
            submission,
        )
    return rows


def _refuse_tiles_without_masks(predicted: dict, masks: dict, submission, truth) -> None:
    """Refuse the ids of tiles that have no mask in ``truth``: scoring the rest would leave
    them out without a word."""
    from roadseg.errors import RoadsegError

    stray = [ident for ident in predicted if ident.split("_", 1)[0] not in masks]
    if stray:
        others = len({ident.split("_", 1)[0] for ident in stray})
        raise RoadsegError(
            f"{len(stray):,} ids of {others} tile{'s' if others > 1 else ''} with no mask in "
            f"{truth} (first: {stray[0]}): the CSV's tiles are not the truth's; score it "
            "against its own tiles' masks",
            submission,
        )


def _refuse_outside_grids(predicted: dict, covered: list, submission) -> None:
    """Refuse ids outside their tile's patch grid: tiles of another size than the masks."""
    from roadseg.errors import RoadsegError
    from roadseg.index import tile_id
    from roadseg.io import raster_shape
    from roadseg.submission import patch_ids

    known: set[str] = set()
    for mask in covered:
        known.update(patch_ids(tile_id(mask), *raster_shape(mask)[1:]))
    stray = [ident for ident in predicted if ident not in known]
    mask = next(m for m in covered if f"{tile_id(m):03d}" == stray[0].split("_", 1)[0])
    _, height, width = raster_shape(mask)
    raise RoadsegError(
        f"{len(stray):,} ids outside their tile's mask (first: {stray[0]}; {Path(mask).name} "
        f"is {width}x{height}): the CSV's tiles are not the truth's",
        submission,
    )


def score_masks(predicted: str | Path, truth: str | Path) -> tuple[dict[str, float], int, int]:
    """Score a folder of predicted masks (white = road, any raster format) against a folder
    of true ones, tiles matched by the number in their names: the patch scores as
    :func:`score_submission` computes them, and the mean APLS of the tiles' centre lines
    (a mask pixel is road above half its scale).

    Returns the scores, the number of tiles and the number of patches scored.
    """
    from roadseg.apls import mask_apls
    from roadseg.errors import RoadsegError
    from roadseg.index import list_rasters, tile_id
    from roadseg.io import read_mask_grey
    from roadseg.patches import patch_labels

    mine = {tile_id(p): p for p in list_rasters(predicted)}
    masks = list_rasters(truth)
    pred, true, apls = [], [], []
    for mask in masks:
        if tile_id(mask) not in mine:
            raise RoadsegError(
                f"has no predicted mask of tile {tile_id(mask)} ({Path(mask).name})", predicted
            )
        truth_grey, pred_grey = read_mask_grey(mask), read_mask_grey(mine[tile_id(mask)])
        if truth_grey.shape != pred_grey.shape:
            raise RoadsegError(
                f"is {pred_grey.shape[1]}x{pred_grey.shape[0]}; its true mask "
                f"{Path(mask).name} is {truth_grey.shape[1]}x{truth_grey.shape[0]}",
                mine[tile_id(mask)],
            )
        pred.append(patch_labels(pred_grey).ravel())
        true.append(patch_labels(truth_grey).ravel())
        apls.append(mask_apls(truth_grey > 0.5, pred_grey > 0.5))
    scores = patch_scores(np.concatenate(pred), np.concatenate(true)) if masks else {}
    if masks:
        scores["apls"] = float(np.mean(apls))
    return scores, len(masks), int(sum(t.size for t in true))
