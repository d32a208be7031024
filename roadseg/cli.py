"""The ``roadseg`` command: Lightning's fit/validate/test with YAML configs, plus submissions.

Errors a user can cause end in one line (``roadseg: error: <file>: <problem>``) and
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadseg import __version__
from roadseg.errors import RoadsegError

LIGHTNING_COMMANDS = {
    "fit": "train a model from a YAML config (e.g. roadseg fit --config configs/quick.yaml)",
    "validate": "evaluate a checkpoint on the validation split (--config ... --ckpt_path ...)",
    "test": "same as validate, logged as test metrics",
}


def _run_lightning(argv: list[str]) -> None:
    from jsonargparse import Namespace
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI

    from roadseg.datamodule import RoadDataModule
    from roadseg.task import RoadSegTask

    class RoadSegCLI(LightningCLI):
        """LightningCLI with roadseg's run folder: checkpoints and metrics.csv under one root."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({
                "checkpoint.monitor": "val_patch_f1", "checkpoint.mode": "max",
                "checkpoint.save_last": True, "checkpoint.filename": "best",
                "checkpoint.enable_version_counter": False,
            })

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand]
            configs = cfg.get("config") or []
            run_name = Path(str(configs[-1])).stem if configs else "default"
            root = Path(cfg.trainer.default_root_dir or Path("runs") / run_name)
            cfg.trainer.default_root_dir = str(root)
            last = root / "checkpoints" / "last.ckpt"
            resuming = self.subcommand == "fit" and cfg.get("ckpt_path")
            if self.subcommand == "fit" and not resuming and last.exists():
                raise RoadsegError(
                    "run folder already holds a checkpoint: resume it with `--ckpt_path last` "
                    "(make train RESUME=1), or delete the folder or set trainer.default_root_dir",
                    root,
                )
            if cfg.trainer.logger in (None, True):
                resume_from = last if cfg.get("ckpt_path") == "last" else Path(cfg.get("ckpt_path") or last)
                resume_step = _global_step(resume_from) if resuming and resume_from.is_file() else None
                cfg.trainer.logger = Namespace(
                    class_path="roadseg.logger.RunCSVLogger",
                    init_args=Namespace(save_dir=str(root), resume_step=resume_step),
                )

    RoadSegCLI(
        RoadSegTask,
        RoadDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "roadseg", "fit": {"prog": "roadseg fit"}},
        args=argv,
    )


def _global_step(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0))


def _cmd_submit(args: argparse.Namespace) -> None:
    from roadseg.index import scan
    from roadseg.predict import Predictor, load_task, read_checkpoint
    from roadseg.submission import tile_rows, validate_submission, write_submission
    from roadseg.patches import patch_labels

    ckpt_path = Path(args.ckpt)
    data = args.data
    if data is None:
        data = (read_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {}).get("root")
        if data is None:
            raise RoadsegError("checkpoint does not say which data it was trained on; pass --data", ckpt_path)
    frame = scan(data)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise RoadsegError("no unlabelled test images found (expected test/images/ or a folder of images)", data)
    run = ckpt_path.resolve().parent.parent.name if ckpt_path.parent.name == "checkpoints" else ckpt_path.stem
    out = Path(args.out) if args.out else Path("submissions") / f"{run}-{test['source'].iloc[0]}.csv"
    predictor = Predictor([load_task(ckpt_path)], device=args.device, batch_size=args.batch_size)

    def rows():
        for row, prob in predictor.predict_index(test, progress=not args.quiet):
            labels = patch_labels((prob > args.pixel_threshold).astype("float32"), threshold=args.patch_threshold)
            yield from tile_rows(int(row["tile_id"]), labels)

    write_submission(rows(), out)
    report = validate_submission(out, test)
    print(f"wrote {out}: {report}")


def _cmd_validate_submission(args: argparse.Namespace) -> None:
    from roadseg.submission import validate_submission

    print(f"{args.file}: valid, {validate_submission(args.file, args.images)}")


def _cmd_masks_to_submission(args: argparse.Namespace) -> None:
    from roadseg.submission import masks_to_submission

    n = masks_to_submission(args.mask_dir, args.out, threshold=args.patch_threshold)
    print(f"wrote {args.out}: {n:,} rows")


def _cmd_index(args: argparse.Namespace) -> None:
    from roadseg.index import scan

    frame = scan(args.root)
    summary = frame.groupby(["source", "split"]).agg(
        tiles=("tile_id", "size"), first_id=("tile_id", "min"), last_id=("tile_id", "max"),
        sizes=("height", lambda s: ", ".join(sorted({f"{h}x{w}" for h, w in zip(s, frame.loc[s.index, "width"], strict=True)}))),
    )
    print(summary.to_string())
    if args.csv:
        from roadseg.io import atomic_path

        with atomic_path(args.csv) as tmp:
            frame.to_csv(tmp, index=False)
        print(f"wrote {args.csv}")


def _cmd_models(args: argparse.Namespace) -> None:
    from roadseg.models import MODELS, create_model

    print(f"{'model':<16} {'parameters':>12}  (encoder resnet34 where it has one)")
    for name in sorted(MODELS):
        model = create_model(name)
        print(f"{name:<16} {sum(p.numel() for p in model.parameters()):>12,}")


def build_parser() -> argparse.ArgumentParser:
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

    p = sub.add_parser("submit", help="predict the test tiles with a checkpoint and write a submission CSV",
                       description="Predict every test tile at full resolution, reduce to 16x16 patch labels "
                       "(a patch is road when more than 25%% of its pixels are), write the CSV atomically "
                       "and validate it.")
    p.add_argument("--ckpt", required=True, help="trained checkpoint (runs/<run>/checkpoints/best.ckpt)")
    p.add_argument("--data", help="dataset root with test/images, or a folder of test images "
                   "(default: the data the checkpoint was trained on)")
    p.add_argument("--out", help="CSV to write (default: submissions/<run>-<dataset>.csv)")
    p.add_argument("--pixel-threshold", type=float, default=0.5, help="road probability threshold (default 0.5)")
    p.add_argument("--patch-threshold", type=float, default=0.25, help="road share of a patch (default 0.25)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("validate-submission", help="check a CSV against the test tiles it covers",
                       description="Check the header, that every patch id of every test tile is present "
                       "exactly once, that no other id is, and that every prediction is 0 or 1.")
    p.add_argument("file", help="submission CSV")
    p.add_argument("--images", required=True, help="folder of test images, or a dataset root with test/images")
    p.set_defaults(func=_cmd_validate_submission)

    p = sub.add_parser("masks-to-submission", help="turn a folder of mask images into a submission CSV",
                       description="Exactly what the competition's mask_to_submission.py does: grey levels "
                       "scaled to [0, 1], a 16x16 patch is 1 when its mean is above 0.25, the tile id is "
                       "the last number in the file name.")
    p.add_argument("mask_dir", help="folder of mask images (white = road)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--patch-threshold", type=float, default=0.25, help="road share of a patch (default 0.25)")
    p.set_defaults(func=_cmd_masks_to_submission)

    p = sub.add_parser("index", help="show the tiles roadseg finds under a dataset root",
                       description="Scan a dataset root (CIL 2020/2022 layout, images/ + groundtruth/, "
                       "or a plain folder of images) and summarise its tiles.")
    p.add_argument("root", help="dataset root")
    p.add_argument("--csv", help="also write the full tile index to this CSV")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("models", help="list the registered models with their parameter counts")
    p.set_defaults(func=_cmd_models)
    return parser


def _one_line(err: BaseException) -> str:
    """The user-facing line of an error, also when it was re-raised from a loader worker."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    return last.removeprefix("roadseg.errors.RoadsegError: ")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``roadseg`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            _run_lightning(argv)
            return 0
        args = build_parser().parse_args(argv)
        if not getattr(args, "func", None):
            build_parser().print_help()
            return 0
        args.func(args)
        return 0
    except RoadsegError as err:
        if debug:
            raise
        print(f"roadseg: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roadseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
