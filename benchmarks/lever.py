"""Two checkpoints of the same split, side by side: validation road patch F1 and patch
accuracy in context (as submit predicts), without and with TTA, each with its bootstrap
interval over tiles, and the paired bootstrap interval of their difference.

    python benchmarks/lever.py runs/cpu/checkpoints/best.ckpt runs/cpu-massachusetts/checkpoints/best.ckpt
"""

from __future__ import annotations

import sys

import numpy as np

from roadseg.checkpoints import read_checkpoint
from roadseg.evaluation import Validation
from roadseg.options import PredictOptions


def main() -> None:
    a, b = sys.argv[1:3]
    va = Validation(read_checkpoint(a), 96)
    vb = Validation(read_checkpoint(b), 96)
    assert list(va.tiles["image"]) == list(vb.tiles["image"]), "not the same validation split"
    print(va.context_line, f"({len(va.tiles)} tiles)")
    print("| checkpoint | TTA | road patch F1 [95% interval] | patch accuracy [95% interval] |")
    print("|---|---|---|---|")
    for tta in (False, True):
        counts = []
        for ckpt, validation in ((a, va), (b, vb)):
            options = PredictOptions.resolve({"ckpt": [ckpt], "tta": tta}, quiet=True)
            predictor, _ = options.predictor()
            scores = validation.scores(predictor)
            s, ci = scores.scores(0.5, 0.25), scores.intervals(0.5, 0.25)
            print(f"| {ckpt} | {'yes' if tta else 'no'} | {s['patch_f1']:.4f} [{ci['f1'][0]:.3f}, {ci['f1'][1]:.3f}] "
                  f"| {s['patch_accuracy']:.4f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}] |", flush=True)  # fmt: skip
            counts.append(scores._tile_counts(0.5, 0.25, 4))
        rng = np.random.default_rng(0)
        draws = rng.integers(0, len(counts[0]), size=(2000, len(counts[0])))
        f1 = [scores._scores_of(c[draws].sum(axis=1), 4)["f1"] for c in counts]
        diff = f1[1] - f1[0]
        print(
            f"| difference (second - first), paired over tiles | {'yes' if tta else 'no'} | "
            f"{np.mean(diff):+.4f} [{np.percentile(diff, 2.5):+.3f}, {np.percentile(diff, 97.5):+.3f}] | |"
        )


if __name__ == "__main__":
    main()
