"""The ``roadseg`` command: Lightning's fit/validate/test with YAML configs, plus submissions.

Errors a user can cause end in one line (``roadseg: error: <file>: <problem>``) and
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import sys
import warnings
from pathlib import Path

from roadseg import __version__
from roadseg.errors import RoadsegError
from roadseg.patches import CONTEXT_MARGIN
from roadseg.training import LIGHTNING_COMMANDS, run_lightning

# Options of submit, tune and predict, with their defaults: each comes from the command line,
# else from the --config file, else from here.
PREDICT_DEFAULTS = {
    "tta": False, "merge": "mean", "window": 1024, "overlap": 128, "batch_size": 4,
    "device": "auto", "precision": "auto", "pixel_threshold": None, "patch_threshold": None,
    "close_gaps": None, "min_area": None, "context": None,
}  # fmt: skip
PREDICT_TYPES = {
    "tta": (bool,), "merge": (str,), "window": (int,), "overlap": (int,), "batch_size": (int,),
    "device": (str,), "precision": (str,), "pixel_threshold": (float, int),
    "patch_threshold": (float, int), "close_gaps": (int,), "min_area": (int,), "context": (int,),
}  # fmt: skip


def _checkpoint_of(name: str) -> str:
    """A checkpoint path, or a training config's best checkpoint (``runs/<stem>/...``)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        return name
    from roadseg.paths import load_yaml

    config = load_yaml(path, "training config") or {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    root = trainer.get("default_root_dir") if isinstance(trainer, dict) else None
    return str(Path(root or Path("runs") / path.stem) / "checkpoints" / "best.ckpt")


def _apply_predict_config(args: argparse.Namespace) -> None:
    """Fill the options not given on the command line from ``--config``, then the defaults."""
    values: dict = {}
    if args.config:
        from roadseg.paths import load_yaml

        path = Path(args.config)
        values = load_yaml(path, "options file") or {}
        if not isinstance(values, dict):
            raise RoadsegError("expected a mapping of option: value", path)
        unknown = sorted(set(values) - set(PREDICT_DEFAULTS) - {"ckpt"})
        if unknown:
            raise RoadsegError(
                f"unknown option {unknown[0]!r}; known: ckpt, {', '.join(PREDICT_DEFAULTS)}", path
            )
    for key, value in values.items():
        kinds = PREDICT_TYPES.get(key)
        if (
            kinds
            and value is not None
            and not (
                isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            )
        ):
            names = " or ".join(k.__name__ for k in kinds)
            raise RoadsegError(f"option {key}: {value!r} is not {names}", args.config)
    for key, default in PREDICT_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, values.get(key, default))
    if not args.ckpt:
        ckpt = values.get("ckpt")
        args.ckpt = [ckpt] if isinstance(ckpt, str) else ckpt
        if args.ckpt is not None and (
            not isinstance(args.ckpt, list)
            or not all(isinstance(c, str) and c.strip() for c in args.ckpt)
        ):
            raise RoadsegError("ckpt: must be a checkpoint path or a list of them", args.config)
        args.ckpt = args.ckpt or []
    if not args.ckpt:
        raise RoadsegError(
            "no checkpoint: pass --ckpt (repeat for an ensemble) or put ckpt: in --config"
        )
    args.ckpt = [_checkpoint_of(str(c)) for c in args.ckpt]
    for ckpt in args.ckpt:
        _check_checkpoint_path(ckpt)


def _check_checkpoint_path(path: str) -> None:
    """A missing checkpoint, named with the command that would make it, before torch loads."""
    from roadseg.paths import check_input

    p = Path(path)
    if not p.exists():
        hint = "train first (make train), or pass the path of a trained checkpoint"
        if p.parent.name == "checkpoints":
            config = Path("configs") / f"{p.parent.parent.name}.yaml"
            if config.is_file():
                hint = f"train first: make train CONFIG={config}"
        raise RoadsegError(f"checkpoint not found ({hint})", p)
    check_input(p, what="checkpoint")


def _predictor(
    args: argparse.Namespace, ckpts: list[dict] | None = None, *, retuning: bool = False
):
    """The Predictor over the checkpoints named by ``--ckpt`` (an ensemble when several),
    the checkpoints' contents, and the decision that turns its maps into masks and labels.

    ``ckpts``: the checkpoints' contents when already read (:func:`_read_checkpoints`).
    ``retuning``: the stored thresholds are about to be replaced (``tune``) or not used
    (``pseudo-label``), so whether they were tuned with TTA does not matter.
    """
    from roadseg.predict import Predictor, load_task

    ckpts = _read_checkpoints(args) if ckpts is None else ckpts
    tasks = [load_task(p, ckpt=c) for p, c in zip(args.ckpt, ckpts, strict=True)]
    decisions = [_decision(args, p, tta=None if retuning else args.tta) for p in args.ckpt]
    predictor = Predictor(
        tasks, window=args.window, overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
        device=args.device, precision=args.precision, progress=not args.quiet, merge=args.merge,
        decisions=[d for d, _ in decisions],
    )  # fmt: skip
    decision, origin = predictor.output_decision, "majority vote of the members' patch labels"
    if decision is None:
        decision, origin = decisions[0]
    print(f"decision: {decision.describe()} ({origin})")
    if args.merge == "vote":
        for path, (d, where) in zip(args.ckpt, decisions, strict=True):
            print(f"  member {path}: {d.describe()} ({where})")
    return predictor, ckpts, decision


def _context(args: argparse.Namespace, roots: list, tiles) -> tuple[object | None, int]:
    """(MapIndex, margin) for predicting ``tiles`` in the context of their maps (see
    :func:`roadseg.maps.context_for`), and a line saying what it is."""
    from roadseg.maps import context_for

    maps, margin, line = context_for(
        roots, tiles, CONTEXT_MARGIN if args.context is None else args.context
    )
    print(line)
    return maps, margin


def _read_checkpoints(args: argparse.Namespace) -> list[dict]:
    """The contents of every ``--ckpt`` (weights not yet in a model)."""
    from roadseg.predict import read_checkpoint

    return [read_checkpoint(p) for p in args.ckpt]


def _inputs_of(args: argparse.Namespace) -> list[str]:
    """The files a predicting command reads besides its images: checkpoints, options file."""
    return [*args.ckpt, *([args.config] if args.config else [])]


def _test_tiles(args: argparse.Namespace, ckpts: list[dict]):
    """(root the checkpoint trained on, root of the tiles to predict, index of those
    unlabelled tiles): the tiles of ``--data``, else of the checkpoint's own dataset."""
    from roadseg.index import scan
    from roadseg.predict import trained_root

    trained_on = trained_root(ckpts[0])
    data = args.data if args.data is not None else trained_on
    if data is None:
        raise RoadsegError(
            "checkpoint does not say which data it was trained on; pass --data", args.ckpt[0]
        )
    frame = scan(data)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise RoadsegError(
            "no unlabelled test images found (expected test/images/ or a folder of images)", data
        )
    return trained_on, data, test


def _cmd_pseudo_label(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.pseudo import pseudo_label_paths, write_pseudo_labels

    _apply_predict_config(args)
    check_io(output_folders=[args.out], protected=_inputs_of(args))
    if args.data is not None:
        check_io(input_folders=[args.data])
    ckpts = _read_checkpoints(args)
    trained_on, data, test = _test_tiles(args, ckpts)
    validation = 0
    if args.validation:
        import pandas as pd

        from roadseg.thresholds import validation_frame

        val = validation_frame(ckpts[0])
        if val.empty:
            raise RoadsegError(
                "trained without a validation split: no validation tiles to label "
                "(leave out --validation)",
                args.ckpt[0],
            )
        validation = len(val)
        test = pd.concat([test, val[test.columns]], ignore_index=True)
    outs = pseudo_label_paths(test, args.out)
    check_io(outputs=outs, protected=[*_inputs_of(args), *test["image"]])
    maps, margin = _context(args, [trained_on, data], test)
    predictor, _, _ = _predictor(args, ckpts, retuning=True)  # probabilities, no decision
    about = write_pseudo_labels(
        predictor, test, args.out, teacher=args.ckpt, context=maps, margin=margin,
        validation=validation,
    )  # fmt: skip
    print(
        f"wrote {len(outs)} pseudo-labels (teacher probability x 255) to {args.out}"
        + (f", {validation} of them of the validation tiles" if validation else "")
        + f": {100 * about['road_share']:.1f}% of their pixels above 0.5; train a student with "
        f"--data.pseudo_labels {args.out}"
        + (" --data.pseudo_validation true" if validation else "")
    )


def _cmd_submit(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io

    _apply_predict_config(args)
    ckpt_path = Path(args.ckpt[0])
    data = args.data
    if args.out:  # a bad --out is refused before anything is read
        check_io(outputs=[args.out], protected=_inputs_of(args))
    if data is not None:
        check_io(input_folders=[data])
    ckpts = _read_checkpoints(args)  # torch is imported from here on
    trained_on, data, test = _test_tiles(args, ckpts)
    run = (
        ckpt_path.resolve().parent.parent.name
        if ckpt_path.parent.name == "checkpoints"
        else ckpt_path.stem
    )
    out = (
        Path(args.out) if args.out else Path("submissions") / f"{run}-{test['source'].iloc[0]}.csv"
    )
    check_io(outputs=[out], protected=[*_inputs_of(args), *test["image"]])
    maps, margin = _context(args, [trained_on, data], test)
    predictor, ckpts, decision = _predictor(args, ckpts)
    from roadseg.submission import tile_rows, validate_submission, write_submission

    def rows():
        for row, prob in predictor.predict_index(test, context=maps, margin=margin):
            yield from tile_rows(int(row["tile_id"]), decision.labels(prob))

    write_submission(rows(), out)
    report = validate_submission(out, test)
    print(f"wrote {out}: {report}")
    if args.upload:
        from roadseg.kaggle import upload

        print(upload(out, args.competition, args.message or f"roadseg {run}"))


def _decision(args: argparse.Namespace, ckpt: str, *, tta: bool | None = None):
    """(Decision, where from) of one checkpoint: the options given (command line or
    --config), else what ``roadseg tune`` stored beside the checkpoint, else the defaults.

    ``tta``: whether the maps it will decide on use TTA; a note is printed when the stored
    thresholds were tuned otherwise (``None``: no such maps, no note).
    """
    from roadseg.thresholds import stored_decision

    base, origin, tuned = stored_decision(ckpt)
    if tuned is not None and None not in (tuned.tta, tta) and tuned.tta != tta:
        print(
            f"note: {ckpt}: thresholds were tuned {'with' if tuned.tta else 'without'} TTA and "
            f"are used {'with' if tta else 'without'} it; for the best match run "
            f"roadseg tune{' --tta' if tta else ''} again"
        )
    given = {
        "pixel": args.pixel_threshold, "patch": args.patch_threshold,
        "close_gaps": args.close_gaps, "min_area": args.min_area,
    }  # fmt: skip
    if any(v is not None for v in given.values()):
        origin = f"{origin}, overridden by the options given"
    return base.replace(**given), origin


def _span(interval: tuple[float, float]) -> str:
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def _cmd_tune(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.scoring import format_scores
    from roadseg.thresholds import ValidationScores, thresholds_path, validation_frame

    _apply_predict_config(args)
    writes = not args.dry_run and len(args.ckpt) == 1 and args.merge != "vote"
    if writes:
        check_io(outputs=[thresholds_path(args.ckpt[0])], protected=_inputs_of(args))
    ckpts = _read_checkpoints(args)
    val = validation_frame(ckpts[0])
    if val.empty:
        raise RoadsegError(
            "trained without a validation split (every labelled tile trained): nothing to tune "
            "on; give submit the thresholds tune found for a validated run of the same config "
            "(--pixel-threshold P --patch-threshold Q)",
            args.ckpt[0],
        )
    from roadseg.predict import trained_root

    maps, margin = _context(args, [trained_root(ckpts[0])], val)
    predictor, ckpts, decision = _predictor(args, ckpts, retuning=True)
    probs = [prob for _, prob in predictor.predict_index(val, context=maps, margin=margin)]
    setup = f"{len(ckpts)} model{'s' if len(ckpts) > 1 else ''}"
    setup += f", {args.merge}" if len(ckpts) > 1 else ""
    setup += f", TTA {'on' if args.tta else 'off'}"
    print(f"validation patch scores on {len(val)} tiles ({setup}):")
    if args.merge == "vote":
        scores = ValidationScores(probs, list(val["mask"]))
        print("majority vote of the members' patch labels:")
        print(format_scores(scores.scores(0.5, 0.5)))
        print("(a vote's thresholds are the members' own: tune each member alone)")
        return
    raw = ValidationScores(probs, list(val["mask"]))
    columns = {"default (pixel 0.5, patch 0.25)": raw.scores()}
    scores = raw.with_clean(decision.clean)
    if decision.postprocessing:
        columns[decision.describe()] = scores.scores(decision.pixel, decision.patch)
    tuned = scores.tune(
        close_gaps=decision.close_gaps, min_area=decision.min_area, metric=args.metric
    )
    tuned = dataclasses.replace(tuned, tta=bool(args.tta))
    columns[f"tuned for {args.metric} ({tuned.decision().describe()})"] = scores.scores(
        tuned.pixel, tuned.patch
    )
    for name, values in columns.items():
        print(f"{name}:")
        print(format_scores(values))
    print(f"APLS of the centre lines at pixel {tuned.pixel:g} (routes; roadseg.apls): "
          f"{scores.apls(tuned.pixel):.4f}")  # fmt: skip
    rings, spread = raw.ring_f1(), raw.intervals()
    print(
        "road patch F1 by ring of patches from the tile border (0 = border; pixel 0.5, patch "
        "0.25), with the middle 95% of a bootstrap over tiles: "
        + ", ".join(f"{k}: {v:.4f} ({_span(spread[f'ring {k}'])})" for k, v in rings.items())
    )
    print(
        f"bootstrap over tiles ({len(val)} validation tiles drawn with replacement 2000 times; "
        "how far other tiles of the same maps could move the scores at pixel 0.5, patch "
        f"0.25): road patch F1 {_span(spread['f1'])}, patch accuracy "
        f"{_span(spread['accuracy'])}"
    )
    tiles = sorted(zip(raw.per_tile(), val["image"], strict=True), key=lambda t: t[0]["patch_f1"])
    print(
        "lowest road patch F1 of a tile (pixel 0.5, patch 0.25; road patches found of true, "
        "predicted): "
        + ", ".join(f"{Path(str(image)).stem} {s['patch_f1']:.3f} ({s['hit']} of {s['true']}, "
                    f"{s['predicted']})" for s, image in tiles[:5])
    )  # fmt: skip
    if len(ckpts) > 1:
        print("(an ensemble's thresholds are printed, not stored: pass them to submit as options)")
    elif not args.dry_run:
        out = thresholds_path(args.ckpt[0])
        tuned.save(out)
        print(f"wrote {out} (submit, predict and figures use it unless options are given)")


def _cmd_predict(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io

    _apply_predict_config(args)
    check_io(inputs=[args.scene], outputs=[args.out], protected=_inputs_of(args))
    from roadseg.io import raster_shape

    raster_shape(args.scene)  # a file that is no raster fails here, before the model loads
    if args.vector:
        from roadseg.vectors import vector_driver

        pictures = [args.png] if args.png else []
        check_io(
            outputs=[args.vector, *pictures], protected=[args.scene, args.out, *_inputs_of(args)]
        )
        vector_driver(args.vector)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if args.processes < 1:
        raise RoadsegError(f"--processes must be at least 1, got {args.processes}")
    if world > 1 and args.processes > 1:
        raise RoadsegError("started by torchrun: leave out --processes (torchrun sets them)")
    if args.processes > 1:
        decision = _predict_processes(args)
    elif world > 1:
        decision = _predict_torchrun(args, rank, world)
        if rank != 0:
            return
    else:
        decision = _predict_share(args, 0, 1, merge=True)
    print(f"wrote {args.out}")
    if args.vector:  # the centre lines of the roads the decision keeps
        _write_lines(args.out, args.vector, args, threshold=decision.pixel, image=args.scene)


def _run_key(args: argparse.Namespace) -> dict:
    """What must match for chunks of an earlier prediction of the same scene to be reused."""
    ckpts = [Path(c).resolve() for c in args.ckpt]
    return {
        "ckpt": [f"{c} {c.stat().st_size} {c.stat().st_mtime_ns}" for c in ckpts],
        "tta": bool(args.tta), "window": args.window, "overlap": args.overlap,
        "merge": args.merge, "precision": args.precision,
    }  # fmt: skip


def _predict_share(args: argparse.Namespace, rank: int, world: int, *, merge: bool):
    """Predict process ``rank``'s share of the scene's chunks; returns the decision. With
    several processes, each says in one line what it did and its peak memory."""
    import resource
    import time

    start = time.perf_counter()
    predictor, _, decision = _predictor(args)
    done = predictor.predict_scene(
        args.scene, args.out, output=args.output, decision=decision, chunk=args.chunk,
        rank=rank, world=world, merge=merge, run_key=_run_key(args),
    )  # fmt: skip
    if world > 1:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(f"process {rank} of {world}: {done} chunks in {time.perf_counter() - start:.1f} s, "
              f"peak memory {peak:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
    return decision


def _merge_scene(args: argparse.Namespace) -> None:
    import rasterio

    from roadseg.predict import merge_parts, scene_chunks, scene_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(args.scene) as src:
            profile = scene_profile(src, args.output)
            chunks = scene_chunks(src.width, src.height, args.chunk)
    merge_parts(args.out, profile, chunks)


def _process_main(args: argparse.Namespace, rank: int, world: int, threads: int) -> None:
    """One of the processes that ``--processes`` starts (spawned: a fresh interpreter)."""
    import torch

    torch.set_num_threads(threads)
    _quiet_libraries()
    args.quiet = args.quiet or rank > 0
    with contextlib.redirect_stdout(io.StringIO()) if rank > 0 else contextlib.nullcontext():
        try:
            _predict_share(args, rank, world, merge=False)
        except RoadsegError as err:
            print(f"roadseg: error: process {rank}: {_one_line(err)}", file=sys.stderr)
            sys.exit(2)


def _predict_processes(args: argparse.Namespace):
    """Predict the scene with ``--processes`` local processes, each a share of the chunks,
    then merge their parts; a process that dies leaves its finished chunks for a rerun."""
    import multiprocessing as mp

    import torch

    n = args.processes
    threads = args.threads or max(1, torch.get_num_threads() // n)
    print(f"predicting with {n} processes, {threads} threads each")
    context = mp.get_context("spawn")
    procs = [context.Process(target=_process_main, args=(args, r, n, threads)) for r in range(n)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [(r, proc.exitcode) for r, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        from roadseg.predict import parts_dir

        raise RoadsegError(
            f"process {failed[0][0]} of {n} stopped (exit code {failed[0][1]}); the chunks "
            "finished so far are kept: run the same command again to resume",
            parts_dir(args.out),
        )
    _merge_scene(args)
    if args.merge == "vote":  # what the processes decided with (Predictor.output_decision)
        from roadseg.postprocess import Decision

        return Decision(pixel=0.5, patch=0.5)
    return _decision(args, args.ckpt[0])[0]


def _predict_torchrun(args: argparse.Namespace, rank: int, world: int):
    """Under torchrun: this process's share of the chunks (on GPU ``LOCAL_RANK`` when there
    are GPUs), a gloo barrier, and the merge by rank 0."""
    import torch
    import torch.distributed as dist

    if args.device == "auto" and torch.cuda.is_available():
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    dist.init_process_group("gloo")
    try:
        args.quiet = args.quiet or rank > 0
        decision = _predict_share(args, rank, world, merge=False)
        dist.barrier()
        if rank == 0:
            _merge_scene(args)
    finally:
        dist.destroy_process_group()
    return decision


def _write_lines(raster, out, args: argparse.Namespace, *, threshold: float, image=None) -> None:
    """Centre lines of ``raster`` to ``out``; with ``--png``, drawn over ``image``."""
    from roadseg.vectors import describe, to_frame, vectorize_raster, write_vectors

    pieces, crs, transform = vectorize_raster(
        raster, threshold=threshold, chunk=args.chunk, min_length=args.min_length,
        simplify=args.simplify, progress=not args.quiet,
    )  # fmt: skip
    frame = to_frame(pieces, crs, transform)
    write_vectors(frame, out)
    print(f"wrote {out}: {describe(frame)}")
    if args.png:
        from roadseg.vectors import draw_lines

        print(f"wrote {draw_lines(image or raster, frame, args.png)}")


def _cmd_vectorize(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.vectors import vector_driver

    check_io(inputs=[args.raster, *([args.image] if args.image else [])],
             outputs=[args.out, *([args.png] if args.png else [])])  # fmt: skip
    vector_driver(args.out)
    _write_lines(args.raster, args.out, args, threshold=args.threshold, image=args.image)


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
    print(f"{args.submission}: {tiles} tiles, {patches:,} patches scored against {args.truth}")
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


def _cmd_experiment(args: argparse.Namespace) -> None:
    from roadseg.experiments import run_plan
    from roadseg.paths import check_io

    check_io(inputs=[args.plan], output_folders=[args.out])
    table = run_plan(args.plan, args.out, only=args.only.split(",") if args.only else None)
    print(f"wrote {Path(args.out) / 'table.md'} ({len(table)} runs)")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.reproduce import reproduce

    args.out = args.out or str(Path("results") / args.profile)
    check_io(inputs=[args.plan], output_folders=[args.out])
    if args.profile == "paper" and not args.allow_cpu:
        import torch

        from roadseg.reproduce import load_reproduction

        runs = len(load_reproduction(args.plan, args.profile)["runs"])  # also checks the plan
        if not torch.cuda.is_available():
            raise RoadsegError(
                f"the paper profile trains {runs} runs on GPU budgets (days on a CPU) and no GPU "
                "is here: run make reproduce PROFILE=smoke (the machinery, minutes), or add "
                "--allow-cpu to start it anyway",
                args.plan,
            )
    reproduce(args.plan, args.out, profile=args.profile, figures=not args.no_figures)
    print(f"wrote {Path(args.out) / 'table.md'}:")
    print((Path(args.out) / "table.md").read_text())


def _cmd_figures(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io

    _check_checkpoint_path(args.ckpt)
    check_io(input_folders=args.runs, output_folders=[args.out])
    decision, origin = _decision(args, args.ckpt)
    print(f"decision: {decision.describe()} ({origin})")
    from roadseg.figures import make_figures

    make_figures(
        args.out,
        ckpt=args.ckpt,
        curves={Path(r).name: Path(r) for r in args.runs},
        decision=decision,
        context=CONTEXT_MARGIN if args.context is None else args.context,
    )


def _cmd_models(args: argparse.Namespace) -> None:
    from roadseg.models import MODELS, create_model

    print(f"{'model':<16} {'parameters':>12}  (encoder resnet34 where it has one)")
    for name in sorted(MODELS):
        model = create_model(name)
        print(f"{name:<16} {sum(p.numel() for p in model.parameters()):>12,}")


def _add_decision_args(p: argparse.ArgumentParser) -> None:
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


def _add_predictor_args(p: argparse.ArgumentParser) -> None:
    # Defaults are None here and filled by _apply_predict_config (command line > --config >
    # PREDICT_DEFAULTS), so a config file can set any of them.
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
    p.add_argument("--window", type=int, help="prediction window side (default 1024)")
    p.add_argument("--overlap", type=int, help="overlap of neighbouring windows (default 128)")
    _add_decision_args(p)
    p.add_argument(
        "--context",
        type=int,
        metavar="PX",
        help="predict each tile with PX pixels of its neighbouring tiles around it (placed on "
        "their maps by matching edges), then crop back; 0 = each tile alone "
        f"(default {CONTEXT_MARGIN} when the tiles have neighbours, as cil-2022's do)",
    )
    p.add_argument("--device", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 on CUDA, fp32 on CPU (default auto)",
    )
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_vector_args(p: argparse.ArgumentParser) -> None:
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

    p = sub.add_parser(
        "submit",
        help="predict the test tiles with a checkpoint and write a submission CSV",
        description="Predict every test tile at full resolution, reduce to 16x16 patch labels "
        "(a patch is road when more than 25% of its pixels are), write the CSV atomically "
        "and validate it.",
    )
    _add_predictor_args(p)
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
    _add_predictor_args(p)
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

    p = sub.add_parser(
        "tune",
        help="find the thresholds that maximise validation road F1 (or patch accuracy) and store them by the checkpoint",
        description="Predict the validation tiles of the checkpoint's own split, search the pixel "
        "and patch thresholds on a grid, print patch accuracy (the leaderboard's number), road "
        "patch F1, background F1, precision and recall at the default and at the tuned "
        "thresholds, and write <ckpt>.thresholds.json (with whether TTA was on), which "
        "submit, predict and figures then use.",
    )
    _add_predictor_args(p)
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

    p = sub.add_parser(
        "predict",
        help="predict a raster of any size (a GeoTIFF scene) into a GeoTIFF",
        description="Stream a raster chunk by chunk through overlapping windows into a tiled, "
        "compressed GeoTIFF with the input's CRS and transform; memory stays flat however "
        "large the scene. Input nodata stays nodata.",
    )
    p.add_argument("scene", help="input raster (GeoTIFF, PNG, ...)")
    p.add_argument("--out", required=True, help="GeoTIFF to write")
    _add_predictor_args(p)
    p.add_argument(
        "--output",
        choices=["prob", "mask"],
        default="prob",
        help="prob: float32 road probability (nodata -1); mask: uint8 0/1 (nodata 255)",
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
        help="CPU threads of each of the --processes (default: this machine's shared out)",
    )
    p.add_argument(
        "--vector",
        metavar="LINES",
        help="also write the roads' centre lines (.gpkg or .geojson; see roadseg vectorize), "
        "from the probability above the decision's pixel threshold, or from the mask",
    )
    p.add_argument("--png", help="with --vector: also draw the lines over the scene in this PNG")
    _add_vector_args(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "vectorize",
        help="turn a road probability or mask raster into centre lines (GeoPackage/GeoJSON)",
        description="Thin the road mask to one-pixel centre lines, link them into a graph of "
        "junctions and segments, drop short whiskers, simplify, and write LineStrings in the "
        "raster's CRS with length (map units), mean_prob (NaN for a mask) and width (map "
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
    _add_vector_args(p)
    p.add_argument("--png", help="also draw the lines in this PNG, over --image or the raster")
    p.add_argument("--image", help="imagery to draw the lines over (default: the raster itself)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_vectorize)

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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_index)

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

    p = sub.add_parser(
        "experiment",
        help="train every run of an experiment plan and collect the results table",
        description="Each run of the plan (a YAML file under configs/plans) trains in a child "
        "process into OUT/runs/<name>; finished runs are skipped, interrupted ones resume. "
        "The best validation epoch of each run goes into OUT/table.csv and OUT/table.md.",
    )
    p.add_argument("plan", help="plan file, e.g. configs/plans/methods-cpu.yaml")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--only", help="comma-separated run names to train (default: all)")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser(
        "reproduce",
        help="the paper: train methods x folds x seeds of a plan's profile, write the table and figures",
        description="Train every (method, fold, seed) of the chosen profile of a reproduction "
        "plan (finished runs are skipped, interrupted ones resume), then write table.csv and "
        "table.md (mean ± std over folds and seeds), runs.csv, timing.md and figures/ under "
        "--out. The same seeds on the same machine give the same table, except where a profile "
        "budgets wall time (cpu: trainer.max_time), which stops a run at the step the clock "
        "reaches.",
    )
    p.add_argument(
        "plan",
        nargs="?",
        default="configs/plans/paper.yaml",
        help="reproduction plan (default %(default)s)",
    )
    p.add_argument(
        "--profile",
        default="paper",
        help="scale of the plan: smoke (the machinery, minutes), cpu (results on 2 CPU cores, "
        "under 3 h) or paper (GPU) (default %(default)s)",
    )
    p.add_argument("--out", default=None, help="output folder (default: results/PROFILE)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run the paper profile without a GPU (it is refused otherwise: days of CPU work)",
    )
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "figures",
        help="draw the figures of a trained checkpoint (overlays, PR curve, filters, saliency, ...)",
        description="Predict the checkpoint's validation tiles and draw overlays, the patch "
        "precision-recall curve, first-layer filters, a saliency map, an occlusion map, a t-SNE "
        "of patch embeddings and a class-model visualisation as PNG files.",
    )
    p.add_argument("--ckpt", required=True, help="trained checkpoint")
    p.add_argument(
        "--out", default="results/figures", help="folder for the PNGs (default %(default)s)"
    )
    p.add_argument(
        "--runs", nargs="*", default=[], help="run folders whose learning curves to draw"
    )
    _add_decision_args(p)
    p.add_argument(
        "--context",
        type=int,
        metavar="PX",
        help=f"pixels of neighbouring tiles each tile is predicted with, as submit does "
        f"(default {CONTEXT_MARGIN} when the tiles have neighbours; 0 = alone)",
    )
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("models", help="list the registered models with their parameter counts")
    p.set_defaults(func=_cmd_models)
    return parser


def _one_line(err: BaseException) -> str:
    """The user-facing line of an error, also when it was re-raised from a loader worker."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    return last.removeprefix("roadseg.errors.RoadsegError: ")


# Library noise that says nothing about the user's run; --debug shows it all.
_QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's use of torch's pytree
    r".*skip_none parameter was deprecated.*",  # Lightning's use of jsonargparse
    r".*`timm-` encoders are deprecated.*",  # a checkpoint trained with an older roadseg
    r".*does not have many workers.*",  # num_workers 0 is the fastest choice on 2 cores
    r".*Precision bf16-mixed is not supported by the model summary.*",
)


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (they start with a light bulb)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("\N{ELECTRIC LIGHT BULB}")


def _quiet_libraries() -> None:
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # A logger's filters see only the records made on it, and the tips are made by the
    # rank-zero helpers' own loggers (created here if Lightning is not imported yet).
    for package in (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "lightning.fabric",
    ):
        logging.getLogger(f"{package}.utilities.rank_zero").addFilter(_DropTips())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``roadseg`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        _quiet_libraries()
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            run_lightning(argv)
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
    except OSError as err:
        # A file that vanished, a folder where a file belongs, a permission: name the file.
        if debug or not err.filename:
            raise
        from roadseg.paths import describe_os_error

        print(f"roadseg: error: {err.filename}: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roadseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
