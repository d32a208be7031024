"""Commands that predict: submit, pseudo-label, tune, predict, vectorize."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from roadseg.cli.common import (
    add_many_args,
    add_predictor_args,
    add_quiet_arg,
    add_scene_args,
    add_vector_args,
    check_scene_io,
    list_vectors,
    plan_vectors,
    predict_options,
    refuse_idle,
    refuse_vector_options,
    refuse_vector_png,
    write_scene_vectors,
)
from roadseg.errors import RoadsegError
from roadseg.options import PredictOptions


def _test_tiles(options: PredictOptions, data: str | None, ckpts: list[dict]):
    """(root the checkpoint trained on, root of the tiles to predict, index of those
    unlabelled tiles): the tiles of ``data``, else of the checkpoint's own dataset."""
    from roadseg.checkpoints import trained_root
    from roadseg.index import unlabelled_tiles

    trained_on = trained_root(ckpts[0])
    data = data if data is not None else trained_on
    if data is None:
        raise RoadsegError(
            "the model does not say which data it was trained on (an exported file: export it "
            "again from its checkpoint); pass --data",
            options.ckpt[0],
        )
    return trained_on, data, unlabelled_tiles(data)


def _context(options: PredictOptions, roots: list, tiles):
    """(MapIndex, margin) for predicting ``tiles`` in the context of their maps (see
    :func:`roadseg.maps.context_for`), and a line saying what it is."""
    from roadseg.maps import context_for

    maps, margin, line = context_for(roots, tiles, options.margin)
    print(line)
    return maps, margin


def _cmd_submit(args: argparse.Namespace) -> None:
    from roadseg.checkpoints import run_name
    from roadseg.paths import check_io
    from roadseg.submission import tile_rows, validate_submission, write_submission

    refuse_idle(
        (args.message is not None and not args.upload, "--message",
         "--upload (it is the Kaggle submission's message)"),
    )  # fmt: skip
    options = predict_options(args)
    if args.out:  # a bad --out is refused before anything is read
        check_io(outputs=[args.out], protected=options.inputs)
    if args.data is not None:
        check_io(input_folders=[args.data])
    ckpts = options.read_checkpoints()  # torch is imported from here on
    from roadseg.groundeval import is_scene_checkpoint

    if args.data is None and is_scene_checkpoint(ckpts[0]):
        raise RoadsegError(
            "trained on scenes (data.scenes), not on a competition's tiles: give --data "
            "FOLDER (the tiles to predict), or predict scenes with roadseg predict",
            options.ckpt[0],
        )
    trained_on, data, test = _test_tiles(options, args.data, ckpts)
    run = run_name(options.ckpt[0])
    out = (
        Path(args.out)
        if args.out
        else Path("submissions") / submission_name(options, test["source"].iloc[0])
    )
    check_io(outputs=[out], protected=[*options.inputs, *test["image"]])
    if args.data is not None:  # the checkpoint's own test tiles never trained it
        _say_trained_tiles(options, ckpts, test)
    maps, margin = _context(options, [trained_on, data], test)
    predictor, decision = options.predictor(ckpts)

    def rows():
        for row, prob in predictor.predict_index(test, context=maps, margin=margin):
            yield from tile_rows(int(row["tile_id"]), decision.labels(prob))

    write_submission(rows(), out)
    print(f"wrote {out}: {validate_submission(out, test)}")
    if args.upload:
        from roadseg.kaggle import upload

        print(upload(out, args.competition, args.message or f"roadseg {run}"))


def _say_trained_tiles(options: PredictOptions, ckpts: list[dict], tiles) -> None:
    """One line for each checkpoint (every member of an ensemble) that trained on tiles to
    predict (by content, as its recorded split says)."""
    from roadseg.evaluation import trained_tiles
    from roadseg.index import content_hash

    keys = {content_hash(p) for p in tiles["image"]}
    for name, ckpt in zip(options.ckpt, ckpts, strict=True):
        seen = (trained_tiles(ckpt) or set()) & keys
        if seen:
            print(
                f"note: {len(seen)} of these {len(tiles)} tiles trained {name}: scores on them "
                "read high; roadseg evaluate scores its validation split honestly"
            )


def submission_name(options: PredictOptions, what: str) -> str:
    """``<run>-<what>[-ensemble<N>][-vote][-tta][-<metric>].csv``: how the CSV was made
    (``what``: the dataset, or ``validation``; the metric when one was asked for)."""
    from roadseg.checkpoints import run_name

    name = f"{run_name(options.ckpt[0])}-{what}"
    name += f"-ensemble{len(options.ckpt)}" if len(options.ckpt) > 1 else ""
    name += "-vote" if len(options.ckpt) > 1 and options.merge == "vote" else ""
    return (
        name
        + ("-tta" if options.tta else "")
        + (f"-{options.metric}" if options.metric else "")
        + ".csv"
    )


def _cmd_pseudo_label(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.pseudo import pseudo_label_paths, write_pseudo_labels

    options = predict_options(args)
    check_io(output_folders=[args.out], protected=options.inputs)
    if args.data is not None:
        check_io(input_folders=[args.data])
    ckpts = options.read_checkpoints()
    trained_on, data, tiles = _test_tiles(options, args.data, ckpts)
    validation = 0
    if args.validation:
        tiles, validation = _with_validation_tiles(tiles, options, ckpts)
    outs = pseudo_label_paths(tiles, args.out)
    check_io(outputs=outs, protected=[*options.inputs, *tiles["image"]])
    maps, margin = _context(options, [trained_on, data], tiles)
    predictor, _ = options.predictor(ckpts)  # probabilities, no decision
    about = write_pseudo_labels(
        predictor, tiles, args.out, teacher=list(options.ckpt), context=maps, margin=margin,
        validation=validation,
    )  # fmt: skip
    print(
        f"wrote {len(outs)} pseudo-labels (teacher probability x 255) to {args.out}"
        + (f", {validation} of them of the validation tiles" if validation else "")
        + f": {100 * about['road_share']:.1f}% of their pixels above 0.5; train a student with "
        f"--data.pseudo_labels {args.out}"
        + (" --data.pseudo_validation true" if validation else "")
    )


def _with_validation_tiles(tiles, options: PredictOptions, ckpts: list[dict]):
    """The unlabelled tiles and the first checkpoint's validation tiles (as it recorded
    them), and how many of those; refused when any member trained on one of them."""
    import pandas as pd

    from roadseg.evaluation import refuse_trained_members, validation_split

    val, line = validation_split(ckpts[0])
    if val.empty:
        raise RoadsegError(
            "trained without a validation split: no validation tiles to label "
            "(leave out --validation)",
            options.ckpt[0],
        )
    both = pd.concat([tiles, val[tiles.columns]], ignore_index=True)
    members = list(zip(options.ckpt, ckpts, strict=True))
    for note in (line, *refuse_trained_members(members, both, "labels")):
        print(note)
    return both, len(val)


def _many_scenes(args: argparse.Namespace) -> bool:
    """Whether the scenes given are a list (module roadseg.jobs) rather than one raster."""
    if len(args.scene) > 1 or args.shard or args.ray or args.merge_manifest:
        return True
    one = Path(args.scene[0])
    return (one.is_dir() or one.suffix.lower() in (".txt", ".json")) and "://" not in args.scene[0]


def _cmd_predict_many(args: argparse.Namespace) -> int:
    from roadseg.jobs import predict_many

    refuse_idle(
        (args.png is not None, "--png", "one scene (it draws that scene's centre lines)"),
        (args.processes != 1, "--processes", "one scene (for many: --shard I/N per process, or --ray)"),
        (args.threads is not None, "--threads", "--processes N on one scene"),
    )  # fmt: skip
    refuse_vector_options(args)
    vectors = list_vectors(args)
    options = predict_options(args)
    options.check_model()  # a model that cannot run is no scene's failure
    progress = predict_many(
        options, args.scene, args.out, output=args.output, chunk=args.chunk, cog=args.cog,
        asset=args.asset, shard_spec=args.shard, shard_base=args.shard_base, ray=args.ray,
        workers=args.workers, merge=args.merge_manifest, overwrite=args.overwrite,
        vectors=vectors,
    )  # fmt: skip
    if progress.failed:
        names = ", ".join(progress.failed[:5]) + (" ..." if len(progress.failed) > 5 else "")
        print(
            f"roadseg: {len(progress.failed)} scene{'s' if len(progress.failed) > 1 else ''} "
            f"failed ({names}); their reasons are above and in {args.out}/manifest*.jsonl: fix "
            "them and run the same command again: finished scenes are skipped",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_predict(args: argparse.Namespace) -> int | None:
    from roadseg.scenes import predict_scene_run, scene_decision
    from roadseg.styles import style_path, write_raster_style

    if _many_scenes(args):
        return _cmd_predict_many(args)
    refuse_idle(
        (args.asset is not None, "--asset", "a STAC Item or ItemCollection (.json)"),
        (args.workers != 2, "--workers", "--ray"),
    )  # fmt: skip
    args.scene = args.scene[0]

    refuse_idle(
        (args.png is not None and args.vector is None, "--png",
         "--vector LINES.gpkg (it draws those centre lines)"),
        (args.threads is not None and args.processes == 1, "--threads",
         "--processes N (the threads of each of them; one process uses every core, or "
         "OMP_NUM_THREADS)"),
    )  # fmt: skip
    refuse_vector_options(args)
    options = predict_options(args)
    vectors = check_scene_io(args, options)
    run = predict_scene_run(
        options, args.scene, args.out, output=args.output, chunk=args.chunk,
        processes=args.processes, threads=args.threads, cog=args.cog, overwrite=args.overwrite,
    )  # fmt: skip
    if not run.wrote:
        return
    print(f"wrote {args.out} and its QGIS style {write_raster_style(args.out, args.output)}")
    if vectors:  # the roads the decision keeps, as lines and/or surfaces
        decision = scene_decision(options, args.scene, run.decision)
        clean = decision.clean if args.output != "mask" and decision.postprocessing else None
        spec, paths = vectors
        write_scene_vectors(args.out, paths, args, spec, threshold=decision.pixel,
                            image=args.scene, clean=clean, raster_style=style_path(args.out))  # fmt: skip


def _cmd_vectorize(args: argparse.Namespace) -> None:
    from roadseg.styles import style_path

    refuse_idle(
        (args.image is not None and not args.png, "--image",
         "--png OUT.png (it is the imagery the lines are drawn over)"),
    )  # fmt: skip
    refuse_vector_png(args)
    raster_style = style_path(args.raster)
    spec, paths = plan_vectors(args.out, args.out, args, raster_style=raster_style,
                               inputs=[args.raster, *([args.image] if args.image else [])])  # fmt: skip
    write_scene_vectors(args.raster, paths, args, spec, threshold=args.threshold,
                        image=args.image, raster_style=raster_style)  # fmt: skip


def add_commands(sub) -> None:
    """The prediction commands' parsers."""
    _add_submit(sub)
    _add_pseudo_label(sub)
    _add_predict(sub)
    _add_vectorize(sub)


def _add_submit(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="predict the test tiles with a checkpoint and write a submission CSV",
        description="Predict every test tile at full resolution, reduce to 16x16 patch labels "
        "(a patch is road when more than 25% of its pixels are), write the CSV atomically "
        "and validate it.",
    )
    add_predictor_args(p)
    p.add_argument(
        "--data",
        help="dataset root with test/images, or a folder of test images "
        "(default: the data the checkpoint was trained on)",
    )
    p.add_argument("--out", help="CSV to write (default: submissions/<run>-<dataset>.csv)")
    p.add_argument(
        "--upload", action="store_true", help="send the CSV to Kaggle (needs an API token)"
    )
    p.add_argument(
        "--competition",
        default=os.environ.get("KAGGLE_COMPETITION", "ethz-cil-road-segmentation-2023"),
        help="Kaggle competition slug (default: $KAGGLE_COMPETITION or %(default)s)",
    )
    p.add_argument("--message", help="submission message (default: roadseg <run>)")
    p.set_defaults(func=_cmd_submit)


def _add_pseudo_label(sub) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="self-training: write a teacher's road probabilities of the unlabelled tiles",
        description="Predict every unlabelled (test) tile with the teacher checkpoint(s) "
        "(an ensemble when several; add --tta; in the context of the maps like submit) and write "
        "<out>/<image name>.png, the probability x 255, plus pseudo.json saying which teacher. "
        "A student then trains on them beside the labelled tiles: roadseg fit ... "
        "--data.pseudo_labels OUT [--data.pseudo_confidence 0.8]. This uses the test images, "
        "never their labels: check that your competition's rules allow it.",
    )
    add_predictor_args(p)
    p.add_argument(
        "--data",
        help="dataset root with test/images, or a folder of unlabelled images "
        "(default: the data the checkpoint was trained on)",
    )
    p.add_argument("--out", required=True, help="folder of pseudo-labels to write")
    p.add_argument(
        "--validation",
        action="store_true",
        help="also label the checkpoint's validation tiles (imagery only; their labels stay "
        "for validation), for a student trained with --data.pseudo_validation true: it then "
        "self-trains on the validation tiles as on the test tiles, and is validated in the "
        "leaderboard's situation",
    )
    p.set_defaults(func=_cmd_pseudo_label)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict rasters of any size (GeoTIFF scenes, lists of them) into GeoTIFFs",
        description="Stream a raster chunk by chunk through overlapping windows into a tiled, "
        "compressed GeoTIFF with the input's CRS and transform; memory stays flat however "
        "large the scene. Input nodata stays nodata. Several scenes (paths, a folder, a text "
        "file of paths, a STAC Item or ItemCollection) go into the folder --out, one "
        "<scene id>.tif each, with a manifest: the same command again skips what is done, "
        "resumes what is half done, and refuses to mix in another run's outputs.",
    )
    p.add_argument(
        "scene",
        nargs="+",
        help="input raster (GeoTIFF, PNG, ...); or several, a folder of them, a .txt of "
        "paths (one per line), a STAC Item/ItemCollection .json",
    )
    p.add_argument("--out", required=True, help="GeoTIFF to write (a folder for several scenes)")
    add_predictor_args(p)
    p.add_argument(
        "--output",
        choices=["prob", "prob8", "mask"],
        default="prob",
        help="prob: float32 road probability (nodata -1); prob8: the probability in 8 bits "
        "(x 254, with its scale in the file, so GDAL and QGIS read probabilities; nodata "
        "255; a quarter of the size); mask: uint8 0/1 by the decision (nodata 255)",
    )
    p.add_argument(
        "--chunk", type=int, default=2048, help="side of the chunks read and written (default 2048)"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="predict with this many local processes, each a share of the chunks, then merge "
        "(CPU cores are shared out; on several GPUs or nodes run it under torchrun instead: "
        "torchrun --nproc-per-node N -m roadseg predict ...). Finished chunks wait in "
        "<out>.parts/: a killed run resumes when run again (default 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of each of the --processes (default: OMP_NUM_THREADS when set, else "
        "this machine's cores, shared out)",
    )
    p.add_argument(
        "--vector",
        nargs="?",
        const="",
        metavar="FILE|gpkg|geojson",
        help="also write the roads as vectors (--vector-kind: centre lines, surfaces or both; "
        "see roadseg vectorize), from the probability above the decision's pixel threshold, "
        "or from the mask: to FILE (.gpkg or .geojson), or with no file name (or only the "
        "format) as <out stem>-lines.gpkg; for a list of scenes each scene's beside its "
        "raster, <id>-lines.gpkg, and all in one layer, OUT/all-lines.gpkg",
    )
    p.add_argument("--png", help="with --vector: also draw the lines over the scene in this PNG")
    p.add_argument(
        "--cog",
        action="store_true",
        help="write Cloud-Optimized GeoTIFFs (512-px tiles, overviews) that web maps and "
        "cloud GIS read in place",
    )
    add_many_args(p)
    add_scene_args(p)
    add_vector_args(p)
    p.set_defaults(func=_cmd_predict)


def _add_vectorize(sub) -> None:
    p = sub.add_parser(
        "vectorize",
        help="turn a road probability or mask raster into centre lines (GeoPackage/GeoJSON)",
        description="Thin the road mask to one-pixel centre lines, link them into a graph of "
        "junctions and segments, drop short whiskers, simplify, and write LineStrings in the "
        "raster's CRS with length (metres; geodesic for a geographic CRS; pixels without a CRS), mean_prob (NaN for a mask) and width (the same "
        "units). Streams chunk by chunk: memory holds one chunk, and a road across chunk "
        "borders is one line.",
    )
    p.add_argument("raster", help="one-band GeoTIFF: probabilities (float) or a 0/1 or 0/255 mask")
    p.add_argument("--out", required=True, help="lines to write: .gpkg or .geojson")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="a probability raster is road above this (default %(default)s)",
    )
    p.add_argument(
        "--chunk", type=int, default=2048, help="side of the chunks read (default %(default)s)"
    )
    add_vector_args(p)
    p.add_argument("--png", help="also draw the lines in this PNG, over --image or the raster")
    p.add_argument("--image", help="imagery to draw the lines over (default: the raster itself)")
    add_quiet_arg(p)
    p.set_defaults(func=_cmd_vectorize)
