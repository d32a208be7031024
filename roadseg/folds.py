"""Folds that respect geography: spatial blocks of the maps the tiles were cut from.

The cil-2022 tiles are adjacent crops of two large maps, so a random split puts a tile
and its neighbour (which continues its roads) on both sides. :mod:`roadseg.maps` gives
every tile (test tiles included) a (map, col, row) place by matching edges; each map is
cut into square blocks of ``block`` x ``block`` tiles counted from its top-left tile,
and whole blocks are dealt to folds, largest first, each to the emptiest fold. Tiles of
different folds then touch only along block borders.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from roadseg.maps import tile_positions


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
