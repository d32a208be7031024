"""Pseudo-labels for self-training: a teacher's road probabilities of unlabelled tiles.

``roadseg pseudo-label`` and the self-training rows of ``roadseg reproduce`` both write
them with :func:`write_pseudo_labels`: one ``<tile stem>.png`` per tile (probability x
255) and ``pseudo.json`` (the teacher, its checkpoints' sizes and times, TTA, context,
tile count and road share). A
student trains on them with ``--data.pseudo_labels DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path, write_png
from roadseg.provenance import file_stamps


def pseudo_label_paths(tiles: pd.DataFrame, out: str | Path) -> list[Path]:
    """Where each unlabelled tile's pseudo-label goes; two tiles of one name are refused."""
    outs = [Path(out) / f"{Path(image).stem}.png" for image in tiles["image"]]
    if len(set(outs)) < len(outs):
        raise RoadsegError(
            "two unlabelled tiles share a file name", Path(tiles["image"].iloc[0]).parent
        )
    return outs


def write_pseudo_labels(
    predictor, tiles: pd.DataFrame, out: str | Path, *, teacher: list[str | Path],
    context=None, margin: int = 0, validation: int = 0,
) -> dict:  # fmt: skip
    """Predict ``tiles`` (an index of unlabelled tiles) with ``predictor`` (a
    :class:`~roadseg.predict.Predictor` over the teacher checkpoints ``teacher``) in the
    context of their maps when ``context`` is given, and write the pseudo-labels to ``out``
    (each file atomically, ``pseudo.json`` last). ``validation``: how many of ``tiles``
    are validation tiles (``roadseg pseudo-label --validation``), said in ``pseudo.json``.
    Returns what ``pseudo.json`` says."""
    outs = pseudo_label_paths(tiles, out)
    road = []
    for (_, prob), path in zip(
        predictor.predict_index(tiles, context=context, margin=margin), outs, strict=True
    ):
        write_png(path, np.round(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8))
        road.append(float((prob > 0.5).mean()))
    about = {
        "teacher": [str(Path(c).resolve()) for c in teacher], "checkpoints": file_stamps(teacher),
        "tta": bool(predictor.tta),
        "context": margin if context is not None else 0, "tiles": len(outs),
        "validation_tiles": validation,
        "road_share": round(float(np.mean(road)), 4),
    }  # fmt: skip
    with atomic_path(Path(out) / "pseudo.json") as tmp:
        tmp.write_text(json.dumps(about, indent=2) + "\n")
    return about
