"""Run folders and training configs, without importing Lightning.

A run folder (``runs/<config name>/`` or ``trainer.default_root_dir``) holds the
checkpoints, ``metrics.csv`` (and TensorBoard event files), ``config.yaml`` and
``provenance.json`` of one training; ``validate`` and ``test`` write into
``<run>/<stage>/version_N/`` and never touch what training wrote. :mod:`roadseg.training`
runs the Lightning commands.
"""

from __future__ import annotations

from pathlib import Path

from roadseg.errors import RoadsegError

LIGHTNING_COMMANDS = {
    "fit": "train a model from a YAML config (e.g. roadseg fit --config configs/quick.yaml)",
    "validate": "evaluate a checkpoint on the validation split (--config ... --ckpt_path ...); "
    "writes runs/<run>/validate/version_N/",
    "test": "same as validate, logged as test metrics into runs/<run>/test/version_N/",
}

RUN_LOGGER = "roadseg.logger.RunCSVLogger"
TENSORBOARD_LOGGER = "roadseg.logger.RunTensorBoardLogger"
LOG_PROGRESS_BAR = "roadseg.progress.LogProgressBar"


def config_argument(argv: list[str]) -> str | None:
    """The ``--config`` file of a Lightning command line (the first, as Lightning reads it)."""
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)


def measured_lines(config: str | Path) -> list[str]:
    """What a config reached when it was last measured: its ``# measured:`` comment lines."""
    from roadseg.paths import read_text

    prefix = "# measured:"
    return [
        line.removeprefix(prefix).strip()
        for line in read_text(config, "config file").splitlines()
        if line.startswith(prefix)
    ]


def check_config_file(config: str) -> None:
    """A missing config is named, with the configs beside it and the nearest name."""
    import difflib

    from roadseg.paths import check_input, read_text

    path = Path(config)
    if not path.exists() and path.parent.is_dir():
        names = sorted(p.name for p in path.parent.glob("*.yaml") if p.name != path.name)
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        if close:
            raise RoadsegError(
                f"config file not found; did you mean {path.parent / close[0]}?", path
            )
        if names:
            shown = ", ".join(Path(n).stem for n in names)
            raise RoadsegError(f"config file not found; {path.parent}/ has: {shown}", path)
    check_input(path, what="config file")
    read_text(path, "config file")  # a binary file is named here, not deep in the parser


def is_run_logger(logger) -> bool:
    """Whether a logger of a config is one roadseg fills in itself (metrics.csv, TensorBoard)."""
    return getattr(logger, "class_path", None) in (RUN_LOGGER, TENSORBOARD_LOGGER)


def next_version(folder: Path) -> Path:
    """``folder/version_N`` for the first N not taken (Lightning's convention)."""
    n = 0
    while (folder / f"version_{n}").exists():
        n += 1
    return folder / f"version_{n}"
