"""``roadseg evaluate`` of a checkpoint trained on scenes: its held-out ground, and a
baseline model on the same ground (:mod:`roadseg.groundeval`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

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
    per_block, rows = [], []
    data = None
    for name, opts in runs:
        print(f"{name}: {opts.ckpt[0]}")
        predictor, decision = opts.predictor(ckpts if name == "model" else None)
        if data is None or predictor.imagery != data.imagery:
            data = held_out(ckpts[0], options.ckpt[0], predictor.imagery)
            if name == "model":
                for line in data.lines[-1:]:
                    print(line.removeprefix("data: "))
        counts = block_counts(predictor, decision, data)
        per_block.append(counts)
        rows.append((name, opts.ckpt[0], decision.describe(), scores(counts.sum(axis=0))))
    spread = intervals(per_block)
    result = {"heldout": {"blocks": len(per_block[0]), "scored_patches": int(per_block[0][:, 3:].sum()),
                          "checkpoint": str(options.ckpt[0]), "bootstrap": "2000 draws of blocks, middle 95%"}}  # fmt: skip
    keys = {"model": "after", "baseline": "before"} if len(runs) > 1 else {"model": "model"}
    print(f"held-out ground: {len(per_block[0])} blocks; middle 95% of a bootstrap over blocks")
    print(f"  {'':<10} {'patch F1':<22} {'patch accuracy':<22} {'pixel F1':<22}")
    for (name, path, how, values), band in zip(rows, spread, strict=False):
        result[keys[name]] = {**{k: round(float(v), 4) for k, v in values.items()},
                              "interval": {k: [round(a, 4), round(b, 4)] for k, (a, b) in band.items()},
                              "checkpoint": str(path), "decision": how}  # fmt: skip
        print(f"  {keys[name]:<10} " + " ".join(
            f"{float(values[k]):.4f} ({band[k][0]:.3f}-{band[k][1]:.3f}) " for k in
            ("patch_f1", "patch_accuracy", "pixel_f1")))  # fmt: skip
    if len(runs) > 1:
        after, before = rows[0][3], rows[1][3]
        diff = spread[-1]  # the last model minus the first: baseline - model; flip it
        result["difference"] = {k: {"after_minus_before": round(float(after[k] - before[k]), 4),
                                    "interval": [round(-diff[k][1], 4), round(-diff[k][0], 4)]}
                                for k in after}  # fmt: skip
        print(f"  {'after-before':<10} " + " ".join(
            f"{float(after[k] - before[k]):+.4f} ({-diff[k][1]:+.3f}..{-diff[k][0]:+.3f})"
            for k in ("patch_f1", "patch_accuracy", "pixel_f1")))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".tmp.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
