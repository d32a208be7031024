"""Commands on data and submissions: validate-submission, score, masks-to-submission, index,
tables, maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from roadseg.cli.common import add_quiet_arg
from roadseg.errors import RoadsegError


def _cmd_validate_submission(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.submission import validate_submission

    check_io(inputs=[args.file], input_folders=[args.images])

    print(f"{args.file}: valid, {validate_submission(args.file, args.images)}")


def _cmd_score(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.scoring import format_scores, score_submission

    if Path(args.submission).is_dir():  # predicted masks: the patch scores and APLS
        from roadseg.scoring import score_masks

        check_io(input_folders=[args.submission, args.truth])
        scores, tiles, patches = score_masks(args.submission, args.truth)
    else:
        check_io(inputs=[args.submission], input_folders=[args.truth])
        scores, tiles, patches = score_submission(args.submission, args.truth)
    from roadseg.index import list_rasters

    left = len(list_rasters(args.truth)) - tiles
    print(f"{args.submission}: {tiles} tiles, {patches:,} patches scored against {args.truth}"
          + (f" ({left} masks there have no rows in it and are not scored)" if left else ""))  # fmt: skip
    print(format_scores(scores))


def _cmd_masks_to_submission(args: argparse.Namespace) -> None:
    from roadseg.index import list_rasters
    from roadseg.paths import check_io
    from roadseg.submission import masks_to_submission

    check_io(input_folders=[args.mask_dir])
    check_io(outputs=[args.out], protected=list_rasters(args.mask_dir))
    n = masks_to_submission(args.mask_dir, args.out, threshold=args.patch_threshold)
    print(f"wrote {args.out}: {n:,} rows")


def _cmd_index(args: argparse.Namespace) -> None:
    from roadseg.index import scan
    from roadseg.paths import check_io

    frame = scan(args.root)
    if args.csv:
        check_io(outputs=[args.csv], protected=[*frame["image"], *frame["mask"].dropna()])
    if args.check:
        from roadseg.index import check_tiles

        check_tiles(frame, progress=not args.quiet)
    summary = frame.groupby(["source", "split"]).agg(
        tiles=("tile_id", "size"),
        first_id=("tile_id", "min"),
        last_id=("tile_id", "max"),
        sizes=(
            "height",
            lambda s: ", ".join(
                sorted({f"{h}x{w}" for h, w in zip(s, frame.loc[s.index, "width"], strict=True)})
            ),
        ),
    )
    print(summary.to_string())
    if args.check:
        print(f"checked {len(frame)} tiles: all readable")
    if args.csv:
        from roadseg.io import atomic_path

        with atomic_path(args.csv) as tmp:
            frame.to_csv(tmp, index=False)
        print(f"wrote {args.csv}")


def _cmd_maps(args: argparse.Namespace) -> None:
    from roadseg.maps import write_maps
    from roadseg.paths import check_io

    check_io(input_folders=[args.root, *args.extra], output_folders=[args.out])
    table = write_maps([args.root, *args.extra], args.out, val_fraction=args.val_fraction,
                       seed=args.seed)  # fmt: skip
    sizes = table.groupby("map").agg(
        tiles=("map", "size"), cols=("col", "max"), rows=("row", "max")
    )
    shared = sizes[sizes["tiles"] > 1]
    for m, row in shared.iterrows():
        print(f"map {m}: {row.tiles} tiles on {row.cols + 1} x {row.rows + 1}")
    print(f"{int((sizes['tiles'] == 1).sum())} tiles stand alone")
    print(f"wrote {Path(args.out) / 'layout.csv'} and {len(shared)} maps (PNG, GeoTIFF)")


def _cmd_tables(args: argparse.Namespace) -> None:
    from roadseg.tables import update_tables

    changed = update_tables(args.markdown, check=args.check)
    if args.check and changed:
        raise RoadsegError(
            f"tables out of date: {', '.join(changed)}; run roadseg tables {args.markdown}",
            args.markdown,
        )
    verb = "would change" if args.check else "rewrote"
    print(
        f"{args.markdown}: {verb} {len(changed)} table block(s)"
        + (f": {', '.join(changed)}" if changed else "")
    )


def add_commands(sub) -> None:
    """The data commands' parsers."""
    _add_validate_submission(sub)
    _add_score(sub)
    _add_masks_to_submission(sub)
    _add_index(sub)
    _add_tables(sub)
    _add_maps(sub)
    _add_labels(sub)


def _add_validate_submission(sub) -> None:
    p = sub.add_parser(
        "validate-submission",
        help="check a CSV against the test tiles it covers",
        description="Check the header, that every patch id of every test tile is present "
        "exactly once, that no other id is, and that every prediction is 0 or 1.",
    )
    p.add_argument("file", help="submission CSV")
    p.add_argument(
        "--images", required=True, help="folder of test images, or a dataset root with test/images"
    )
    p.set_defaults(func=_cmd_validate_submission)


def _add_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score a submission CSV (or predicted masks) against ground-truth masks",
        description="Turn every mask of TRUTH into patch labels with the competition's rule "
        "(raw grey levels scaled to [0, 1], a 16x16 patch is road when its mean is above "
        "0.25) and compare the submission's rows of those tiles with them. Prints patch "
        "accuracy (what the Kaggle leaderboard computes) and road patch F1 (what the course "
        "calls the score), background F1, precision and recall. Given a folder of predicted "
        "masks instead of a CSV, also APLS: how well the routes along the predicted centre "
        "lines match the true ones (roadseg.apls).",
    )
    p.add_argument(
        "submission", help="submission CSV (id,prediction), or a folder of predicted masks"
    )
    p.add_argument(
        "--truth", required=True, help="folder of ground-truth masks (white = road), one per tile"
    )
    p.set_defaults(func=_cmd_score)


def _add_masks_to_submission(sub) -> None:
    p = sub.add_parser(
        "masks-to-submission",
        help="turn a folder of mask images into a submission CSV",
        description="Exactly what the competition's mask_to_submission.py does: grey levels "
        "scaled to [0, 1], a 16x16 patch is 1 when its mean is above 0.25, the tile id is "
        "the last number in the file name.",
    )
    p.add_argument("mask_dir", help="folder of mask images (white = road)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument(
        "--patch-threshold", type=float, default=0.25, help="road share of a patch (default 0.25)"
    )
    p.set_defaults(func=_cmd_masks_to_submission)


def _add_index(sub) -> None:
    p = sub.add_parser(
        "index",
        help="show the tiles roadseg finds under a dataset root",
        description="Scan a dataset root (CIL 2020/2022 layout, images/ + groundtruth/, "
        "or a plain folder of images) and summarise its tiles.",
    )
    p.add_argument("root", help="dataset root")
    p.add_argument("--csv", help="also write the full tile index to this CSV")
    p.add_argument(
        "--check",
        action="store_true",
        help="decode every image and mask (finds corrupt files, "
        "0/1 or colour masks, out-of-range values) before a run does",
    )
    add_quiet_arg(p)
    p.set_defaults(func=_cmd_index)


def _add_tables(sub) -> None:
    p = sub.add_parser(
        "tables",
        help="rewrite the README's results tables from the results/ files they name",
        description="Every block <!-- table: PATH --> ... <!-- /table --> of MARKDOWN is "
        "replaced by the contents of PATH (relative to MARKDOWN), e.g. results/cpu/table.md "
        "that make reproduce PROFILE=cpu writes, so the README's numbers are the files' numbers.",
    )
    p.add_argument(
        "markdown", nargs="?", default="README.md", help="file to update (default %(default)s)"
    )
    p.add_argument(
        "--check", action="store_true",
        help="change nothing; fail (exit 2) naming the blocks that differ from their files",
    )  # fmt: skip
    p.set_defaults(func=_cmd_tables)


def _add_maps(sub) -> None:
    p = sub.add_parser(
        "maps",
        help="place every tile on the maps it was cut from (edge matching) and draw the maps",
        description="Match tile edges to place the tiles of ROOT (and of --extra folders, "
        "e.g. test tiles released later) on their maps. Writes OUT/layout.csv (tile id, "
        "file, split, map, col, row), OUT/map_<k>.png (each map at reduced size, tiles "
        "outlined by split, with a legend), and OUT/map_<k>_image.tif and _labels.tif "
        "(the map's pixels and known labels, for a GIS program). Tiles that fit nowhere "
        "stand alone and get no map files.",
    )
    p.add_argument("root", help="dataset root (e.g. data/cil-2022)")
    p.add_argument("--extra", nargs="*", default=[], help="more folders of tiles to place")
    p.add_argument("--out", required=True, help="folder for the outputs")
    p.add_argument(
        "--val-fraction", type=float, default=0.2,
        help="validation share marked on the maps, as the training configs split (default 0.2)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    p.set_defaults(func=_cmd_maps)


def _cmd_labels(args: argparse.Namespace) -> None:
    from roadseg.io import open_scene
    from roadseg.labels import VectorLabels, Widths, write_label_raster
    from roadseg.paths import check_io

    inputs = [args.scene, args.vectors, *([args.aoi] if args.aoi else [])]
    check_io(inputs=inputs, outputs=[args.out])
    widths = Widths.parse(args.width, args.width_column, args.width_by)
    with open_scene(args.scene) as src:
        labels = VectorLabels(args.vectors, src, widths=widths, aoi=args.aoi, layer=args.layer)
        print(labels.describe())
        shares = write_label_raster(labels, args.out)
    print(f"wrote {args.out}: road on {shares['road_share']:.1%} of the labelled ground, "
          f"which covers {shares['covered_share']:.1%} of the scene (the rest is 255, "
          "its nodata: not trained on)")  # fmt: skip


def _add_labels(sub) -> None:
    p = sub.add_parser(
        "labels",
        help="burn road lines (or polygons) onto a scene's grid: the mask a model learns from",
        description="Read road lines or polygons (GeoPackage, GeoJSON, Shapefile; any CRS), "
        "buffer each line to its road width in metres on the ground (whatever the CRS of the "
        "lines or the scene: a local equidistant projection), and write them on SCENE's grid "
        "as a uint8 GeoTIFF: 1 road, 0 background, 255 (nodata) outside the labels' "
        "coverage (--aoi, else the labels' bounding box), which is not trained on as "
        "background. Written window by window (flat memory) and atomically.",
    )
    p.add_argument("scene", help="the GeoTIFF the labels belong to")
    p.add_argument("vectors", help="road lines or polygons (.gpkg, .geojson, .shp, ...)")
    p.add_argument("--out", required=True, help="the label raster to write (.tif)")
    p.add_argument("--layer", help="the layer of a multi-layer file (default: the first)")
    p.add_argument("--width", type=float, help="road width in metres of every line (default 6)")
    p.add_argument("--width-column", help="a numeric attribute with each line's width in metres")
    p.add_argument(
        "--width-by",
        metavar="ATTR=VALUE:M,...",
        help="a width per attribute value, e.g. highway=motorway:20,primary:12,residential:7 "
        "(others: --width)",
    )
    p.add_argument("--aoi", help="polygons of the ground the labels cover (default: their box)")
    p.set_defaults(func=_cmd_labels)
