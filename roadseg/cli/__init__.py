"""The ``roadseg`` command: Lightning's fit/validate/test with YAML configs, plus submissions.

Each family of commands declares its options and short command functions in a module of
its own (:mod:`.prediction`, :mod:`.evaluation`, :mod:`.data`, :mod:`.research`); a command checks its paths,
calls the library and prints. ``fit``, ``validate`` and ``test`` go to Lightning's CLI
(:mod:`roadseg.training`). Errors a user can cause end in one line (``roadseg: error:
<file>: <problem>``) and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from roadseg import __version__
from roadseg.cli import data, evaluation, export, prediction, research
from roadseg.console import one_line, quiet_libraries
from roadseg.errors import RoadsegError
from roadseg.runs import LIGHTNING_COMMANDS

FAMILIES = (prediction, export, evaluation, data, research)
# what roadseg[train] adds to the base install (pyproject.toml)
TRAINING_STACK = {
    "torch", "torchvision", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics",
    "segmentation_models_pytorch", "timm", "albumentations", "jsonargparse", "sklearn",
    "matplotlib", "onnx", "onnxscript",
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but the Lightning ones (those parse their own options)."""
    parser = argparse.ArgumentParser(
        prog="roadseg",
        description="Road segmentation of aerial imagery: train on tiles, write leaderboard submissions.",
        epilog="Lightning commands take --help of their own (roadseg fit --help). "
        "Add --debug anywhere to see a traceback instead of a one-line error.",
    )
    parser.add_argument("--version", action="version", version=f"roadseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in LIGHTNING_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    for family in FAMILIES:
        family.add_commands(sub)
    return parser


def _run(argv: list[str]) -> int | None:
    """Run a command; its exit status when it has one other than 0 (scenes that failed)."""
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from roadseg.training import run_lightning

        run_lightning(argv)
        return None
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return None
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``roadseg`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        quiet_libraries()
    try:
        return _run(argv) or 0
    except RoadsegError as err:
        if debug:
            raise
        print(f"roadseg: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file that vanished, a folder where a file belongs, a permission: name the file.
        if debug or not err.filename:
            raise
        from roadseg.paths import describe_os_error

        print(f"roadseg: error: {err.filename}: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        # The light install (roadseg[predict]) has no training stack: say what to install.
        if debug or (err.name or "").split(".")[0] not in TRAINING_STACK:
            raise
        command = next((a for a in argv if not a.startswith("-")), "roadseg")
        if err.name.split(".")[0] == "matplotlib":  # drawings (--png, figures) only
            print(f"roadseg: error: {command} draws with matplotlib: pip install matplotlib "
                  "(or leave out --png)", file=sys.stderr)  # fmt: skip
            return 2
        print(f"roadseg: error: {command} needs {err.name}, of the training install: pip install "
              "'roadseg[train]' (an exported file, --ckpt model.onnx, predicts without it)",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt as err:
        said = f": {err}" if str(err) else ""  # an Interrupted says what was kept
        print(f"roadseg: interrupted{said}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
