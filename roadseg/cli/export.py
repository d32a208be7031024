"""``roadseg export``: checkpoints to one ONNX file that predicts anywhere (with roadseg's
``--ckpt model.onnx``, ONNX Runtime alone, or QGIS's Deepness plugin)."""

from __future__ import annotations

import argparse

from roadseg.cli.common import add_decision_args, predict_options
from roadseg.errors import RoadsegError


def _cmd_export(args: argparse.Namespace) -> None:
    import json

    from roadseg.export import export_checkpoints, require_onnx
    from roadseg.paths import check_io

    require_onnx()
    if not args.deepness and (args.tile_size is not None or args.tile_overlap is not None):
        raise RoadsegError("--tile-size and --tile-overlap are for --deepness")
    options = predict_options(args)
    if options.exported:
        raise RoadsegError(
            "an exported file: export needs the checkpoint it was exported from", options.ckpt[0]
        )
    check_io(outputs=[args.out], protected=options.inputs)
    if args.check_data is not None:
        check_io(input_folders=[args.check_data])
    if args.int8_tolerance is not None and not args.int8:
        raise RoadsegError("--int8-tolerance is for --int8")
    if args.deepness:
        if args.int8:
            raise RoadsegError("--int8 is for the plain export; Deepness runs the fp32 file")
        return _export_deepness(args, options)
    if args.int8_tolerance is not None and not 0 <= args.int8_tolerance < 1:
        raise RoadsegError(f"--int8-tolerance {args.int8_tolerance:g}: a drop in F1, 0 to 1")
    if args.int8:
        _say_int8_speed()
    report = export_checkpoints(options, args.out, check_data=args.check_data, int8=args.int8,
                                int8_tolerance=args.int8_tolerance)  # fmt: skip
    decision = json.loads(report.metadata["roadseg_decision"])
    if report.int8:
        _print_int8(report.int8)
    print(
        f"wrote {report.path}: {report.members} member{'s' if report.members > 1 else ''} "
        f"({options.merge}{', int8' if report.int8 else ''}), "
        f"{report.path.stat().st_size / 1e6:.1f} MB; {'its fp32 graph ' if report.int8 else ''}"
        f"agrees with PyTorch to {report.max_diff:.1e} in probability on {report.checked}; "
        "decision pixel "
        f"{decision['pixel']:g} / patch {decision['patch']:g} in its metadata; predict "
        f"with it: roadseg predict SCENE --ckpt {report.path}"
    )


def _say_int8_speed() -> None:
    """Whether int8 can pay off on this CPU, said before the minutes of calibration."""
    from roadseg.quantize import vnni

    if vnni() is False:
        print("note: this CPU has no int8 dot products (AVX-512 VNNI or AVX-VNNI): the int8 "
              "file runs here at about fp32's speed or slower; it pays off on CPUs that have "
              "them (Intel since Cascade Lake, AMD since Zen 4)")  # fmt: skip


def _print_int8(record: dict) -> None:
    scores = record["validation"]
    where = f"in context ({scores['context_px']} px)" if scores["context_px"] else "alone"
    tiles = f"{scores['tiles']} tile{'s' if scores['tiles'] != 1 else ''}"
    print(f"int8: calibrated on {record['calibration']}; validation tiles {where}, {tiles}, "
          f"TTA {'on' if scores['tta'] else 'off'}, {scores['decision']}:")  # fmt: skip
    for name in ("fp32", "int8"):
        print(f"  {name}: road patch F1 {scores[name]['patch_f1']:.4f}, patch accuracy "
              f"{scores[name]['patch_accuracy']:.4f}")  # fmt: skip
    print(f"  drop in F1 {record['drop']:+.4f} (tolerance {record['tolerance']:g}); kept in "
          f"fp32: {len(record['fp32']['convolutions'])} convolutions "
          f"({record['fp32']['why']}) and every other operator")  # fmt: skip


def _export_deepness(args: argparse.Namespace, options) -> None:
    """``export --deepness``: the file for QGIS's Deepness plugin, its metadata printed."""
    from roadseg import deepness

    tile = args.tile_size if args.tile_size is not None else deepness.TILE_SIZE
    overlap = args.tile_overlap if args.tile_overlap is not None else deepness.TILE_OVERLAP
    report = deepness.export_deepness(
        options, args.out, tile=tile, overlap=overlap, check_data=args.check_data
    )
    print(
        f"wrote {report.path} for QGIS Deepness: {report.members} member"
        f"{'s' if report.members > 1 else ''} (mean), {tile}x{tile} tiles, "
        f"{report.path.stat().st_size / 1e6:.1f} MB; agrees with PyTorch to "
        f"{report.max_diff:.1e} in probability on {report.checked}. Metadata:"
    )
    for key, value in report.metadata.items():
        print(f"  {key}: {value}")
    for note in report.notes:
        print(f"note: {note}")


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write checkpoints (an ensemble) as one ONNX file that runs without roadseg",
        description="Export one or more checkpoints to ONNX (opset 18): RGB in [0, 1] of any "
        "batch, height and width in, road probability out (the ensemble's mean, and each "
        "member's); normalisation, input scaling and padding are in the graph. The "
        "decision (thresholds, with and without TTA), the training imagery and resolution, "
        "and the checkpoints' SHA-256 are in its metadata. The file is checked against "
        "PyTorch on real tiles and not written when they differ by more than 1e-4. "
        "Every predicting command takes the file as --ckpt model.onnx (no torch needed: "
        "pip install 'roadseg[predict]'); README, 'Running a model without roadseg: ONNX', "
        "shows how to run it with onnxruntime and numpy alone.",
    )
    p.add_argument("--ckpt", action="append", help="checkpoint; repeat for an ensemble")
    p.add_argument("--config", help="options file naming ckpt: and the decision (configs/predict/)")
    p.add_argument("--out", required=True, help="ONNX file to write (model.onnx)")
    p.add_argument(
        "--merge",
        choices=["mean", "vote"],
        help="how users should combine the members (recorded in the metadata; the graph "
        "gives both the mean and each member's probability) (default mean)",
    )
    p.add_argument(
        "--check-data",
        metavar="FOLDER",
        help="images the export is checked on (default: the data the checkpoint trained on)",
    )
    add_decision_args(p)
    p.add_argument(
        "--metric",
        choices=["f1", "accuracy"],
        help="record the thresholds roadseg tune found for this metric (default: tuned last)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantise the network's convolutions to int8 (ONNX Runtime static QDQ), "
        "calibrated on 16 of the checkpoint's training tiles; nothing is written when "
        "validation road patch F1 drops by more than --int8-tolerance against fp32. Faster "
        "on CPUs with int8 dot products (VNNI); predicts like any exported file",
    )
    p.add_argument(
        "--int8-tolerance",
        type=float,
        metavar="F1",
        help="with --int8: the largest drop in validation road patch F1 accepted (default 0.003)",
    )
    p.add_argument(
        "--deepness",
        action="store_true",
        help="write the file for QGIS's Deepness plugin: square tiles of --tile-size in, one "
        "road probability map out, Deepness's metadata (model_type, class_names, resolution "
        "in cm/px, tile size and overlap, seg_thresh, standardisation) filled in",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        metavar="PX",
        help="with --deepness: side of the square tiles Deepness cuts (default 512)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        metavar="PERCENT",
        help="with --deepness: overlap of Deepness's tiles, percent of the tile (default 25: "
        "512 px tiles every 384 px, a multiple of the network's grid, 64 px for cpu.yaml)",
    )
    p.set_defaults(func=_cmd_export)


def add_commands(sub) -> None:
    """The export command's parser."""
    _add_export(sub)
