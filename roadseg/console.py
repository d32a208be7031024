"""What a command shows on the terminal: one-line errors, and no library noise."""

from __future__ import annotations

import logging
import warnings

# Library noise that says nothing about the user's run; --debug shows it all.
_QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's use of torch's pytree
    r".*skip_none parameter was deprecated.*",  # Lightning's use of jsonargparse
    r".*`timm-` encoders are deprecated.*",  # a checkpoint trained with an older roadseg
    r".*does not have many workers.*",  # num_workers 0 is the fastest choice on 2 cores
    r".*Precision bf16-mixed is not supported by the model summary.*",
)


def one_line(err: BaseException) -> str:
    """The user-facing line of an error, also when it was re-raised from a loader worker."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    return last.removeprefix("roadseg.errors.RoadsegError: ")


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (they start with a light bulb)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("\N{ELECTRIC LIGHT BULB}")


def quiet_libraries() -> None:
    """Silence the warnings and tips of :data:`_QUIET_WARNINGS` and Lightning's tips."""
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # A logger's filters see only the records made on it, and the tips are made by the
    # rank-zero helpers' own loggers (created here if Lightning is not imported yet).
    for package in (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "lightning.fabric",
    ):
        logging.getLogger(f"{package}.utilities.rank_zero").addFilter(_DropTips())


class _NoBar:
    """What a disabled bar does: nothing (tqdm not imported: 0.06 s a quiet run need not
    pay, a tenth of a small scene's prediction)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(**kwargs):
    """tqdm's bar, or with ``disable=True`` one that does nothing."""
    if kwargs.get("disable"):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(**kwargs)
