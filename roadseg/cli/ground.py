"""``roadseg evaluate`` of a checkpoint trained on scenes: its held-out ground, and a
baseline model on the same ground (:mod:`roadseg.groundeval`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError


def evaluate_ground(args: argparse.Namespace, options, ckpts: list[dict]) -> None:
    from roadseg.checkpoints import check_checkpoint_path, checkpoint_of
    from roadseg.cli.prediction import submission_name
    from roadseg.groundeval import (
        block_counts,
        held_out,
        intervals,
        scene_inputs,
        scene_record,
        scores,
    )
    from roadseg.io import atomic_path
    from roadseg.paths import check_io

    if args.data is not None or len(ckpts) > 1:
        raise RoadsegError("a checkpoint trained on scenes is evaluated alone, on its own "
                           "held-out blocks (compare another model with --baseline)")  # fmt: skip
    out = Path(
        args.out or (Path("submissions") / submission_name(options, "heldout")).with_suffix(".json")
    )
    if out.suffix.lower() != ".json":
        raise RoadsegError("held-out scores are written as JSON: give --out a .json path", out)
    runs = [("model", options)]
    if args.baseline:
        baseline = checkpoint_of(str(args.baseline))
        check_checkpoint_path(baseline)
        runs.append(("baseline", dataclasses.replace(options, ckpt=(baseline,))))
    record = scene_record(ckpts[0], options.ckpt[0])  # refused before any model is loaded
    check_io(outputs=[out], protected=[*options.inputs, *(o.ckpt[0] for _, o in runs),
                                       *scene_inputs(record)])  # fmt: skip
    per_block, routes, rows = [], [], []
    data = None
    for name, opts in runs:
        print(f"{name}: {opts.ckpt[0]}")
        predictor, decision = opts.predictor(ckpts if name == "model" else None)
        if data is None or predictor.imagery != data.imagery:
            data = held_out(ckpts[0], options.ckpt[0], predictor.imagery)
            if name == "model":
                for line in data.lines[-1:]:
                    print(line.removeprefix("data: "))
        counts, apls = block_counts(predictor, decision, data)
        per_block.append(counts)
        routes.append(apls)
        values = {**scores(counts.sum(axis=0)), "apls": float(apls.mean())}
        rows.append((name, opts.ckpt[0], decision.describe(), values))
    spread = intervals(per_block, routes)
    result = {"heldout": {"blocks": len(per_block[0]), "scored_patches": int(per_block[0][:, 3:].sum()),
                          "checkpoint": str(options.ckpt[0]), "bootstrap": "2000 draws of blocks, middle 95%"}}  # fmt: skip
    keys = {"model": "after", "baseline": "before"} if len(runs) > 1 else {"model": "model"}
    print(f"held-out ground: {len(per_block[0])} blocks; middle 95% of a bootstrap over blocks")
    columns = ("patch_f1", "patch_accuracy", "pixel_f1", "apls")
    print(
        f"  {'':<12} {'patch F1':<22} {'patch accuracy':<22} {'pixel F1':<22} APLS (mean of blocks)"
    )
    for (name, path, how, values), band in zip(rows, spread, strict=False):
        result[keys[name]] = {**{k: round(float(v), 4) for k, v in values.items()},
                              "interval": {k: [round(a, 4), round(b, 4)] for k, (a, b) in band.items()},
                              "checkpoint": str(path), "decision": how}  # fmt: skip
        print(f"  {keys[name]:<12} " + " ".join(
            f"{float(values[k]):.4f} ({band[k][0]:.3f}-{band[k][1]:.3f}) " for k in columns))  # fmt: skip
    if len(runs) > 1:
        after, before = rows[0][3], rows[1][3]
        diff = spread[-1]  # the last model minus the first: baseline - model; flip it
        result["difference"] = {k: {"after_minus_before": round(float(after[k] - before[k]), 4),
                                    "interval": [round(-diff[k][1], 4), round(-diff[k][0], 4)]}
                                for k in after}  # fmt: skip
        print(f"  {'after-before':<12} " + " ".join(
            f"{float(after[k] - before[k]):+.4f} ({-diff[k][1]:+.3f}..{-diff[k][0]:+.3f})"
            for k in columns))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".tmp.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def tune_ground(args: argparse.Namespace, options, ckpts: list[dict], writes: bool) -> None:
    """``roadseg tune`` of a scene-trained checkpoint: the pixel and patch thresholds that
    maximise patch F1 (or accuracy) on its held-out blocks, stored beside it."""
    from roadseg.crossfit import cross_fit
    from roadseg.groundeval import block_maps, grid_counts, held_out, scene_record, scores
    from roadseg.thresholds import PATCH_GRID, PIXEL_GRID, Thresholds, store_thresholds

    if len(ckpts) > 1:
        raise RoadsegError("a checkpoint trained on scenes is tuned alone", options.ckpt[0])
    scene_record(ckpts[0], options.ckpt[0])
    predictor, _ = options.predictor(ckpts)
    data = held_out(ckpts[0], options.ckpt[0], predictor.imagery)
    maps = list(block_maps(predictor, data))
    # each block's counts at every pair: their sum is the grid, their halves the cross-fit
    per_block = np.stack([grid_counts([m], PIXEL_GRID, PATCH_GRID) for m in maps], axis=2)
    grid = scores(per_block.sum(axis=2))
    metric = args.metric or "f1"
    key = "patch_f1" if metric == "f1" else "patch_accuracy"
    i, j = np.unravel_index(np.argmax(grid[key]), grid[key].shape)
    d0, d1 = int(np.argmin(abs(PIXEL_GRID - 0.5))), int(np.argmin(abs(PATCH_GRID - 0.25)))
    default = {k: v[d0 : d0 + 1, d1 : d1 + 1] for k, v in grid.items()}  # the grid holds them
    tuned = Thresholds(pixel=float(PIXEL_GRID[i]), patch=float(PATCH_GRID[j]),
                       val_patch_f1=float(grid["patch_f1"][i, j]),
                       val_patch_accuracy=float(grid["patch_accuracy"][i, j]),
                       tta=bool(options.tta), metric=metric)  # fmt: skip
    print(f"held-out ground: {len(maps)} blocks (TTA {'on' if options.tta else 'off'})")
    for name, s in (("pixel 0.5, patch 0.25 (defaults)", {k: v[0, 0] for k, v in default.items()}),
                    (f"pixel {tuned.pixel:g}, patch {tuned.patch:g} (tuned for {metric} on "
                     "these blocks: optimistic)", {k: v[i, j] for k, v in grid.items()})):  # fmt: skip
        print(f"  {name}: road patch F1 {s['patch_f1']:.4f}, patch accuracy "
              f"{s['patch_accuracy']:.4f}, pixel road F1 {s['pixel_f1']:.4f}")  # fmt: skip
    if len(maps) >= 2:  # patch counts (tp, fp, fn, tn) of each block, halves by a fixed seed
        honest = cross_fit(per_block[..., 3:], metric, unit="blocks")
        print(f"  honest, thresholds scored on blocks they were not tuned on ({honest.describe()}): "
              f"road patch F1 {honest.scores['patch_f1']:.4f}, patch accuracy "
              f"{honest.scores['patch_accuracy']:.4f}")  # fmt: skip
    if writes:
        out = store_thresholds(options.ckpt[0], tuned)
        print(f"wrote {out} (what predict and evaluate use unless options are given; "
              "evaluate then scores on the blocks they were tuned on: optimistic)")  # fmt: skip
