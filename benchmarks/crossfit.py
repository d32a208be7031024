"""How far each validation figure is from the score of tuned thresholds on tiles never tuned
on: the cross-fitted figure (``roadseg evaluate``'s honest one), the figure of thresholds
tuned on the tiles scored (optimistic), and the defaults' figure.

The checkpoint's validation tiles are predicted once (in context, as ``evaluate`` predicts
them). Then, ``--halvings`` times, they are split at random in halves S and H: each
figure is computed on S alone (the cross-fit within S: tuned on one half of S, scored on
the other), and compared with what it claims to estimate, the score on H of the thresholds
tuned on all of S. Both ways round (S and H swapped): 2 x ``--halvings`` estimates. Also
compared: the gain over the defaults each figure claims, against the gain realised on H.

    python benchmarks/crossfit.py runs/cpu/checkpoints/best.ckpt [--tta] [--halvings 20]
"""

from __future__ import annotations

import argparse

import numpy as np

from roadseg.crossfit import best_pair, cross_fit, halves, metric_of
from roadseg.evaluation import Validation
from roadseg.options import PredictOptions
from roadseg.thresholds import PATCH_GRID, PIXEL_GRID

DEFAULTS = (int(np.argmin(abs(PIXEL_GRID - 0.5))), int(np.argmin(abs(PATCH_GRID - 0.25))))


def estimates(grid: np.ndarray, tuned_on: np.ndarray, metric: str) -> dict[str, float]:
    """Each figure on the tiles ``tuned_on`` alone, and the truth: the score on the other
    tiles of the thresholds tuned on them, and of the defaults there."""
    own, held = grid[:, :, tuned_on], grid[:, :, ~tuned_on]
    a, b = best_pair(own.sum(axis=2), metric)
    score = lambda counts: float(metric_of(counts.sum(axis=0), metric))  # noqa: E731
    return {
        "cross-fitted": cross_fit(own, metric).scores[
            {"f1": "patch_f1", "accuracy": "patch_accuracy"}[metric]
        ],
        "tuned on the tiles scored": score(own[a, b]),
        "defaults": score(own[DEFAULTS]),
        "held": score(held[a, b]),
        "held defaults": score(held[DEFAULTS]),
    }


def report(grid: np.ndarray, metric: str, halvings: int) -> None:
    rows = []
    for h in range(halvings):
        first = halves(grid.shape[2], seed=1000 + h)
        rows += [estimates(grid, first, metric), estimates(grid, ~first, metric)]
    name = {"f1": "road patch F1", "accuracy": "patch accuracy"}[metric]
    held = np.array([r["held"] for r in rows])
    realised = held - np.array([r["held defaults"] for r in rows])
    print(f"\ntuned for {metric}: {len(rows)} estimates ({halvings} halvings, both ways); "
          f"{name} of the half's thresholds on the other half: mean {held.mean():.4f}; gain "
          f"over the defaults there: mean {realised.mean():+.4f}")  # fmt: skip
    print("| figure on one half | its error: mean (bias) | mean absolute | RMS "
          "| gain it claims over the defaults | error of that gain: mean | RMS |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for figure in ("cross-fitted", "tuned on the tiles scored", "defaults"):
        est = np.array([r[figure] for r in rows])
        err = est - held
        gain = est - np.array([r["defaults"] for r in rows])
        gain_err = gain - realised
        print(f"| {figure} | {err.mean():+.4f} | {abs(err).mean():.4f} | "
              f"{np.sqrt((err**2).mean()):.4f} | {gain.mean():+.4f} | {gain_err.mean():+.4f} | "
              f"{np.sqrt((gain_err**2).mean()):.4f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--halvings", type=int, default=20)
    args = parser.parse_args()
    options = PredictOptions.resolve({"ckpt": [args.ckpt], "tta": args.tta}, quiet=True)
    contents = options.read_checkpoints()
    validation = Validation(contents[0], options.margin)
    print(validation.context_line)
    predictor, _ = options.predictor(contents)
    scores = validation.scores(predictor)
    for metric in ("f1", "accuracy"):
        key = {"f1": "patch_f1", "accuracy": "patch_accuracy"}[metric]
        tuned = scores.tune(metric=metric)
        honest = scores.cross_fit(metric)
        print(f"\nall {len(validation.tiles)} tiles, tuned for {metric}: cross-fitted "
              f"{honest.scores[key]:.4f} ({honest.describe()}); tuned on them "
              f"{scores.scores(tuned.pixel, tuned.patch)[key]:.4f} (pixel {tuned.pixel:g}, "
              f"patch {tuned.patch:g}); defaults {scores.scores()[key]:.4f}")  # fmt: skip
        report(scores.grid(), metric, args.halvings)


if __name__ == "__main__":
    main()
