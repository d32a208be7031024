"""Patch labels -> the competition's CSV, and CSV checks.

A submission has the header ``id,prediction`` and one row per 16x16 patch of every
test tile, with ids ``<tile id, 3 digits>_<x>_<y>`` (x the column, y the row of the
patch's top-left pixel), in the order the competition's ``mask_to_submission.py``
writes them: tile by tile, then column by column, then row by row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.errors import RoadsegError, squash
from roadseg.index import list_rasters, tile_id, unlabelled_tiles
from roadseg.io import atomic_path, read_mask_grey
from roadseg.patches import PATCH_SIZE, PATCH_THRESHOLD, patch_grid, patch_labels
from roadseg.paths import read_text

HEADER = ("id", "prediction")


def patch_ids(tile: int, height: int, width: int, patch_size: int = PATCH_SIZE) -> list[str]:
    """Ids of a tile's patches in the competition's order (columns outer, rows inner)."""
    return [
        f"{tile:03d}_{x}_{y}"
        for x in range(0, width, patch_size)
        for y in range(0, height, patch_size)
    ]


def tile_rows(tile: int, labels: np.ndarray, patch_size: int = PATCH_SIZE) -> list[tuple[str, int]]:
    """``(id, label)`` rows of one tile from its patch labels ``(rows, cols)``."""
    rows, cols = labels.shape
    ids = patch_ids(tile, rows * patch_size, cols * patch_size, patch_size)
    return list(zip(ids, labels.T.reshape(-1).tolist(), strict=True))


def write_submission(rows: Iterable[tuple[str, int]], path: str | Path) -> int:
    """Write ``(id, label)`` rows as a submission CSV, atomically; returns the row count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for ident, label in rows:
            writer.writerow((ident, int(label)))
            n += 1
    return n


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read a submission CSV as a DataFrame with columns ``id`` (str) and ``prediction``."""
    path = Path(path)
    if not path.exists():
        raise RoadsegError("submission file not found", path)
    # as tolerant as the competition: a spreadsheet's byte-order mark, CRLF line ends and
    # blank lines (pandas skips those) are accepted
    text = read_text(path, "submission CSV").removeprefix("\ufeff")
    header = next(csv.reader(io.StringIO(text)), None)
    if header is None or tuple(h.strip() for h in header) != HEADER:
        shown = ",".join(header or [])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise RoadsegError(f"header is {shown!r}; expected 'id,prediction'", path)
    try:
        return pd.read_csv(
            io.StringIO(text), dtype={"id": str, "prediction": str}, keep_default_na=False
        )
    except (pd.errors.ParserError, ValueError) as err:
        raise RoadsegError(f"not a well-formed CSV ({squash(err, 200)})", path) from err


def check_predictions(frame: pd.DataFrame, path: str | Path) -> None:
    """Raise unless every prediction of a submission read by :func:`read_submission` is 0 or 1."""
    bad = frame[~frame["prediction"].isin(["0", "1"])]
    if len(bad):
        raise RoadsegError(
            f"prediction {bad['prediction'].iloc[0]!r} for {bad['id'].iloc[0]}; only 0 or 1 allowed",
            path,
        )


def check_unique_ids(frame: pd.DataFrame, path: str | Path) -> None:
    """Raise when an id of a submission read by :func:`read_submission` comes twice: which
    of its rows counts would be a guess."""
    ids = frame["id"]
    dup = ids[ids.duplicated()]
    if len(dup):
        raise RoadsegError(f"{len(dup)} duplicated ids (first: {dup.iloc[0]})", path)


@dataclass(frozen=True)
class SubmissionReport:
    """What a valid submission holds."""

    rows: int
    tiles: int
    road_fraction: float

    def __str__(self) -> str:
        return f"{self.rows:,} rows for {self.tiles} tiles, {self.road_fraction:.1%} road patches"


def expected_ids(images: pd.DataFrame) -> list[str]:
    """Every patch id that a submission for these tiles (index rows) must have."""
    ids: list[str] = []
    for row in images.itertuples():
        ids += patch_ids(int(row.tile_id), int(row.height), int(row.width))
    return ids


def validate_submission(path: str | Path, images: str | Path | pd.DataFrame) -> SubmissionReport:
    """Check a CSV against the test tiles it claims to cover; raise RoadsegError if wrong.

    ``images`` is a folder of test images, a dataset root with ``test/images``, or an index.
    """
    index = images if isinstance(images, pd.DataFrame) else unlabelled_tiles(images)
    frame = read_submission(path)
    expected = expected_ids(index)
    ids = frame["id"]
    check_unique_ids(frame, path)
    have, want = set(ids), set(expected)
    missing = [i for i in expected if i not in have]
    if missing:
        raise RoadsegError(
            f"{len(missing)} ids missing (first: {missing[0]}); expected {len(expected):,} rows",
            path,
        )
    extra = [i for i in ids if i not in want]
    if extra:
        raise RoadsegError(f"{len(extra)} ids that no test tile has (first: {extra[0]})", path)
    check_predictions(frame, path)
    return SubmissionReport(
        rows=len(frame), tiles=len(index), road_fraction=float((frame["prediction"] == "1").mean())
    )


def masks_to_submission(
    mask_dir: str | Path, out: str | Path, *, threshold: float = PATCH_THRESHOLD
) -> int:
    """A folder of mask images -> submission CSV, as the competition's own script does it.

    Grey levels are scaled to [0, 1] and not binarised; a patch is 1 when its mean is
    above ``threshold``. Returns the number of rows.
    """
    rows: list[tuple[str, int]] = []
    for path in list_rasters(mask_dir):
        rows += tile_rows(tile_id(path), patch_labels(read_mask_grey(path), threshold=threshold))
    return write_submission(rows, out)


def submission_to_masks(path: str | Path, height: int, width: int) -> dict[int, np.ndarray]:
    """A submission CSV -> patch labels ``(rows, cols)`` per tile id (the inverse of tile_rows)."""
    frame = read_submission(path)
    rows_n, cols_n = patch_grid(height, width)
    out: dict[int, np.ndarray] = {}
    for ident, pred in zip(frame["id"], frame["prediction"], strict=True):
        tile, x, y = (int(v) for v in ident.split("_"))
        labels = out.setdefault(tile, np.zeros((rows_n, cols_n), dtype=np.uint8))
        labels[y // PATCH_SIZE, x // PATCH_SIZE] = int(pred)
    return out
