"""RunCSVLogger: metrics.csv in the run folder, kept across resumes.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts. A resumed
run must keep what it logged before: the rows up to the checkpoint it resumes from
are kept, the rows it will log again (after that checkpoint) are dropped.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment


class RunCSVLogger(CSVLogger):
    """Logs to ``<save_dir>/metrics.csv``.

    Args:
        save_dir: the run folder.
        resume_step: global step of the checkpoint being resumed; rows logged before it
            are kept (``None``: a fresh run).
    """

    def __init__(self, save_dir: str, resume_step: int | None = None):
        super().__init__(save_dir=save_dir, name="", version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            kept = self._rows_to_keep()
            writer = super().experiment  # removes the old metrics.csv
            writer.metrics.extend(kept)  # written back, merged header, on the first save
            return writer
        return self._experiment

    def _rows_to_keep(self) -> list[dict[str, str]]:
        path = Path(self.log_dir) / "metrics.csv"
        if self.resume_step is None or not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        return [row for row in rows if int(row.get("step", 0)) < self.resume_step]
