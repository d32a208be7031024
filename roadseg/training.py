"""Training, validation and test runs: Lightning's CLI with roadseg's run folders.

``run_lightning(["fit", "--config", "configs/cpu.yaml", ...])`` is what ``roadseg fit``
runs, and what experiment plans call for each of their runs. Where a run writes is said
in :mod:`roadseg.runs`.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from pathlib import Path

from jsonargparse import ArgumentError, Namespace
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from roadseg.checkpoints import check_checkpoint_path, global_step, read_checkpoint
from roadseg.datamodule import RoadDataModule
from roadseg.errors import RoadsegError, squash
from roadseg.runs import (
    LIGHTNING_COMMANDS,
    LOG_PROGRESS_BAR,
    RUN_LOGGER,
    TENSORBOARD_LOGGER,
    check_config_file,
    config_argument,
    is_run_logger,
    measured_lines,
    next_version,
)
from roadseg.task import RoadSegTask


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose ``last.ckpt`` is the latest epoch whatever the
    monitored score did. Lightning 2.6 rewrites it only when a best checkpoint is saved:
    a run killed after epochs without improvement resumed from its best epoch and trained
    the others again (exactly, but for nothing)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):  # fmt: skip
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):  # fmt: skip
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RoadSegCLI(LightningCLI):
    """LightningCLI with roadseg's run folder: checkpoints, metrics.csv and TensorBoard event
    files under one root.

    ``argv``: the command line (``fit --config ...``), also recorded in the run's
    provenance.
    """

    def __init__(self, argv: list[str], *, started: RunStart | None = None, **kwargs):
        self.argv = argv
        self.started = started or RunStart()
        super().__init__(RoadSegTask, RoadDataModule, args=argv, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_patch_f1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_argument(
            "--tensorboard",
            type=bool,
            default=True,
            help="write TensorBoard event files beside metrics.csv "
            "(tensorboard --logdir runs/); false: metrics.csv alone",
        )

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        root = self._run_folder(cfg)
        self.started.note(root)
        if self.subcommand == "fit":
            self._refuse_trained_folder(cfg, root)
            self._without_validation(cfg)
            from roadseg.provenance import write_provenance

            write_provenance(root, cfg.get("seed_everything"), self.argv)
        self._run_logger(cfg, root)
        self._log_file_progress(cfg)

    def _run_folder(self, cfg) -> Path:
        """The run's folder (validate and test: a new version folder inside it, since a run
        is append-only), set as the trainer's root."""
        configs = cfg.get("config") or []
        run_name = Path(str(configs[-1])).stem if configs else "default"
        root = Path(cfg.trainer.default_root_dir or Path("runs") / run_name)
        if self.subcommand != "fit":
            root = next_version(root / self.subcommand)
            print(f"roadseg {self.subcommand}: writing metrics and config to {root}")
        cfg.trainer.default_root_dir = str(root)
        return root

    @staticmethod
    def _refuse_trained_folder(cfg, root: Path) -> None:
        """A fresh run never writes over a trained run's checkpoints."""
        if not cfg.get("ckpt_path") and (root / "checkpoints" / "last.ckpt").exists():
            raise RoadsegError(
                "run folder already holds a checkpoint: resume it with `--ckpt_path last` "
                "(make train RESUME=1), or delete the folder or set trainer.default_root_dir",
                root,
            )

    @staticmethod
    def _without_validation(cfg) -> None:
        """Every labelled tile trains (the submission model): nothing to monitor, best.ckpt
        is the last epoch, and early stopping is switched off."""
        data = cfg.get("data")
        no_validation = (
            data is not None and data.get("split", "random") == "random"
            and not data.get("val_fraction")
        )  # fmt: skip
        if not (no_validation and cfg.checkpoint.monitor):
            return
        cfg.checkpoint.monitor = None
        print(
            "roadseg fit: no validation split (data.val_fraction 0): every labelled tile "
            "trains, best.ckpt is the last epoch; its thresholds come from a validated run"
        )
        callbacks = list(cfg.trainer.get("callbacks") or [])
        kept = [c for c in callbacks if not str(c.get("class_path", "")).endswith("EarlyStopping")]
        if len(kept) < len(callbacks):
            cfg.trainer.callbacks = kept
            print(
                "roadseg fit: early stopping is off (nothing to watch): to follow a "
                "validated run, set --trainer.max_epochs to 1 + the epoch of its "
                "best.ckpt and --model.schedule_epochs to its max_epochs"
            )

    def _run_logger(self, cfg, root: Path) -> None:
        """metrics.csv and (unless ``tensorboard: false``) TensorBoard event files in the run
        folder, continued from the step a resumed run stopped at. A logger the config names
        (MLflow, W&B, ...) logs beside them, after them: the first logger is the one that
        places checkpoints and config.yaml, which stay in the run folder. ``trainer.logger:
        false`` logs nothing. roadseg's own loggers found in the config come from a run's
        config.yaml saved before roadseg 0.1.1: their save_dir is that old run's, so they
        are replaced too."""
        logger = cfg.trainer.logger
        if logger is False:
            return
        named = [
            x for x in (logger if isinstance(logger, list) else [logger])
            if x not in (None, True) and not is_run_logger(x)
        ]  # fmt: skip
        ckpt_path = cfg.get("ckpt_path")
        last = root / "checkpoints" / "last.ckpt"
        resume_from = last if ckpt_path == "last" else Path(ckpt_path or last)
        resuming = self.subcommand == "fit" and ckpt_path and resume_from.is_file()
        resume_step = global_step(resume_from) if resuming else None
        ours = [RUN_LOGGER]
        if cfg.get("tensorboard", True):
            if importlib.util.find_spec("tensorboard") is None:
                print(
                    f"roadseg {self.subcommand}: tensorboard is not installed, so metrics.csv "
                    "is the only log (pip install tensorboard, or set tensorboard: false)"
                )
            else:
                ours.append(TENSORBOARD_LOGGER)
        loggers = [
            Namespace(
                class_path=path,
                init_args=Namespace(save_dir=str(root), resume_step=resume_step),
            )
            for path in ours
        ] + named
        cfg.trainer.logger = loggers if len(loggers) > 1 else loggers[0]

    @staticmethod
    def _log_file_progress(cfg) -> None:
        """Into a log file, not a terminal: one line per epoch, no nested bars."""
        callbacks = list(cfg.trainer.get("callbacks") or [])
        if (
            cfg.trainer.get("enable_progress_bar") is not False
            and not sys.stderr.isatty()
            and not any("ProgressBar" in str(c.get("class_path", "")) for c in callbacks)
        ):
            callbacks.append(Namespace(class_path=LOG_PROGRESS_BAR, init_args=Namespace()))
            cfg.trainer.callbacks = callbacks


class RunStart:
    """What a run folder held when a command started, so that a command that fails before
    it has trained anything leaves nothing behind (a config.yaml, provenance.json, an empty
    version folder); once a checkpoint is written, everything stays for ``--ckpt_path last``."""

    def __init__(self):
        self.root: Path | None = None
        self.before: set[Path] = set()  # what was in the run folder
        self.existed: set[Path] = set()  # the run folder and the folders above it that were there
        self.time = time.time()

    def note(self, root: Path) -> None:
        self.root = root
        self.before = set(root.rglob("*")) if root.exists() else set()
        self.existed = {p for p in (root, *root.parents) if p.exists()}

    def remove_unfinished(self) -> None:
        """Remove what the command added, unless it wrote a checkpoint."""
        if self.root is None or not self.root.exists():
            return
        if any(p.stat().st_mtime >= self.time for p in self.root.rglob("*.ckpt")):
            return
        added = sorted(set(self.root.rglob("*")) - self.before, key=lambda p: -len(p.parts))
        for path in added:  # deepest first: files, then the folders they leave empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif path.is_file():
                path.unlink()
        for folder in (self.root, *self.root.parents):  # the folders it created, if empty
            if folder in self.existed or not folder.exists() or any(folder.iterdir()):
                break
            folder.rmdir()


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's config as the user would write it: without the loggers roadseg
    fills in (a logger the config named stays) and without ``ckpt_path``, so ``roadseg fit
    --config runs/<run>/config.yaml`` with a new ``trainer.default_root_dir`` trains the
    same model again, elsewhere."""

    def __init__(self, parser, config, **kwargs):
        config = config.clone()
        logger = config.trainer.get("logger")
        if isinstance(logger, list):  # roadseg's loggers and those the config named
            named = [x for x in logger if not is_run_logger(x)]
            config.trainer.logger = named if len(named) > 1 else (named or [None])[0]
        elif is_run_logger(logger):
            config.trainer.logger = None
        if "ckpt_path" in config:
            config.ckpt_path = None
        callbacks = [
            c for c in (config.trainer.get("callbacks") or [])
            if c.get("class_path") != LOG_PROGRESS_BAR
        ]  # fmt: skip
        config.trainer.callbacks = callbacks or None
        super().__init__(parser, config, **kwargs)


def run_lightning(argv: list[str]) -> None:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``) with roadseg's run folder."""
    # roadseg passes its own argv on; Lightning's warning about sys.argv is noise here.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    config = config_argument(argv)
    if config is not None:
        check_config_file(config)
    check_ckpt_path(argv)
    if config is not None and argv[0] == "fit":
        for line in measured_lines(config):
            print(f"{config}: measured {line}")
    started = RunStart()
    no_exit = {"exit_on_error": False}
    options = {
        "seed_everything_default": 0,
        "save_config_callback": RunConfigCallback,
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": {
            "prog": "roadseg",
            **no_exit,
            **{c: {"prog": f"roadseg {c}", **no_exit} for c in LIGHTNING_COMMANDS},
        },
    }
    try:
        _one_line_errors(argv, config, lambda: RoadSegCLI(argv, started=started, **options))
    except BaseException:
        started.remove_unfinished()
        raise


def _one_line_errors(argv: list[str], config: str | None, run) -> None:
    """Run ``run()``, turning what a user can fix into one :class:`RoadsegError`."""
    try:
        run()
    except ArgumentError as err:  # a config or option the parser refuses
        hint = _suggest_key(str(err), [RoadSegTask, RoadDataModule])
        raise RoadsegError(
            f"{squash(err)} ({hint or f'roadseg {argv[0]} --help lists the options'})",
            _culprit(argv, str(err)) or config,
        ) from err
    except ValueError as err:  # e.g. an MLflow or W&B logger in a config, its package missing
        import re

        missing = re.search(r"class_path '([^']+)':\s*Requirement '([^']+)' not met", str(err))
        if not missing:
            raise
        raise RoadsegError(
            f"{missing[1]} needs {missing[2]}, which is not installed (pip install '{missing[2]}')",
            _naming(argv, missing[1]) or config,
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
        # e.g. an unknown model name: name the option or the config it came from
        culprit = _culprit(argv, str(err)) or config
        if err.path is None and culprit:
            raise RoadsegError(str(err), culprit) from err
        raise
    except MisconfigurationException as err:  # a GPU config where no GPU is usable
        if not any(word in str(err).lower() for word in ("gpu", "cuda")):
            raise
        raise RoadsegError(
            f"asks for a GPU and none is usable here ({squash(err)}): on a CPU train "
            "configs/cpu.yaml, or pass --trainer.accelerator cpu",
            config,
        ) from err


def check_ckpt_path(argv: list[str]) -> None:
    """A ``--ckpt_path`` that names no file (a typo) is refused before Lightning starts, so
    the command writes nothing; ``last``, ``best`` and ``hpc`` are Lightning's own names."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        if value not in (None, "null", "last", "best", "hpc", "registry"):
            check_checkpoint_path(value)
            read_checkpoint(value, mapped=True)  # a file torch cannot read: one line here


def _culprit(argv: list[str], message: str) -> str | None:
    """The command-line option (``--model.loss=bcee``) whose key or value ``message`` names,
    if one does: the config is not to blame for it."""
    pairs = [a.split("=", 1) for a in argv if a.startswith("--") and "=" in a]
    pairs += [
        [a, b] for a, b in zip(argv, argv[1:], strict=False) if a.startswith("--") and "=" not in a
    ]
    for key, value in pairs:
        if key in ("--config", "--ckpt_path"):
            continue
        if f"'{value}'" in message or f"'{key.removeprefix('--')}'" in message:
            return f"{key}={value}"
    return None


def _naming(argv: list[str], text: str) -> str | None:
    """The ``--config`` file, or else the option, of the command line that names ``text``."""
    options = [a.split("=", 1) for a in argv if a.startswith("--") and "=" in a]
    options += [[a, b] for a, b in zip(argv, argv[1:], strict=False) if a.startswith("--")]
    for key, value in options:
        if key == "--config" and Path(value).is_file():
            if text in Path(value).read_text(errors="replace"):
                return value
        elif text in value:
            return f"{key}={value}"
    return None


def _suggest_key(message: str, classes: list) -> str | None:
    """'did you mean data.crop_size?' for an option the parser refused, when one is near."""
    import difflib
    import inspect
    import re

    from pytorch_lightning import Trainer

    found = re.search(r"does not accept option '([^']+)'|unrecognized arguments: --(\S+)", message)
    if not found:
        return None
    key = found.group(1) or found.group(2)
    known = ["seed_everything", "ckpt_path", "optimizer", "lr_scheduler", "tensorboard"]
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
