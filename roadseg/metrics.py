"""Metrics: patch accuracy (the leaderboard's number), road patch F1 (the course's score),
background patch F1, and pixel IoU, precision, recall (see :mod:`roadseg.scoring`).

Counts are accumulated on the device (no host sync per step) and summed across
processes by torchmetrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from roadseg.patches import PATCH_SIZE, PATCH_THRESHOLD


def patch_labels_torch(
    mask: torch.Tensor, patch_size: int = PATCH_SIZE, threshold: float = PATCH_THRESHOLD
) -> torch.Tensor:
    """Patch labels of a ``(B, 1, H, W)`` mask in [0, 1]: ``(B, 1, rows, cols)``, same rule as
    :func:`roadseg.patches.patch_labels` (partial edge patches average what they have)."""
    means = F.avg_pool2d(mask.float(), patch_size, stride=patch_size, ceil_mode=True)
    return (means > threshold).float()


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return 2 * tp / (2 * tp + fp + fn).clamp(min=1)


class RoadMetrics(Metric):
    """Patch accuracy, road and background patch F1, patch precision/recall, and pixel
    IoU/F1/precision/recall from probabilities.

    ``update(prob, mask, patches=None)``: ``prob`` and ``mask`` ``(B, 1, H, W)``;
    ``patches`` the true patch labels from the raw grey mask when known (else they are
    computed from ``mask``). Predicted pixels are road where ``prob > pixel_threshold``.
    """

    full_state_update = False

    def __init__(self, pixel_threshold: float = 0.5, patch_threshold: float = PATCH_THRESHOLD):
        super().__init__()
        self.pixel_threshold = pixel_threshold
        self.patch_threshold = patch_threshold
        for name in ("tp", "fp", "fn", "patch_tp", "patch_fp", "patch_fn", "patch_tn"):
            self.add_state(
                name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(
        self,
        prob: torch.Tensor,
        mask: torch.Tensor,
        patches: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        """``valid`` ``(B, 1, H, W)``: the pixels that count (labelled ground; a patch counts
        when all its pixels do); None: all."""
        pred = (prob > self.pixel_threshold).float()
        truth = mask.float()
        keep = torch.ones_like(truth) if valid is None else (valid > 0).float()
        self.tp += (pred * truth * keep).sum()
        self.fp += (pred * (1 - truth) * keep).sum()
        self.fn += ((1 - pred) * truth * keep).sum()
        pred_p = patch_labels_torch(pred, threshold=self.patch_threshold)
        true_p = patch_labels_torch(truth) if patches is None else patches.float()
        keep_p = (
            torch.ones_like(true_p) if valid is None
            else (F.avg_pool2d(keep, PATCH_SIZE, stride=PATCH_SIZE, ceil_mode=True) > 0.999).float()
        )  # fmt: skip
        self.patch_tp += (pred_p * true_p * keep_p).sum()
        self.patch_fp += (pred_p * (1 - true_p) * keep_p).sum()
        self.patch_fn += ((1 - pred_p) * true_p * keep_p).sum()
        self.patch_tn += ((1 - pred_p) * (1 - true_p) * keep_p).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = self.tp, self.fp, self.fn
        ptp, pfp, pfn, ptn = self.patch_tp, self.patch_fp, self.patch_fn, self.patch_tn
        return {
            "patch_accuracy": (ptp + ptn) / (ptp + ptn + pfp + pfn).clamp(min=1),
            "patch_f1": _f1(ptp, pfp, pfn),
            "background_f1": _f1(ptn, pfn, pfp),
            "patch_precision": ptp / (ptp + pfp).clamp(min=1),
            "patch_recall": ptp / (ptp + pfn).clamp(min=1),
            "iou": tp / (tp + fp + fn).clamp(min=1),
            "pixel_f1": _f1(tp, fp, fn),
            "precision": tp / (tp + fp).clamp(min=1),
            "recall": tp / (tp + fn).clamp(min=1),
        }
