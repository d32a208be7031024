"""Pseudo-labels for self-training: a teacher's road probabilities of unlabelled tiles.

``roadseg pseudo-label`` and the self-training rows of ``roadseg reproduce`` both write
them with :func:`write_pseudo_labels`: one ``<tile stem>.png`` per tile (probability x
255) and ``pseudo.json`` (the teacher, its checkpoints' sizes and times, TTA, context,
tile count and road share). A
student trains on them with ``--data.pseudo_labels DIR``: :func:`with_pseudo_labels` turns
the unlabelled tiles of its index into training tiles with those maps as soft masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path, write_png
from roadseg.provenance import file_stamps


def pseudo_label_path(folder: str | Path, image: str | Path) -> Path:
    """Where the pseudo-label of the tile ``image`` is in ``folder``: ``<image name>.png``."""
    return Path(folder) / f"{Path(image).stem}.png"


def pseudo_label_paths(tiles: pd.DataFrame, out: str | Path) -> list[Path]:
    """Where each unlabelled tile's pseudo-label goes; two tiles of one name are refused."""
    outs = [pseudo_label_path(out, image) for image in tiles["image"]]
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


def with_pseudo_labels(
    frame: pd.DataFrame, folder: str | Path, *, validation: bool = False
) -> pd.DataFrame:
    """``frame`` (with a ``stage`` column) with its unlabelled tiles turned into training
    tiles whose masks are the teacher's probability maps ``folder/<image name>.png``
    (``roadseg pseudo-label``), marked by a ``pseudo`` column. Tiles without a map stay
    unlabelled.

    Validation tiles keep their row and their labels, which only validation reads. With
    ``validation``, each of them also trains on its teacher's map, as the test tiles do:
    a copy of its row, appended at the end with stage ``train``, the pseudo-label as its
    mask and ``copy_of_val`` True (``roadseg pseudo-label --validation`` writes these maps).
    Then the validation tiles are to the student what the test tiles are, imagery it has
    trained on with its teacher's labels, and validation measures what the leaderboard
    will."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RoadsegError(
            "pseudo-label folder not found: write it with roadseg pseudo-label --out", folder
        )
    frame = frame.copy()
    frame["pseudo"] = False
    frame["copy_of_val"] = False
    for i in frame.index[frame["stage"] == "test"]:
        label = pseudo_label_path(folder, frame.at[i, "image"])
        if label.is_file():
            frame.loc[i, ["mask", "stage", "pseudo"]] = [str(label), "train", True]
    if not frame["pseudo"].any():
        raise RoadsegError(
            "no pseudo-label of any unlabelled tile here (expected <image name>.png files "
            "written by roadseg pseudo-label)",
            folder,
        )
    if validation:
        copies = frame[frame["stage"] == "val"].copy()
        labels = [pseudo_label_path(folder, image) for image in copies["image"]]
        missing = [label.name for label in labels if not label.is_file()]
        if missing:
            raise RoadsegError(
                f"no pseudo-label of validation tile {missing[0]} ({len(missing)} of "
                f"{len(labels)} missing): write them with roadseg pseudo-label --validation, "
                "from a teacher with this run's validation split",
                folder,
            )
        copies["mask"] = [str(label) for label in labels]
        copies[["stage", "pseudo", "copy_of_val"]] = ["train", True, True]
        frame = pd.concat([frame, copies], ignore_index=True)
    return frame
