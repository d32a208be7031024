"""Commands that score a checkpoint on its own validation split: tune, evaluate."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from roadseg.cli.common import add_predictor_args, add_scene_args, predict_options, refuse_idle
from roadseg.cli.prediction import submission_name
from roadseg.errors import RoadsegError


def _validation(options, ckpts: list[dict], instead: str):
    """The first checkpoint's validation tiles in context, the split and the context said;
    refused with ``instead`` when it trained on every labelled tile, and when any member
    of an ensemble trained on one of them."""
    from roadseg.evaluation import Validation

    validation = Validation(
        ckpts[0], options.margin, members=list(zip(options.ckpt, ckpts, strict=True))
    )
    if validation.tiles.empty:
        raise RoadsegError(
            f"trained without a validation split (every labelled tile trained): {instead}",
            options.ckpt[0],
        )
    for line in (validation.split_line, *validation.notes, validation.context_line):
        print(line)
    return validation


def _cmd_tune(args: argparse.Namespace) -> None:
    from roadseg.checkpoints import is_exported
    from roadseg.paths import check_io
    from roadseg.thresholds import thresholds_path

    exported = [c for c in args.ckpt or [] if is_exported(c)]
    if exported:
        raise RoadsegError(
            "an exported file holds the decision it was exported with: tune its checkpoint, "
            "then export again (evaluate scores the file)",
            exported[0],
        )
    options = predict_options(args)
    writes = not args.dry_run and options.merge != "vote"
    if writes:
        out = thresholds_path(options.ckpt[0], tta=bool(options.tta))
        check_io(outputs=[out], protected=options.inputs)
    ckpts = options.read_checkpoints()
    from roadseg.groundeval import is_scene_checkpoint

    if is_scene_checkpoint(ckpts[0]):
        from roadseg.cli.ground import tune_ground

        return tune_ground(args, options, ckpts, writes)
    validation = _validation(
        options, ckpts, "nothing to tune on; give submit the thresholds tune found for a "
        "validated run of the same config (--pixel-threshold P --patch-threshold Q)",
    )  # fmt: skip
    predictor, decision = options.predictor(ckpts)  # its clean-up is what is tuned with
    raw = validation.scores(predictor)
    setup = f"{len(ckpts)} model{'s' if len(ckpts) > 1 else ''}"
    setup += f", {options.merge}" if len(ckpts) > 1 else ""
    setup += f", TTA {'on' if options.tta else 'off'}"
    print(f"validation patch scores on {len(validation.tiles)} tiles ({setup}):")
    if options.merge == "vote":
        _print_vote(raw)
        return
    tuned = _print_thresholds(raw, decision, metric=args.metric, tta=options.tta)
    _print_spread(raw, validation.tiles)
    if not args.dry_run:
        _store(options, tuned)


def _store(options, tuned) -> None:
    """Store the thresholds tuned: a checkpoint's beside it, a mean ensemble's in its first
    member's file, keyed by its members' content (found again when they predict together)."""
    from roadseg.thresholds import store_ensemble_thresholds, store_thresholds

    mode = "with" if options.tta else "without"
    if len(options.ckpt) == 1:
        out = store_thresholds(options.ckpt[0], tuned)
        print(f"wrote {out} (what submit, predict and figures use {mode} TTA unless options "
              "are given)")  # fmt: skip
        return
    out = store_ensemble_thresholds(options.ckpt, tuned)
    print(f"wrote {out}: the thresholds of the mean of these {len(options.ckpt)} checkpoints "
          f"(by content, in any order), what submit, predict and evaluate use for it {mode} "
          "TTA unless options are given")  # fmt: skip


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.scoring import format_scores

    options = predict_options(args)
    if args.data:
        refuse_idle((args.baseline is not None, "--baseline", "a checkpoint trained on scenes "
                     "(data.scenes), without --data"))  # fmt: skip
        return _evaluate_rasters(args, options)
    refuse_idle(*((getattr(args, o) is not None, f"--{o.replace('_', '-')}",
                   "--data (the checkpoint's own tiles are read as it trained on them)")
                  for o in ("bands", "input_range", "resolution")))  # fmt: skip
    ckpts = options.read_checkpoints()
    from roadseg.groundeval import is_scene_checkpoint

    if is_scene_checkpoint(ckpts[0]):
        from roadseg.cli.ground import evaluate_ground

        return evaluate_ground(args, options, ckpts)
    refuse_idle((args.baseline is not None, "--baseline", "a checkpoint trained on scenes "
                 "(data.scenes): tiles are compared with roadseg reproduce"))  # fmt: skip
    out = Path(args.out or Path("submissions") / submission_name(options, "validation"))
    check_io(outputs=[out], protected=options.inputs)
    validation = _validation(
        options, ckpts, "no tile it has not seen to score it on; evaluate a validated run of "
        "the same config",
    )  # fmt: skip
    predictor, decision = options.predictor(ckpts)
    scores = validation.scores(predictor).with_clean(decision.clean)
    tiles = validation.tiles
    _write_labels(tiles["tile_id"], scores.probs, decision, out)
    truth = Path(tiles["mask"].iloc[0]).parent
    print(f"wrote {out}: the {len(tiles)} validation tiles of {options.ckpt[0]} (none trained "
          f"it), {decision.describe()}; roadseg score {out} --truth {truth} scores it again")  # fmt: skip
    tuned_here = options.merge != "vote" and _print_honest(scores, decision, options)
    print(f"the CSV's labels ({decision.describe()}"
          f"{'; thresholds tuned on these tiles: optimistic' if tuned_here else ''}):")  # fmt: skip
    print(format_scores(scores.scores(decision.pixel, decision.patch)))


def _print_honest(scores, decision, options) -> bool:
    """Road patch F1 and patch accuracy at thresholds not tuned on the tiles scored (the
    honest figure: cross-fitted), at thresholds tuned on them (optimistic) and at the
    defaults, each with the decision's clean-up; returns whether the CSV's thresholds are
    those tuned on these tiles (stored by tune, not overridden)."""
    stored = options.stored()[2]
    metric = options.metric or (stored.metric if stored else "f1")
    tuned = scores.tune(metric=metric)
    honest = scores.cross_fit(metric)
    rows = [
        ("honest: tuned on the other half (cross-fitted)", honest.scores if honest else None,
         honest.describe() if honest else "needs 2 tiles or more: the defaults are honest"),
        ("tuned on these tiles: optimistic", scores.scores(tuned.pixel, tuned.patch),
         f"{decision.replace(pixel=tuned.pixel, patch=tuned.patch).describe()}, as tune finds"),
        ("defaults", scores.scores(), decision.replace(pixel=0.5, patch=0.25).describe()),
    ]  # fmt: skip
    print(f"validation scores by where the thresholds come from (tuned for {metric}):")
    for name, values, how in rows:
        figures = (f"road patch F1 {values['patch_f1']:.4f}, patch accuracy "
                   f"{values['patch_accuracy']:.4f}" if values else "-")  # fmt: skip
        print(f"  {name:<47} {figures} ({how})")
    given = options.pixel_threshold is not None or options.patch_threshold is not None
    return stored is not None and not given


def _evaluate_rasters(args: argparse.Namespace, options) -> None:
    """``evaluate --data``: labelled rasters of any source, each predicted alone as
    ``predict`` reads a scene, scored on their own grid (patch and pixel)."""
    from roadseg.evaluation import LabelledRasters
    from roadseg.paths import check_io
    from roadseg.scoring import format_scores

    rasters = LabelledRasters(args.data)
    out = Path(args.out or Path("submissions") / submission_name(options, Path(args.data).name))
    check_io(outputs=[out], protected=options.inputs)
    predictor, decision = options.predictor()
    read = options.read_options()
    for line in rasters.reading(predictor, read):
        print(f"{rasters.tiles['image'].iloc[0]}: {line}")
    scores = rasters.scores(predictor, read).with_clean(decision.clean)
    _write_labels(rasters.tiles["tile_id"], scores.probs, decision, out)
    every = scores.all_scores(decision.pixel, decision.patch)
    p, r = every["precision"], every["recall"]
    pixel_f1 = 2 * p * r / (p + r) if p + r else 0.0
    print(f"wrote {out}: {len(rasters.tiles)} labelled rasters of {args.data}, each alone, "
          f"{decision.describe()}")  # fmt: skip
    print(format_scores(scores.scores(decision.pixel, decision.patch)))
    print(
        f"  pixel road F1: {pixel_f1:.4f} (IoU {every['iou']:.4f}, precision {p:.4f}, recall {r:.4f})"
    )


def _write_labels(tile_ids, probs, decision, out: Path) -> None:
    """Each tile's patch labels by ``decision`` as the rows of a submission CSV."""
    from roadseg.submission import tile_rows, write_submission

    labels = (decision.labels(prob) for prob in probs)
    rows = (row for t, lab in zip(tile_ids, labels, strict=True) for row in tile_rows(int(t), lab))
    write_submission(rows, out)


def _print_vote(scores) -> None:
    from roadseg.scoring import format_scores

    print("majority vote of the members' patch labels:")
    print(format_scores(scores.scores(0.5, 0.5)))
    print("(a vote's thresholds are the members' own: tune each member alone)")


def _print_thresholds(raw, decision, *, metric: str, tta: bool):
    """Scores at the defaults, at the decision's clean-up and at the tuned thresholds, and
    APLS; returns the tuned :class:`~roadseg.thresholds.Thresholds`."""
    from roadseg.scoring import format_scores

    columns = {"default (pixel 0.5, patch 0.25)": raw.scores()}
    scores = raw.with_clean(decision.clean)
    if decision.postprocessing:
        columns[decision.describe()] = scores.scores(decision.pixel, decision.patch)
    tuned = scores.tune(close_gaps=decision.close_gaps, min_area=decision.min_area, metric=metric)
    tuned = dataclasses.replace(tuned, tta=bool(tta))
    columns[f"tuned for {metric} on these tiles ({tuned.decision().describe()}): optimistic"] = (
        scores.scores(tuned.pixel, tuned.patch)
    )
    for name, values in columns.items():
        print(f"{name}:")
        print(format_scores(values))
    honest = scores.cross_fit(metric)
    if honest is not None:
        print(f"honest (thresholds scored on tiles they were not tuned on; {honest.describe()}): "
              f"road patch F1 {honest.scores['patch_f1']:.4f}, patch accuracy "
              f"{honest.scores['patch_accuracy']:.4f}")  # fmt: skip
    print(f"APLS of the centre lines at pixel {tuned.pixel:g} (routes; roadseg.apls): "
          f"{scores.apls(tuned.pixel):.4f}")  # fmt: skip
    return tuned


def _span(interval: tuple[float, float]) -> str:
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def _print_spread(raw, tiles) -> None:
    """Road patch F1 by ring, the bootstrap intervals, and the tiles with the lowest F1."""
    rings, spread = raw.ring_f1(), raw.intervals()
    print(
        "road patch F1 by ring of patches from the tile border (0 = border; pixel 0.5, patch "
        "0.25), with the middle 95% of a bootstrap over tiles: "
        + ", ".join(f"{k}: {v:.4f} ({_span(spread[f'ring {k}'])})" for k, v in rings.items())
    )
    print(
        f"bootstrap over tiles ({len(tiles)} validation tiles drawn with replacement 2000 times; "
        "how far other tiles of the same maps could move the scores at pixel 0.5, patch "
        f"0.25): road patch F1 {_span(spread['f1'])}, patch accuracy "
        f"{_span(spread['accuracy'])}"
    )
    lowest = sorted(
        zip(raw.per_tile(), tiles["image"], strict=True), key=lambda t: t[0]["patch_f1"]
    )
    print(
        "lowest road patch F1 of a tile (pixel 0.5, patch 0.25; road patches found of true, "
        "predicted): "
        + ", ".join(f"{Path(str(image)).stem} {s['patch_f1']:.3f} ({s['hit']} of {s['true']}, "
                    f"{s['predicted']})" for s, image in lowest[:5])
    )  # fmt: skip


def add_commands(sub) -> None:
    """The scoring commands' parsers."""
    _add_tune(sub)
    _add_evaluate(sub)


def _add_tune(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="find the thresholds that maximise validation road F1 (or patch accuracy) and store them by the checkpoint",
        description="Predict the validation tiles of the checkpoint's own split, search the pixel "
        "and patch thresholds on a grid, print patch accuracy (the leaderboard's number), road "
        "patch F1, background F1, precision and recall at the default and at the tuned "
        "thresholds, and write <ckpt>.thresholds.json (with whether TTA was on and the "
        "checkpoint's hash: used for that checkpoint only), which submit, predict and figures "
        "then use. An ensemble's (mean) are stored in its first member's file, keyed by its "
        "members' content, and used when the same checkpoints predict together. A checkpoint "
        "trained on scenes (data.scenes) is tuned on its held-out blocks of ground (evaluate "
        "then scores it on the blocks its thresholds were tuned on: optimistic).",
    )
    add_predictor_args(p, metric=False)
    p.add_argument("--dry-run", action="store_true", help="print the scores, write nothing")
    p.add_argument(
        "--metric",
        choices=["f1", "accuracy"],
        default="f1",
        help="what the thresholds maximise: f1 (road patch F1, the course's score) or accuracy "
        "(patch accuracy, what the Kaggle leaderboard computes; it prefers fewer road "
        "patches) (default %(default)s)",
    )
    p.set_defaults(func=_cmd_tune)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint (or an ensemble) honestly: on its own validation split, as "
        "submit predicts, and write that CSV",
        description="Predict the validation tiles of the checkpoint's own split (tiles it "
        "never trained on) exactly as submit predicts the test tiles (context, TTA, ensemble, "
        "stored thresholds and clean-up), write their rows as a submission CSV and print "
        "patch accuracy (the leaderboard's number), road patch F1 and the rest. roadseg "
        "score of that CSV against the training masks gives the same figures. Thresholds "
        "tuned on these tiles read high on them, so beside the CSV's figures it prints road "
        "F1 and accuracy at thresholds not tuned on the tiles they score (the honest figure, "
        "cross-fitted: tuned on one half of the tiles, scored on the other, both ways, halves "
        "by a fixed seed), at thresholds tuned on these tiles (optimistic) and at the defaults.",
    )
    add_predictor_args(p)
    p.add_argument("--out", help="CSV to write (default: submissions/<run>-validation[-tta].csv)")
    p.add_argument(
        "--data",
        metavar="FOLDER",
        help="score on these labelled rasters instead (images/ and groundtruth/, any "
        "source: GeoTIFFs of other resolutions, bit depths, band orders), each predicted "
        "alone as roadseg predict reads a scene (--bands, --input-range, --resolution), and "
        "scored on its own grid: patch scores and pixel road F1",
    )
    p.add_argument(
        "--baseline",
        metavar="CKPT",
        help="a checkpoint trained on scenes (data.scenes) is scored on its held-out blocks "
        "of ground; this model (the one it was fine-tuned from, say) is scored on the same "
        "blocks beside it, with a paired bootstrap of the difference; --out then writes the "
        "scores as JSON",
    )
    add_scene_args(p)
    p.set_defaults(func=_cmd_evaluate)
