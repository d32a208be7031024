"""A checkpoint's validation tiles, predicted in the context of their maps, and their scores.

``roadseg tune``, ``roadseg figures`` and the evaluation rows of ``roadseg reproduce``
all predict a checkpoint's own validation split the same way: :class:`Validation`
finds the validation tiles the checkpoint recorded (by content, :func:`validation_tiles`),
refuses an ensemble member that trained on any of them (:func:`refuse_trained_members`),
places the tiles on their maps, and predicts them with any
:class:`~roadseg.predict.Predictor` (one model or an ensemble, with or without TTA).
:class:`ValidationScores` then gives the patch scores at any pair of thresholds, the
tuned pair, rings, per-tile scores, bootstrap intervals and APLS.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.checkpoints import recorded_split, trained_root
from roadseg.errors import RoadsegError
from roadseg.io import read_mask_grey
from roadseg.maps import context_for
from roadseg.patches import PATCH_THRESHOLD, patch_grid, patch_labels, patch_means
from roadseg.scoring import f1_from_counts, patch_scores
from roadseg.thresholds import PATCH_GRID, PIXEL_GRID, Thresholds


def validation_tiles(ckpt: dict) -> pd.DataFrame:
    """The validation tiles of the split a checkpoint (its contents) was trained with
    (:func:`validation_split`)."""
    return validation_split(ckpt)[0]


def validation_split(ckpt: dict) -> tuple[pd.DataFrame, str]:
    """A checkpoint's validation tiles and a line saying where they come from: exactly the
    tiles it recorded (:func:`roadseg.checkpoints.split_record`), found by content among
    the labelled tiles of its dataset, so that files added to the folder change nothing;
    a recorded tile that is not there is refused, naming it. A checkpoint saved before
    roadseg recorded its split: the split made again from the files present, said so."""
    record = recorded_split(ckpt)
    if record is None and ckpt.get("exported") is not None:
        raise RoadsegError(
            "the exported file records no validation split (exported before roadseg recorded "
            "its data, or from a checkpoint whose data was not there): export it again from "
            "its checkpoint, or evaluate --data on labelled rasters",
            ckpt["exported"].path,
        )
    if record is None:
        from roadseg.datamodule import RoadDataModule

        return RoadDataModule.from_checkpoint(ckpt).frame("val"), (
            "split: the checkpoint records no split (saved before roadseg recorded one): its "
            "validation tiles are made again from the files present, as it was trained, which "
            "is its split only if no labelled tile was added or removed since"
        )
    if record.get("kind") == "scenes":
        raise RoadsegError(
            "trained on scenes (data.scenes): its validation is held-out blocks of ground, "
            "not tiles; roadseg evaluate --ckpt CKPT [--baseline OTHER] scores them (tune, "
            "figures and the tile commands need a checkpoint trained on tiles)"
        )
    root = trained_root(ckpt) or record.get("root")
    tiles = _recorded_tiles(record["val"], root)
    if record.get("note"):  # an exported file's split, made again at export
        return tiles, f"split: the {len(tiles)} validation tiles found in {root}: {record['note']}"
    return (
        tiles,
        f"split: the {len(tiles)} validation tiles the checkpoint recorded, found in {root}",
    )


def _recorded_tiles(recorded: list[dict], root: str) -> pd.DataFrame:
    """The labelled tiles of ``root`` whose content is that of the ``recorded`` tiles, in
    the index's order; one recorded tile that is not there is refused, naming it."""
    from roadseg.index import content_hash, scan

    frame = scan(root)
    labelled = frame[frame["mask"].notna()].reset_index(drop=True)
    hashes = pd.Series([content_hash(p) for p in labelled["image"]])
    wanted, here = {entry["sha256"] for entry in recorded}, set(hashes)
    missing = [entry["file"] for entry in recorded if entry["sha256"] not in here]
    if missing:
        raise RoadsegError(
            f"validation tile {missing[0]} recorded in the checkpoint is not here (no labelled "
            f"image has its content; {len(missing)} of {len(recorded)} missing): restore it as "
            "it was trained with",
            root,
        )
    return labelled[hashes.isin(wanted) & ~hashes.duplicated()].reset_index(drop=True)


def trained_tiles(ckpt: dict) -> set[str] | None:
    """The content hashes (:func:`roadseg.index.content_hash`) of the labelled tiles a
    checkpoint trained on: the ones it recorded, else those of its split made again from
    the files present; ``None`` when it records none and its dataset is not here."""
    record = recorded_split(ckpt)
    if ckpt.get("exported") is not None:  # what its metadata says, or not known
        unknown = record is None or ckpt.get("unknown_members")
        return None if unknown else {entry["sha256"] for entry in record["train"]}
    if record is not None:
        return {entry["sha256"] for entry in record["train"]}
    root = trained_root(ckpt)
    if root is None or not Path(root).is_dir():
        return None
    from roadseg.datamodule import RoadDataModule
    from roadseg.index import content_hash

    return {content_hash(p) for p in RoadDataModule.from_checkpoint(ckpt).frame("train")["image"]}


def _unknown_note(name: str, ckpt: dict) -> str:
    """The note on a member whose training tiles are not known."""
    members = ckpt.get("unknown_members")
    if members:
        which = ", ".join(f"#{k + 1}" for k in members)
        return (f"note: {name}: member {which} of the exported file recorded no split "
                "(its data was not there at export): whether it trained on these tiles is "
                "not known")  # fmt: skip
    return (f"note: {name} records no split and its data ({trained_root(ckpt)}) is not here: "
            "whether it trained on these tiles is not known")  # fmt: skip


def refuse_trained_members(
    members: Sequence[tuple[str, dict]], tiles: pd.DataFrame, doing: str = "scores"
) -> list[str]:
    """Refuse (one line naming the member and the count) when a checkpoint of
    ``members`` (``(path, contents)``, every member of an ensemble) trained on any of
    ``tiles``, the tiles a command ``doing`` (``scores``, ``labels``): it would read high.
    Returns notes on members that record no split (the first one's is said elsewhere)."""
    from roadseg.index import content_hash

    if tiles.empty:
        return []
    keys = {content_hash(p) for p in tiles["image"]}
    notes = []
    for k, (name, ckpt) in enumerate(members):
        trained = trained_tiles(ckpt)
        if trained is None:
            notes.append(_unknown_note(name, ckpt))
            continue
        seen = len(keys & trained)
        if seen:
            raise RoadsegError(
                f"trained on {seen} of the {len(keys)} tiles this command {doing} (its split is "
                "not the first checkpoint's): leave it out, or use members trained on the same "
                "split (data.seed or data.split_seed, data.val_fraction)",
                name,
            )
        if k and recorded_split(ckpt) is None:
            notes.append(f"note: {name} records no split (saved before roadseg recorded one): "
                         "checked against its split made again from the files present")  # fmt: skip
    return notes


class Validation:
    """A checkpoint's validation tiles, placed on their maps for prediction in context.

    Args:
        ckpt: the checkpoint's contents (:func:`roadseg.checkpoints.read_checkpoint`).
        context: pixels of neighbouring tiles around each tile (0: each tile alone).
        members: every checkpoint that predicts them (``(path, contents)``): one that
            trained on any of the tiles is refused (:func:`refuse_trained_members`).
    """

    def __init__(self, ckpt: dict, context: int, *, members: Sequence[tuple[str, dict]] = ()):
        self.tiles, self.split_line = validation_split(ckpt)
        self.notes = refuse_trained_members(members, self.tiles)
        if self.tiles.empty:  # trained on every labelled tile
            self.maps, self.margin, self.context_line = None, 0, "context: off (no tiles)"
        else:
            self.maps, self.margin, self.context_line = context_for(
                [trained_root(ckpt)], self.tiles, context
            )

    def predict(self, predictor) -> list[np.ndarray]:
        """Each tile's map ``(H, W)`` by ``predictor``, in the order of :attr:`tiles`."""
        found = predictor.predict_index(self.tiles, context=self.maps, margin=self.margin)
        return [prob for _, prob in found]

    def scores(self, predictor) -> ValidationScores:
        """The tiles predicted by ``predictor``, scored against their true masks."""
        return ValidationScores(self.predict(predictor), list(self.tiles["mask"]))


class LabelledRasters:
    """Labelled rasters of any source (a folder with ``images/`` and ``groundtruth/``),
    each predicted alone as ``roadseg predict`` reads a scene (bands, radiometry,
    resampling to the model's resolution) and scored on its own grid."""

    def __init__(self, root: str | Path):
        from roadseg.index import scan

        frame = scan(root)
        self.tiles = frame[frame["mask"].notna()].reset_index(drop=True)
        if self.tiles.empty:
            from roadseg.errors import RoadsegError

            raise RoadsegError("no labelled images (images/ with groundtruth/ or masks/)", root)

    def reading(self, predictor, read=None) -> list[str]:
        """What is done to the first raster (:meth:`roadseg.reading.SceneReader.lines`)."""
        import warnings

        import rasterio

        from roadseg.reading import SceneReader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(self.tiles["image"].iloc[0]) as src:
                reader = SceneReader(src, predictor.imagery, read)
                return [*reader.lines(), *([reader.warning] if reader.warning else [])]

    def scores(self, predictor, read=None) -> ValidationScores:
        from tqdm.auto import tqdm

        probs = [
            predictor.predict_raster(path, read)
            for path in tqdm(
                self.tiles["image"], desc="predicting", unit="tile", disable=not predictor.progress
            )  # fmt: skip
        ]
        return ValidationScores(probs, list(self.tiles["mask"]))


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
        self._grid: np.ndarray | None = None  # counts at every grid pair (grid())

    def with_clean(self, clean: Callable[[np.ndarray], np.ndarray] | None) -> ValidationScores:
        """The same maps and truth (masks read once) with another post-processing."""
        other = copy.copy(self)
        other.clean = clean
        other._grid = None
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

    def grid(self) -> np.ndarray:
        """Each tile's patch counts at every pair of the thresholds' grid, after the clean-up
        (:func:`roadseg.crossfit.grid_counts`), computed once."""
        if self._grid is None:
            from roadseg.crossfit import grid_counts

            self._grid = grid_counts(self)
        return self._grid

    def tune(self, close_gaps: int = 0, min_area: int = 0, metric: str = "f1") -> Thresholds:
        """The grid pair with the best ``metric`` over all the tiles (``f1``: road patch F1;
        ``accuracy``: patch accuracy, the leaderboard's number); ties go to the pair nearest
        the defaults. Scored on the same tiles, they read high: see :meth:`cross_fit`.

        ``close_gaps``, ``min_area``: the post-processing ``clean`` does, recorded in the result.
        """
        from roadseg.crossfit import best_pair, metric_of

        metric_of(np.zeros(4), metric)  # an unknown metric is refused before any work
        a, b = best_pair(self.grid().sum(axis=2), metric)
        pixel, patch = float(PIXEL_GRID[a]), float(PATCH_GRID[b])
        reached = self.scores(pixel, patch)
        return Thresholds(
            pixel=pixel, patch=patch, val_patch_f1=round(reached["patch_f1"], 6),
            val_patch_accuracy=round(reached["patch_accuracy"], 6), close_gaps=close_gaps,
            min_area=min_area, metric=metric,
        )  # fmt: skip

    def cross_fit(self, metric: str = "f1", seed: int | None = None):
        """The honest figure: each half of the tiles scored at the thresholds tuned for
        ``metric`` on the other half (:func:`roadseg.crossfit.cross_fit`; halves by ``seed``,
        else the fixed one); ``None`` with fewer than 2 tiles."""
        from roadseg.crossfit import SEED, cross_fit

        if len(self.probs) < 2:
            return None
        return cross_fit(self.grid(), metric, SEED if seed is None else seed)
