"""RunCSVLogger: metrics.csv in the run folder, never half-written, kept across resumes.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, and rewrites
the file in place (truncate, then write) whenever a new metric name appears: a run
killed at that moment loses its whole log. This writer keeps the rows in memory and
replaces the file atomically on every save. A resumed run keeps the rows logged before
the checkpoint it resumes from and drops those it will log again.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from roadseg.io import atomic_path

_FIRST = ("epoch", "step")


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
