"""Options several command families share, and their translation into library objects."""

from __future__ import annotations

import argparse
from pathlib import Path

from roadseg.checkpoints import is_exported
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
        (args.merge is not None and len(args.ckpt or []) == 1
         and not is_exported(args.ckpt[0]), "--merge",
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
        help="trained checkpoint (runs/<run>/checkpoints/best.ckpt), a training config "
        "(its run's best.ckpt), or an exported file (model.onnx: roadseg export; no torch "
        "needed); repeat for an ensemble of checkpoints",
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
        "--vector-kind",
        choices=["lines", "surfaces", "both"],
        help="lines: the roads' centre lines; surfaces: the road mask's polygons (outlines "
        "simplified by half a pixel, area in square metres); both: surfaces in a second file "
        "named <stem>-surfaces (default lines)",
    )
    p.add_argument(
        "--vector-crs",
        metavar="CRS",
        help="write the vectors in this CRS (any CRS pyproj reads: EPSG:3857, a WKT or PROJ "
        "string) (default: the raster's for GeoPackage; WGS84 longitude/latitude for GeoJSON, "
        "as RFC 7946 asks)",
    )
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


def vector_spec(args: argparse.Namespace, suffix: str = ".gpkg"):
    """The :class:`~roadseg.products.VectorSpec` of a command line (``--vector-crs`` is
    refused here, before any work, when pyproj cannot read it)."""
    from roadseg.products import VectorSpec
    from roadseg.vectorfiles import parse_crs

    parse_crs(args.vector_crs)
    return VectorSpec(
        kind=args.vector_kind or "lines", suffix=suffix, crs=args.vector_crs,
        min_length=args.min_length, simplify=args.simplify, chunk=args.chunk, quiet=args.quiet,
    )  # fmt: skip


def check_scene_io(args: argparse.Namespace, options: PredictOptions):
    """One scene's output, its style and its vectors checked before any work; returns
    the vectors' plan (:func:`plan_vectors`), or None without ``--vector``."""
    from roadseg.errors import RoadsegError
    from roadseg.io import raster_shape
    from roadseg.paths import check_io
    from roadseg.styles import style_path

    if Path(args.out).suffix.lower() not in (".tif", ".tiff"):
        raise RoadsegError(
            "predictions are GeoTIFFs: name the output .tif (roadseg vectorize --png draws "
            "pictures)",
            args.out,
        )
    remote = "://" in args.scene or args.scene.startswith("/vsi")
    outputs = [args.out, style_path(args.out)]
    check_io(inputs=[] if remote else [args.scene], outputs=outputs, protected=options.inputs)
    if not remote:
        raster_shape(args.scene)  # a file that is no raster fails here, before the model loads
        inputs = [*scene_files(args.scene), style_path(args.scene)]  # a VRT's sources
        check_io(outputs=outputs, protected=inputs)
    if args.vector is None:
        return None
    protected = [args.scene, args.out, *options.inputs, style_path(args.scene)]
    return plan_vectors(args.vector, args.out, args, raster_style=style_path(args.out),
                        protected=protected)  # fmt: skip


def scene_files(scene: str) -> list[str]:
    """Every file GDAL reads for a scene: a VRT's sources, sidecars."""
    from roadseg.io import open_scene

    with open_scene(scene) as src:
        return list(src.files)


def refuse_vector_options(args: argparse.Namespace) -> None:
    """``predict``'s vector options without ``--vector``, refused."""
    refuse_idle(
        (args.vector_kind is not None and args.vector is None, "--vector-kind", "--vector"),
        (args.vector_crs is not None and args.vector is None, "--vector-crs", "--vector"),
    )  # fmt: skip
    refuse_vector_png(args)


def list_vectors(args: argparse.Namespace):
    """The vectors of a list's scenes (``--vector [gpkg|geojson]``), or None."""
    from roadseg.errors import RoadsegError
    from roadseg.products import vector_suffix

    if args.vector is None:
        return None
    suffix = vector_suffix(args.vector)
    if suffix is None:
        raise RoadsegError(
            f"--vector {args.vector}: a list of scenes writes each scene's vectors beside its "
            "raster (<id>-lines.gpkg) and all of them in one layer: give no file name, or the "
            "format (--vector geojson)"
        )
    return vector_spec(args, suffix)


def plan_vectors(value: str, out, args: argparse.Namespace, *, raster_style, inputs=(),
                 protected=()) -> tuple:  # fmt: skip
    """(spec, kind -> file) of one raster's vectors: ``value`` a file or a format
    (:func:`roadseg.products.single_vector_paths`, beside ``out``); the files, their
    styles (but one that would be ``raster_style``) and ``--png`` checked before work."""
    from roadseg.paths import check_io
    from roadseg.products import single_vector_paths, vector_suffix
    from roadseg.styles import style_path
    from roadseg.vectors import vector_driver

    spec = vector_spec(args, vector_suffix(value) or Path(value).suffix)
    paths = single_vector_paths(value, Path(out), spec)
    styles = [style_path(p) for p in paths.values() if style_path(p) != Path(raster_style)]
    pictures = [args.png] if args.png else []
    check_io(inputs=inputs, outputs=[*paths.values(), *styles, *pictures], protected=protected)
    for path in paths.values():
        vector_driver(path)
    return spec, paths


def refuse_vector_png(args: argparse.Namespace) -> None:
    refuse_idle(
        (args.png is not None and args.vector_kind == "surfaces", "--png",
         "--vector-kind lines or both (it draws the centre lines)"),
    )  # fmt: skip
    if args.png is not None:  # before any output is made, not after it (the light install)
        import importlib.util

        from roadseg.errors import RoadsegError

        if importlib.util.find_spec("matplotlib") is None:
            raise RoadsegError("--png draws with matplotlib, not installed here: pip install "
                               "matplotlib, or leave out --png")  # fmt: skip


def write_scene_vectors(raster, paths: dict, args: argparse.Namespace, spec, *,
                        threshold: float, image=None, clean=None, raster_style=None) -> None:  # fmt: skip
    """The vectors of ``raster`` to ``paths`` (kind -> file) with their QGIS styles (but
    a style that would be ``raster_style``, the raster's own); with ``--png`` the lines
    drawn over ``image``; ``clean``: the decision's clean-up of a probability raster."""
    from roadseg.products import write_raster_vectors
    from roadseg.styles import style_path

    skip = {p for p in paths.values() if raster_style and style_path(p) == Path(raster_style)}
    said, lines = write_raster_vectors(raster, paths, spec, threshold=threshold, clean=clean,
                                       unstyled=skip)  # fmt: skip
    for line in said:
        print(line)
    for path in skip:
        print(f"note: {path}'s QGIS style would be {raster_style}, the raster's: not written "
              "(name the vectors apart to have both)")  # fmt: skip
    if args.png:
        from roadseg.vectors import draw_lines

        print(f"wrote {draw_lines(image or raster, lines, args.png)}")


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
