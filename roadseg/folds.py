"""Folds that respect geography: spatial blocks of the maps the tiles were cut from.

The cil-2022 tiles are adjacent crops of two large maps, so a random split puts a tile
and its neighbour (which continues its roads) on both sides. Two tiles are neighbours
when one's edge continues the other's: the mean absolute difference between A's last
column and B's first column is about as small as between two neighbouring columns
inside a tile, and much smaller than for any other tile. Following right and below
neighbours (among all tiles, test tiles included) gives every tile a (map, col, row)
position; each map is cut into square blocks of ``block`` x ``block`` tiles, and whole
blocks are dealt to folds, largest first, each to the emptiest fold. Tiles of different
folds then touch only along block borders.
"""

from __future__ import annotations

import functools
from collections import deque

import numpy as np
import pandas as pd

from roadseg.io import read_image

# A match counts when it is within MATCH_FACTOR of the tile's own column-to-column
# difference and clearly better than the runner-up (measured on cil-2022: the best match
# is 1.07x the inner difference at the median, the runner-up 2.5x).
MATCH_FACTOR = 1.5
RUNNER_UP_RATIO = 0.7


def _edges(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return _edges_of(tuple(str(p) for p in frame["image"]))


@functools.lru_cache(maxsize=4)  # runs of one process (make reproduce) share the decoding
def _edges_of(paths: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    images = [read_image(p) for p in paths]
    sizes = {im.shape[1:] for im in images}
    assert len(sizes) == 1, f"edge matching needs tiles of one size, got {sorted(sizes)}"
    edges = {
        "left": np.stack([im[:, :, 0] for im in images]),
        "right": np.stack([im[:, :, -1] for im in images]),
        "top": np.stack([im[:, 0, :] for im in images]),
        "bottom": np.stack([im[:, -1, :] for im in images]),
    }
    inner = np.array([np.abs(np.diff(im, axis=2)).mean() for im in images])
    return edges, inner


def neighbour_pairs(frame: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    """(i, j, dx, dy): tile j lies one tile right of (dx=1) or below (dy=1) tile i."""
    edges, inner = _edges(frame)
    pairs = []
    for a, b, dx, dy in (("right", "left", 1, 0), ("bottom", "top", 0, 1)):
        dist = np.abs(edges[a][:, None] - edges[b][None]).mean(axis=(2, 3))
        np.fill_diagonal(dist, np.inf)
        runner_up = np.sort(dist, axis=1)[:, 1]
        for i in range(len(frame)):
            j = int(np.argmin(dist[i]))
            if (
                dist[i, j] <= MATCH_FACTOR * inner[i]
                and dist[i, j] <= RUNNER_UP_RATIO * runner_up[i]
            ):
                pairs.append((i, j, dx, dy))
    return pairs


def tile_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """``map``, ``col``, ``row`` of every tile, in ``frame``'s row order.

    A tile with no neighbour is a map of its own. Where the links disagree (two paths
    giving a tile different positions) the first position found is kept.
    """
    links: dict[int, list[tuple[int, int, int]]] = {}
    for i, j, dx, dy in neighbour_pairs(frame):
        links.setdefault(i, []).append((j, dx, dy))
        links.setdefault(j, []).append((i, -dx, -dy))
    position: dict[int, tuple[int, int, int]] = {}
    for start in range(len(frame)):
        if start in position:
            continue
        position[start] = (start, 0, 0)
        queue = deque([start])
        while queue:
            i = queue.popleft()
            m, x, y = position[i]
            for j, dx, dy in links.get(i, []):
                if j not in position:
                    position[j] = (m, x + dx, y + dy)
                    queue.append(j)
    maps, cols, rows = zip(*(position[i] for i in range(len(frame))), strict=True)
    _, map_ids = np.unique(maps, return_inverse=True)
    return pd.DataFrame({"map": map_ids, "col": cols, "row": rows})


def assign_folds(frame: pd.DataFrame, k: int, *, block: int = 4, seed: int = 0) -> pd.DataFrame:
    """Add ``map``, ``col``, ``row``, ``block`` and ``fold`` columns (fold -1 for test tiles)."""
    frame = frame.reset_index(drop=True)
    frame = pd.concat([frame, tile_positions(frame)], axis=1)
    blocks = list(zip(frame["map"], frame["col"] // block, frame["row"] // block, strict=True))
    _, frame["block"] = np.unique(np.array(blocks), axis=0, return_inverse=True)
    labelled = frame["split"] == "train"
    sizes = frame[labelled].groupby("block").size()
    rng = np.random.default_rng(seed)
    order = sorted(sizes.index, key=lambda b: (-sizes[b], rng.random()))
    load = np.zeros(k, int)
    fold_of: dict[int, int] = {}
    for b in order:
        fold_of[b] = int(np.argmin(load))
        load[fold_of[b]] += sizes[b]
    frame["fold"] = [
        fold_of[b] if lab else -1 for b, lab in zip(frame["block"], labelled, strict=True)
    ]
    return frame


def split_stages(
    frame: pd.DataFrame,
    *,
    split: str = "random",
    val_fraction: float = 0.2,
    seed: int = 0,
    folds: int = 5,
    fold: int = 0,
) -> pd.DataFrame:
    """Add a ``stage`` column (train/val/test) by the named rule.

    ``random``: a seeded share ``val_fraction`` of the main dataset's labelled tiles.
    ``geographic``: the labelled tiles of fold ``fold`` of ``folds`` spatial-block folds of
    the main dataset (see module doc). Extra datasets always train.
    """
    from roadseg.errors import RoadsegError
    from roadseg.index import split_train_val

    if split == "random":
        return split_train_val(frame, val_fraction=val_fraction, seed=seed)
    if split != "geographic":
        raise RoadsegError(f"unknown split {split!r}; use random or geographic")
    if not 0 <= fold < folds:
        raise RoadsegError(f"fold {fold} does not exist; folds are 0..{folds - 1}")
    frame = frame.reset_index(drop=True).copy()
    main = frame["source"] == frame["source"].iloc[0]
    folded = assign_folds(frame[main], folds, seed=seed)
    frame["stage"] = np.where(frame["split"] == "test", "test", "train")
    val_rows = frame.index[main][folded["fold"].to_numpy() == fold]
    frame.loc[val_rows, "stage"] = "val"
    return frame
