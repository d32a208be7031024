"""Options several command families share, and their translation into library objects."""

from __future__ import annotations

import argparse

from roadseg.options import PredictOptions
from roadseg.patches import CONTEXT_MARGIN


def refuse_idle(*rules: tuple[bool, str, str]) -> None:
    """Refuse an option that would do nothing where it was given: ``(given and idle, the
    option, what it needs)``, the first that applies."""
    from roadseg.errors import RoadsegError

    for idle, option, needs in rules:
        if idle:
            raise RoadsegError(f"only with {needs}, or leave it out", option)


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The prediction options of a command line (see :func:`add_predictor_args`)."""
    refuse_idle(
        (args.merge is not None and len(args.ckpt or []) == 1, "--merge",
         "an ensemble: give --ckpt two or more times"),
    )  # fmt: skip
    given = {name: getattr(args, name, None) for name in PredictOptions.__dataclass_fields__}
    if isinstance(given.get("input_range"), list):  # --input-range LOW HIGH
        given["input_range"] = " ".join(given["input_range"])
    return PredictOptions.resolve(given, args.config, quiet=getattr(args, "quiet", False))


def decision_options(args: argparse.Namespace, ckpt: str) -> PredictOptions:
    """Options of one checkpoint with the decision options of a command line
    (see :func:`add_decision_args`), for commands that decide but do not predict tiles."""
    return PredictOptions(
        ckpt=(ckpt,), pixel_threshold=args.pixel_threshold,
        patch_threshold=args.patch_threshold, close_gaps=args.close_gaps, min_area=args.min_area,
    )  # fmt: skip


def add_decision_args(p: argparse.ArgumentParser) -> None:
    """Options of the decision (thresholds, clean-up); unset, each comes from the thresholds
    that ``roadseg tune`` stored beside the checkpoint, else the competition's defaults."""
    p.add_argument(
        "--pixel-threshold",
        type=float,
        help="road probability threshold (default: tuned, else 0.5)",
    )
    p.add_argument(
        "--patch-threshold",
        type=float,
        help="road share of a 16x16 patch (default: tuned, else 0.25)",
    )
    p.add_argument(
        "--close-gaps",
        type=int,
        metavar="PX",
        help="post-processing: bridge breaks along roads up to PX pixels (default: tuned, else off)",
    )
    p.add_argument(
        "--min-area",
        type=int,
        metavar="PX",
        help="post-processing: remove road components under PX pixels (default: tuned, else off)",
    )


def add_predictor_args(p: argparse.ArgumentParser, *, metric: bool = True) -> None:
    """Options of :class:`~roadseg.options.PredictOptions`. Defaults are None here and
    filled by :meth:`~roadseg.options.PredictOptions.resolve` (command line > --config >
    defaults), so an options file can set any of them. ``metric``: declare ``--metric``
    (``tune`` declares its own)."""
    p.add_argument(
        "--ckpt",
        action="append",
        help="trained checkpoint (runs/<run>/checkpoints/best.ckpt), or a training config "
        "(its run's best.ckpt); repeat for an ensemble",
    )
    p.add_argument(
        "--config",
        help="YAML file of these options (ckpt: [...], tta: true, merge: vote, min_area: 300, "
        "...); options given on the command line win. Examples in configs/predict/",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        default=None,
        help="average over the 8 flips/rotations (8x slower)",
    )
    p.add_argument(
        "--merge",
        choices=["mean", "vote"],
        help="how an ensemble combines: mean probability, or majority vote of the members' "
        "patch labels, each by its own thresholds (default mean)",
    )
    p.add_argument(
        "--window",
        type=int,
        help="largest prediction window side; an image is run in the fewest windows that "
        "cover it, no larger than needed (default 1536)",
    )
    p.add_argument("--overlap", type=int, help="overlap of neighbouring windows (default 128)")
    add_decision_args(p)
    if metric:
        p.add_argument(
            "--metric",
            choices=["f1", "accuracy"],
            help="use the thresholds roadseg tune found for this metric: f1 (road patch F1) "
            "or accuracy (patch accuracy, the leaderboard's) (default: the ones tuned last, "
            "with TTA when --tta is on, else without)",
        )
    add_context_arg(
        p,
        "predict each tile with PX pixels of its neighbouring tiles around it (placed on "
        "their maps by matching edges), then crop back; 0 = each tile alone "
        f"(default {CONTEXT_MARGIN} when the tiles have neighbours, as cil-2022's do)",
    )
    p.add_argument("--device", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 on CUDA, fp32 on CPU (default auto)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        help="where the network runs: torch (PyTorch), onnx (ONNX Runtime, CPU, fp32; "
        "needs roadseg[onnx]) or auto: what make bench measured fastest on the device "
        "(onnx on CPUs when installed, torch on GPUs) (default auto)",
    )
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 4)")
    add_quiet_arg(p)


def add_scene_args(p: argparse.ArgumentParser) -> None:
    """How a scene is read (:mod:`roadseg.reading`); each is said in the output."""
    p.add_argument(
        "--bands",
        metavar="R,G,B",
        help="bands read as red, green, blue, 1-based as in GDAL (3,2,1 for BGR; one band: "
        "grey). Default: the bands marked red, green, blue, else the first three; an alpha "
        "band becomes the nodata mask; bands left out are named",
    )
    p.add_argument(
        "--input-range",
        nargs="+",
        metavar="auto|none|LOW HIGH",
        help="how pixel values map to the model's: auto (8-bit divided by 255; integers "
        "that fill their bit depth, as 12-bit up to 4095, divided by it; anything else "
        "stretched from the scene's 2-98%% percentiles, all bands together, onto the "
        "training imagery's), none (divided by the type's full range), or LOW HIGH: raw "
        "values mapped to 0..1 (default auto)",
    )
    p.add_argument(
        "--resolution",
        metavar="auto|native|METRES",
        help="the scene's ground resolution: auto (from its georeference; geographic CRSs "
        "at the scene's latitude), native (never resample), or its metres per pixel (for "
        "files without georeference). A scene more than 5%% off the model's resolution is "
        "resampled to it and predicted back on its own grid (default auto)",
    )


def add_context_arg(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--context", type=int, metavar="PX", help=text)


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_vector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-length",
        type=float,
        default=10.0,
        help="drop lines shorter than this many pixels that end in nothing (whiskers, specks) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--simplify",
        type=float,
        default=1.0,
        help="simplify lines to this many pixels (Douglas-Peucker; 0: every pixel) "
        "(default %(default)s)",
    )


def write_lines(raster, out, args: argparse.Namespace, *, threshold: float, image=None,
                clean=None) -> None:  # fmt: skip
    """Centre lines of ``raster`` to ``out``; with ``--png``, drawn over ``image``;
    ``clean``: the decision's clean-up of a probability raster's road mask."""
    from roadseg.vectors import describe, to_frame, vectorize_raster, write_vectors

    pieces, crs, transform = vectorize_raster(
        raster, threshold=threshold, chunk=args.chunk, min_length=args.min_length,
        simplify=args.simplify, progress=not args.quiet, clean=clean,
    )  # fmt: skip
    frame = to_frame(pieces, crs, transform)
    write_vectors(frame, out)
    print(f"wrote {out}: {describe(frame)}")
    if args.png:
        from roadseg.vectors import draw_lines

        print(f"wrote {draw_lines(image or raster, frame, args.png)}")


def add_many_args(p: argparse.ArgumentParser) -> None:
    """Options of a list of scenes (roadseg.jobs)."""
    p.add_argument(
        "--asset",
        help="STAC: the key of the asset to read (default: 'visual', or the asset whose "
        "roles say visual; the choice is printed)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N|auto",
        help="predict share I of N (scenes I, I+N, ... of the list sorted by id), for array "
        "jobs: auto reads the index the scheduler sets (Slurm's SLURM_ARRAY_TASK_ID and "
        "count; AWS Batch's AWS_BATCH_JOB_ARRAY_INDEX or Kubernetes' JOB_COMPLETION_INDEX "
        "with auto/N); or I/N with I from 1 (see --shard-base)",
    )
    p.add_argument(
        "--shard-base",
        type=int,
        choices=[0, 1],
        default=1,
        help="--shard I/N counts I from 0 (0..N-1, as AWS Batch and Kubernetes) or from 1 "
        "(default 1)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="predict again outputs and finished chunks that other models or options made "
        "(without it, such a folder is refused naming what differs)",
    )
    p.add_argument(
        "--merge-manifest",
        action="store_true",
        help="after this run, collect every shard's manifest into OUT/manifest.csv",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the scenes as tasks on Ray actors that load the model once: a local Ray "
        "without ADDRESS, else the cluster's (auto, ray://host:10001); pip install 'roadseg[ray]'",
    )
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default %(default)s)")
