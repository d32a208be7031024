"""Thresholds tuned on the validation split, stored beside their checkpoint.

A submission turns probabilities into patch labels with two thresholds: a pixel is
road when its probability is above ``pixel``; a 16x16 patch is road when its share
of road pixels is above ``patch``. The pair that maximises validation road patch F1
(or patch accuracy, the leaderboard's number: ``roadseg tune --metric accuracy``) is
found on a grid and stored beside the checkpoint (``<ckpt>.thresholds.json``), where
``roadseg submit`` finds it. When post-processing is switched on, the thresholds are
tuned with it applied, and the file records the post-processing they were tuned for.

A file records the checkpoint it was tuned for (``checkpoint_sha256``, the SHA-256 of its
bytes) and is used for that checkpoint only: after ``fit --ckpt_path last`` rewrites
``best.ckpt`` without ``tune``, the old best's thresholds are ignored with a note and the
defaults used. A file of an older roadseg records none: it counts when it is newer than
the checkpoint. A mean ensemble's thresholds are stored in its first member's file under
``ensembles``, keyed by the members' hashes (:func:`ensemble_key`), and found through any
member's file when the same checkpoints predict together again.
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


def checkpoint_digest(ckpt: str | Path) -> str | None:
    """The SHA-256 of a checkpoint's bytes (``sha256:<hex>``, cached per process), ``None``
    when it is not a file here."""
    if not Path(ckpt).is_file():
        return None
    from roadseg.identity import file_digest

    return file_digest(ckpt)


def _stale(values: dict, path: Path, ckpt: str | Path) -> str | None:
    """Why the thresholds of the file ``path`` (its ``values``) are not the checkpoint's own;
    ``None`` when they are (or when the checkpoint is not here to compare)."""
    digest = checkpoint_digest(ckpt)
    recorded = values.get("checkpoint_sha256")
    if digest is None or recorded == digest:
        return None
    if recorded is None:  # written before files recorded their checkpoint
        if path.stat().st_mtime_ns >= Path(ckpt).stat().st_mtime_ns:
            return None
        return (f"{path} is older than the checkpoint and records none (tuned for an earlier "
                "one): not used; run roadseg tune")  # fmt: skip
    return (f"{path} was tuned for another checkpoint (sha256 {recorded[7:19]}, this one "
            f"{digest[7:19]}): not used; run roadseg tune")  # fmt: skip


def _mode_file(ckpt: str | Path, tta: bool) -> tuple[dict, Path]:
    """The values of the file of one mode (the format of per-mode files: ``use``,
    ``by_metric``, ``checkpoint_sha256``, ``ensembles``) and its path; a file of the format
    before per-mode files (one entry at the plain path, its mode in ``tta``) counts for its
    own mode. ``({}, path)`` when there is none."""
    path = thresholds_path(ckpt, tta=tta)
    for candidate in dict.fromkeys((path, thresholds_path(ckpt))):
        if not candidate.is_file():
            continue
        values = _read(candidate)
        if "pixel" in values:  # one entry: the format before per-mode files
            tuned = Thresholds.from_dict(values, candidate)
            if bool(tuned.tta) == tta:
                return {"use": tuned.metric, "by_metric": {tuned.metric: values}}, candidate
        elif candidate == path:
            return values, path
    return {}, path


def _entries(values: dict, path: Path) -> dict[str, Thresholds]:
    return {m: Thresholds.from_dict(v, path) for m, v in (values.get("by_metric") or {}).items()}


def tuned_thresholds(ckpt: str | Path, *, tta: bool) -> tuple[dict[str, Thresholds], str, Path]:
    """The thresholds tuned for this checkpoint for each metric in one mode, the metric
    tuned last, and their file (no entries when none, or when the file was tuned for
    another checkpoint)."""
    return _tuned(ckpt, tta)[:3]


def _tuned(ckpt: str | Path, tta: bool) -> tuple[dict[str, Thresholds], str, Path, str | None]:
    """:func:`tuned_thresholds` and a note saying why a file's thresholds are not used."""
    values, path = _mode_file(ckpt, tta)
    entries = _entries(values, path)
    if not entries:
        return {}, "f1", path, None
    note = _stale(values, path, ckpt)
    if note:
        return {}, "f1", path, note
    return entries, values.get("use", "f1"), path, None


def _write(path: Path, values: dict) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n")
    return path


def _migrate(ckpt: str | Path) -> None:
    """A file of the format before per-mode files is moved to its own mode's file (when it
    is this checkpoint's), so that neither mode's thresholds are lost."""
    legacy = thresholds_path(ckpt)
    if not (legacy.is_file() and "pixel" in (values := _read(legacy))):
        return
    old = Thresholds.from_dict(values, legacy)
    if _stale(values, legacy, ckpt) is not None:
        return  # not this checkpoint's: ignored, and rewritten by a plain tune
    entry = {"use": old.metric, "by_metric": {old.metric: asdict(old)}}
    _write(thresholds_path(ckpt, tta=bool(old.tta)), _recorded(entry, ckpt))
    if old.tta:
        legacy.unlink()


def _recorded(values: dict, ckpt: str | Path) -> dict:
    digest = checkpoint_digest(ckpt)
    return {**values, **({"checkpoint_sha256": digest} if digest else {})}


def _own_file(ckpt: str | Path, tta: bool) -> tuple[dict, Path]:
    """The file of one mode as it is to be rewritten: its own entries only when they are
    this checkpoint's (then with its hash), its ensembles' always."""
    _migrate(ckpt)
    path = thresholds_path(ckpt, tta=tta)
    values = _read(path) if path.is_file() else {}
    entries, use, _ = tuned_thresholds(ckpt, tta=tta)
    own = {"use": use, "by_metric": {m: asdict(t) for m, t in entries.items()}} if entries else {}
    ensembles = {"ensembles": values["ensembles"]} if values.get("ensembles") else {}
    return {**_recorded(own, ckpt), **ensembles}, path


def store_thresholds(ckpt: str | Path, tuned: Thresholds) -> Path:
    """Store ``tuned`` for its mode and metric (the other metric's stay when tuned for this
    checkpoint), with the checkpoint's hash, atomically."""
    values, path = _own_file(ckpt, bool(tuned.tta))
    by_metric = {**values.get("by_metric", {}), tuned.metric: asdict(tuned)}
    return _write(path, _recorded({**values, "use": tuned.metric, "by_metric": by_metric}, ckpt))


def ensemble_key(ckpts: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
    """The key of a mean ensemble's thresholds: a hash of its members' hashes (in any
    order), and those hashes."""
    import hashlib

    members = sorted(checkpoint_digest(c) or f"path:{Path(c).resolve()}" for c in ckpts)
    return hashlib.sha256("+".join(members).encode()).hexdigest()[:16], members


def store_ensemble_thresholds(ckpts: list[str] | tuple[str, ...], tuned: Thresholds) -> Path:
    """Store ``tuned`` for the mean of ``ckpts`` (its mode and metric; the other metric's
    stay) in the first member's file of that mode, keyed by :func:`ensemble_key`."""
    key, members = ensemble_key(ckpts)
    values, path = _own_file(ckpts[0], bool(tuned.tta))
    ensembles = dict(values.get("ensembles") or {})
    by_metric = {**(ensembles.get(key) or {}).get("by_metric", {}), tuned.metric: asdict(tuned)}
    ensembles[key] = {"members": members, "use": tuned.metric, "by_metric": by_metric}
    return _write(path, {**values, "ensembles": ensembles})


def _choose(
    by_metric: dict[str, Thresholds], last: str, metric: str | None, where: str
) -> tuple[Thresholds, str] | None:
    """The entry for ``metric`` (else the one tuned last) and where it is from."""
    chosen = metric if metric in by_metric else last if last in by_metric else None
    if chosen is None:
        return None
    origin = f"tuned for {chosen} {where}"
    if metric is not None and chosen != metric:
        origin += f"; none tuned for {metric}: run roadseg tune --metric {metric}"
    return by_metric[chosen], origin


def _other_mode(origin: str, mode: bool, tta: bool) -> str:
    if mode == tta:
        return origin
    return (f"{origin}; none tuned {'with' if tta else 'without'} TTA: for the best match run "
            f"roadseg tune{' --tta' if tta else ''}")  # fmt: skip


def stored_decision(
    ckpt: str | Path, *, tta: bool = False, metric: str | None = None
) -> tuple[Decision, str, Thresholds | None]:
    """The decision every output of a checkpoint uses unless options override it: the
    thresholds ``roadseg tune`` stored for this checkpoint for maps made as these are (with
    or without TTA; for ``metric``, else the one tuned last), else those of the other mode
    with a note saying so in the origin, else the defaults (with a note when a file was
    tuned for another checkpoint). Returns the decision, where it came from, and the stored
    thresholds (``None`` when there are none)."""
    notes = []
    for mode in (tta, not tta):
        by_metric, last, path, note = _tuned(ckpt, mode)
        notes += [note] if note else []
        where = f"{'with' if mode else 'without'} TTA on validation, {path}"
        found = _choose(by_metric, last, metric, where)
        if found is not None:
            return found[0].decision(), _other_mode(found[1], mode, tta), found[0]
    return Decision(), "; ".join(["defaults", *notes]), None


def stored_ensemble_decision(
    ckpts: list[str] | tuple[str, ...], *, tta: bool = False, metric: str | None = None
) -> tuple[Decision, str, Thresholds] | None:
    """The thresholds ``roadseg tune`` stored for the mean of these checkpoints (found
    through any member's file; this mode's, else the other's with a note), ``None`` when
    there are none."""
    key, _ = ensemble_key(ckpts)
    for mode in (tta, not tta):
        for member in ckpts:
            path = thresholds_path(member, tta=mode)
            entry = ((_read(path) if path.is_file() else {}).get("ensembles") or {}).get(key)
            if not entry:
                continue
            where = f"{'with' if mode else 'without'} TTA on validation for this ensemble, {path}"
            found = _choose(_entries(entry, path), entry.get("use", "f1"), metric, where)
            if found is not None:
                return found[0].decision(), _other_mode(found[1], mode, tta), found[0]
    return None
