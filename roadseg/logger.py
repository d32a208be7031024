"""The run folder's logs: ``metrics.csv`` and TensorBoard event files, kept across resumes.

RunCSVLogger: Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts,
and rewrites the file in place (truncate, then write) whenever a new metric name appears:
a run killed at that moment loses its whole log. This writer keeps the rows in memory and
replaces the file atomically on every save. A resumed run keeps the rows logged before
the checkpoint it resumes from and drops those it will log again.

RunTensorBoardLogger: the same scalars at the same steps as TensorBoard event files
beside ``metrics.csv`` (``tensorboard --logdir runs/``), flushed at every logging call.
A resumed run cuts the event files it finds to the same steps as ``metrics.csv`` keeps.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from roadseg.io import atomic_path

_FIRST = ("epoch", "step")
_RECORD_FRAME = 16  # bytes around each record of an event file: length, its CRC, data CRC


class AtomicExperimentWriter(ExperimentWriter):
    """Holds every row; each save writes the whole CSV to a temporary file and renames it."""

    def __init__(self, log_dir: str, rows: list[dict[str, str]] | None = None):
        self.rows: list[dict] = list(rows or [])
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        pass

    def save(self) -> None:
        if not self.metrics:
            return
        self.rows += self.metrics
        self.metrics = []
        keys = set().union(*self.rows)
        header = [k for k in _FIRST if k in keys] + sorted(keys - set(_FIRST))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(self.rows)


class RunCSVLogger(CSVLogger):
    """Logs to ``<save_dir>/metrics.csv``, flushed at every logging call.

    Args:
        save_dir: the run folder.
        resume_step: global step of the checkpoint being resumed; rows logged before it
            are kept (``None``: a fresh run).
    """

    def __init__(self, save_dir: str, resume_step: int | None = None):
        # an epoch's rows are on disk before the checkpoint that follows them
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> AtomicExperimentWriter:
        if self._experiment is None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            self._experiment = AtomicExperimentWriter(self.log_dir, self._rows_to_keep())
        return self._experiment

    def _rows_to_keep(self) -> list[dict[str, str]]:
        path = Path(self.log_dir) / "metrics.csv"
        if self.resume_step is None or not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        return [row for row in rows if int(row.get("step", 0)) < self.resume_step]


class RunTensorBoardLogger(TensorBoardLogger):
    """Logs to TensorBoard event files in ``save_dir`` itself (no ``version_N`` folder),
    flushed at every logging call, as :class:`RunCSVLogger` flushes ``metrics.csv``.

    The scalars are those of ``metrics.csv`` (``epoch`` included), with no ``hp_metric``
    placeholder; ``hparams.yaml`` is left to the CSV logger.

    Args:
        save_dir: the run folder.
        resume_step: global step of the checkpoint being resumed; the events logged before
            it are kept and the later ones, which the run logs again, are cut from the event
            files (``None``: a fresh run, whose folder keeps no earlier event files).
    """

    def __init__(self, save_dir: str, resume_step: int | None = None):
        super().__init__(save_dir=save_dir, name="", version="", default_hp_metric=False)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            keep_events_before(Path(self.log_dir), self.resume_step or 0)
        return super().experiment

    @rank_zero_only
    def save(self) -> None:  # Lightning's also writes hparams.yaml, which the CSV logger owns
        if self._experiment is not None:
            self._experiment.flush()


def event_files(folder: Path) -> list[Path]:
    """The TensorBoard event files directly in ``folder``, in the order TensorBoard reads them."""
    return sorted(folder.glob("events.out.tfevents.*"))


def keep_events_before(folder: Path, step: int) -> None:
    """Cut each event file in ``folder`` to its events of steps before ``step``, atomically
    (and without the torn record a killed run may have left at its end); a file left
    without a summary is removed."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in event_files(folder):
        records = list(RawEventFileLoader(str(path)).Load())  # stops at a torn record
        events = [Event.FromString(r) for r in records]
        kept = [r for r, e in zip(records, events, strict=True) if e.step < step]
        whole = sum(_RECORD_FRAME + len(r) for r in records) == path.stat().st_size
        if not any(e.step < step and e.HasField("summary") for e in events):
            path.unlink()
        elif len(kept) < len(records) or not whole:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                writer = RecordWriter(f)
                for record in kept:
                    writer.write(record)
