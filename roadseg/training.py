"""Training, validation and test runs: Lightning's CLI with roadseg's run folders.

``run_lightning(["fit", "--config", "configs/cpu.yaml", ...])`` is what ``roadseg fit``
runs, and what experiment plans call for each of their runs. A run folder
(``runs/<config name>/`` or ``trainer.default_root_dir``) holds the checkpoints,
``metrics.csv``, ``config.yaml`` and ``provenance.json`` of one training; ``validate``
and ``test`` write into ``<run>/<stage>/version_N/`` and never touch what training wrote.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from roadseg.errors import RoadsegError, squash

LIGHTNING_COMMANDS = {
    "fit": "train a model from a YAML config (e.g. roadseg fit --config configs/quick.yaml)",
    "validate": "evaluate a checkpoint on the validation split (--config ... --ckpt_path ...); "
    "writes runs/<run>/validate/version_N/",
    "test": "same as validate, logged as test metrics into runs/<run>/test/version_N/",
}


def run_lightning(argv: list[str]) -> None:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``) with roadseg's run folder."""
    from jsonargparse import ArgumentError, Namespace
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

    from roadseg.datamodule import RoadDataModule
    from roadseg.task import RoadSegTask

    class RoadSegCLI(LightningCLI):
        """LightningCLI with roadseg's run folder: checkpoints and metrics.csv under one root."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val_patch_f1",
                    "checkpoint.mode": "max",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "best",
                    "checkpoint.enable_version_counter": False,
                }
            )

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand]
            configs = cfg.get("config") or []
            run_name = Path(str(configs[-1])).stem if configs else "default"
            root = Path(cfg.trainer.default_root_dir or Path("runs") / run_name)
            if self.subcommand != "fit":
                # a run is append-only: validate and test write into a new folder inside it
                root = _next_version(root / self.subcommand)
                print(f"roadseg {self.subcommand}: writing metrics and config to {root}")
            cfg.trainer.default_root_dir = str(root)
            last = root / "checkpoints" / "last.ckpt"
            resuming = self.subcommand == "fit" and cfg.get("ckpt_path")
            if self.subcommand == "fit" and not resuming and last.exists():
                raise RoadsegError(
                    "run folder already holds a checkpoint: resume it with `--ckpt_path last` "
                    "(make train RESUME=1), or delete the folder or set trainer.default_root_dir",
                    root,
                )
            data = cfg.get("data")
            no_validation = (
                data is not None and data.get("split", "random") == "random"
                and not data.get("val_fraction")
            )  # fmt: skip
            if self.subcommand == "fit" and no_validation and cfg.checkpoint.monitor:
                # every labelled tile trains (the submission model): nothing to monitor,
                # best.ckpt is the last epoch
                cfg.checkpoint.monitor = None
                print(
                    "roadseg fit: no validation split (data.val_fraction 0): every labelled tile "
                    "trains, best.ckpt is the last epoch; its thresholds come from a validated run"
                )
                callbacks = list(cfg.trainer.get("callbacks") or [])
                kept = [
                    c for c in callbacks
                    if not str(c.get("class_path", "")).endswith("EarlyStopping")
                ]  # fmt: skip
                if len(kept) < len(callbacks):
                    cfg.trainer.callbacks = kept
                    print(
                        "roadseg fit: early stopping is off (nothing to watch): to follow a "
                        "validated run, set --trainer.max_epochs to 1 + the epoch of its "
                        "best.ckpt and --model.schedule_epochs to its max_epochs"
                    )
            if self.subcommand == "fit":
                from roadseg.provenance import write_provenance

                write_provenance(root, cfg.get("seed_everything"), argv)
            # a RunCSVLogger already in the config comes from a run's config.yaml saved
            # before roadseg 0.1.1: its save_dir is that old run's, so it is replaced too
            if cfg.trainer.logger in (None, True) or _is_run_logger(cfg.trainer.logger):
                resume_from = (
                    last if cfg.get("ckpt_path") == "last" else Path(cfg.get("ckpt_path") or last)
                )
                resume_step = (
                    _global_step(resume_from) if resuming and resume_from.is_file() else None
                )
                cfg.trainer.logger = Namespace(
                    class_path="roadseg.logger.RunCSVLogger",
                    init_args=Namespace(save_dir=str(root), resume_step=resume_step),
                )
            callbacks = list(cfg.trainer.get("callbacks") or [])
            if (
                cfg.trainer.get("enable_progress_bar") is not False
                and not sys.stderr.isatty()
                and not any("ProgressBar" in str(c.get("class_path", "")) for c in callbacks)
            ):  # a log file, not a terminal: one line per epoch, no nested bars
                callbacks.append(Namespace(class_path=LOG_PROGRESS_BAR, init_args=Namespace()))
                cfg.trainer.callbacks = callbacks

    class RunConfigCallback(SaveConfigCallback):
        """Saves the run's config as the user would write it: without the logger roadseg
        fills in and without ``ckpt_path``, so ``roadseg fit --config runs/<run>/config.yaml``
        with a new ``trainer.default_root_dir`` trains the same model again, elsewhere."""

        def __init__(self, parser, config, **kwargs):
            config = config.clone()
            if _is_run_logger(config.trainer.get("logger")):
                config.trainer.logger = None
            if "ckpt_path" in config:
                config.ckpt_path = None
            callbacks = [
                c for c in (config.trainer.get("callbacks") or [])
                if c.get("class_path") != LOG_PROGRESS_BAR
            ]  # fmt: skip
            config.trainer.callbacks = callbacks or None
            super().__init__(parser, config, **kwargs)

    # roadseg passes its own argv on; Lightning's warning about sys.argv is noise here.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    no_exit = {"exit_on_error": False}
    config = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    if config is not None:
        _check_config_file(config)
        if argv[0] == "fit":
            for line in measured_lines(config):
                print(f"{config}: measured {line}")
    try:
        RoadSegCLI(
            RoadSegTask,
            RoadDataModule,
            seed_everything_default=0,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "roadseg",
                **no_exit,
                **{c: {"prog": f"roadseg {c}", **no_exit} for c in LIGHTNING_COMMANDS},
            },
            args=argv,
        )
    except ArgumentError as err:  # a config or option the parser refuses
        hint = _suggest_key(str(err), [RoadSegTask, RoadDataModule])
        raise RoadsegError(
            f"{squash(err)} ({hint or f'roadseg {argv[0]} --help lists the options'})", config
        ) from err
    except RuntimeError as err:
        if "Error(s) in loading state_dict" in str(err):
            ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
            raise RoadsegError(
                "checkpoint is from another model (its weights do not fit this config's model)",
                ckpt,
            ) from err
        raise
    except RoadsegError as err:
        if err.path is None and config:  # e.g. an unknown model name: name the config it came from
            raise RoadsegError(str(err), config) from err
        raise


LOG_PROGRESS_BAR = "roadseg.progress.LogProgressBar"


def measured_lines(config: str | Path) -> list[str]:
    """What a config reached when it was last measured: its ``# measured:`` comment lines."""
    from roadseg.paths import read_text

    prefix = "# measured:"
    return [
        line.removeprefix(prefix).strip()
        for line in read_text(config, "config file").splitlines()
        if line.startswith(prefix)
    ]


def _check_config_file(config: str) -> None:
    """A missing config is named, with the configs beside it and the nearest name."""
    import difflib

    from roadseg.paths import check_input

    path = Path(config)
    if not path.exists() and path.parent.is_dir():
        names = sorted(p.name for p in path.parent.glob("*.yaml"))
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        if close:
            raise RoadsegError(
                f"config file not found; did you mean {path.parent / close[0]}?", path
            )
        if names:
            shown = ", ".join(Path(n).stem for n in names)
            raise RoadsegError(f"config file not found; {path.parent}/ has: {shown}", path)
    check_input(path, what="config file")


def _suggest_key(message: str, classes: list) -> str | None:
    """'did you mean data.crop_size?' for an option the parser refused, when one is near."""
    import difflib
    import inspect
    import re

    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import ModelCheckpoint

    found = re.search(r"does not accept option '([^']+)'|unrecognized arguments: --(\S+)", message)
    if not found:
        return None
    key = found.group(1) or found.group(2)
    known = ["seed_everything", "ckpt_path", "optimizer", "lr_scheduler"]
    for prefix, cls in zip(("model", "data"), classes, strict=True):
        known += [
            f"{prefix}.{n}" for n in inspect.signature(cls.__init__).parameters if n != "self"
        ]
    for prefix, cls in (("trainer", Trainer), ("checkpoint", ModelCheckpoint)):
        known += [
            f"{prefix}.{n}" for n in inspect.signature(cls.__init__).parameters if n != "self"
        ]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else None


def _is_run_logger(logger) -> bool:
    """Whether a logger value of a config is the RunCSVLogger roadseg fills in itself."""
    return getattr(logger, "class_path", None) == "roadseg.logger.RunCSVLogger"


def _next_version(folder: Path) -> Path:
    """``folder/version_N`` for the first N not taken (Lightning's convention)."""
    n = 0
    while (folder / f"version_{n}").exists():
        n += 1
    return folder / f"version_{n}"


def _global_step(ckpt: Path) -> int:
    import torch

    return int(
        torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0)
    )
