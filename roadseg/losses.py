"""Segmentation losses by name. Each takes logits and a {0,1} mask, both ``(B, 1, H, W)``.

``bce``, ``dice`` and their sum also take soft targets in [0, 1] and a per-pixel
``weight`` (self-training: a teacher's probabilities, its unsure pixels weighted 0).

``bce``, ``dice``, ``bce+dice``, ``focal``, ``lovasz`` (Lovasz hinge, a surrogate of
IoU), ``patch_bce`` and ``patch_f1`` (pool over 16x16 patches as the leaderboard does),
``cldice`` and ``dice+cldice`` (soft-clDice, which rewards connected road skeletons).
Any other ``a+b[+c...]`` of these names is the sum of its terms, e.g. ``bce+dice+patch_f1``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from roadseg.errors import RoadsegError
from roadseg.metrics import patch_labels_torch
from roadseg.patches import PATCH_SIZE, PATCH_THRESHOLD

Loss = Callable[..., torch.Tensor]  # (logits, target[, weight]) -> scalar


def bce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy (over the pixels' weights when given)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    total = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return total / weight.sum().clamp(min=1.0)


def dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1.0,
) -> torch.Tensor:
    """1 - soft Dice over the whole batch (smoothed by ``eps``; pixels of weight 0 left out)."""
    prob = torch.sigmoid(logits)
    if weight is not None:
        prob, target = prob * weight, target * weight
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def bce_dice(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE + Dice: BCE for per-pixel calibration, Dice against the road/background imbalance."""
    return bce(logits, target, weight) + dice(logits, target, weight)


def focal(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.5
) -> torch.Tensor:
    """Focal loss: BCE scaled by (1 - p_t)^gamma, so easy pixels count less (alpha weighs road)."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-ce)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (2 * weight * (1 - p_t) ** gamma * ce).mean()


def _lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted errors."""
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge (Berman et al., 2018), per image, averaged: a convex surrogate of 1 - IoU."""
    losses = []
    for lg, tg in zip(logits.flatten(1), target.flatten(1), strict=True):
        signs = 2 * tg - 1
        errors = 1 - lg * signs
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), _lovasz_grad(tg[order])))
    return torch.stack(losses).mean()


def patch_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of the mean logit of each 16x16 patch against the competition's patch label,
    road patches weighted by the batch's background/road ratio (balanced classes, as the
    scikit-learn baselines use): unweighted, a patch classifier learns to say "no road"."""
    patch_logits = F.avg_pool2d(logits, PATCH_SIZE, ceil_mode=True)
    truth = patch_labels_torch(target)
    positives = truth.sum()
    pos_weight = ((truth.numel() - positives) / positives.clamp(min=1)).clamp(min=1.0)
    return F.binary_cross_entropy_with_logits(patch_logits, truth, pos_weight=pos_weight.detach())


def patch_f1(logits: torch.Tensor, target: torch.Tensor, sharpness: float = 20.0) -> torch.Tensor:
    """1 - soft patch F1: a patch's road score is sigmoid(sharpness * (mean prob - 0.25)),
    the leaderboard's "mean above 0.25" rule made differentiable."""
    share = F.avg_pool2d(torch.sigmoid(logits), PATCH_SIZE, ceil_mode=True)
    score = torch.sigmoid(sharpness * (share - PATCH_THRESHOLD))
    truth = patch_labels_torch(target)
    tp = (score * truth).sum()
    return 1 - 2 * tp / (score.sum() + truth.sum()).clamp(min=1e-6)


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    return torch.minimum(-F.max_pool2d(-x, (3, 1), 1, (1, 0)), -F.max_pool2d(-x, (1, 3), 1, (0, 1)))


def _soft_dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, 1, 1)


def soft_skeleton(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Differentiable skeleton of a soft mask (iterated morphological thinning)."""
    skeleton = F.relu(x - _soft_dilate(_soft_erode(x)))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = F.relu(x - _soft_dilate(_soft_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice(
    logits: torch.Tensor, target: torch.Tensor, iterations: int = 10, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft-clDice (Shit et al., 2021): how much of each skeleton lies inside the other mask."""
    prob = torch.sigmoid(logits)
    skel_pred, skel_true = soft_skeleton(prob, iterations), soft_skeleton(target, iterations)
    precision = ((skel_pred * target).sum() + eps) / (skel_pred.sum() + eps)
    sensitivity = ((skel_true * prob).sum() + eps) / (skel_true.sum() + eps)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


def dice_cldice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice for area, clDice for connectivity, half each (as the clDice paper pairs them)."""
    return 0.5 * dice(logits, target) + 0.5 * cldice(logits, target)


WEIGHTED = {bce, dice, bce_dice}  # the losses that take a per-pixel weight

LOSSES: dict[str, Loss] = {
    "bce": bce,
    "dice": dice,
    "bce+dice": bce_dice,
    "focal": focal,
    "lovasz": lovasz,
    "patch_bce": patch_bce,
    "patch_f1": patch_f1,
    "cldice": cldice,
    "dice+cldice": dice_cldice,
}


def get_loss(name: str) -> Loss:
    """A loss function by name; ``a+b`` names not registered as such are sums of their terms."""
    if name in LOSSES:
        return LOSSES[name]
    terms = name.split("+")
    unknown = [t for t in terms if t not in LOSSES]
    if unknown or len(terms) < 2:
        raise RoadsegError(
            f"unknown loss {(unknown or [name])[0]!r}; choose one of {', '.join(LOSSES)}, "
            "or a sum of them joined by '+'"
        )
    parts = [LOSSES[t] for t in terms]

    def total(
        logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if weight is None:
            return sum(part(logits, target) for part in parts)
        return sum(part(logits, target, weight) for part in parts)

    total.__name__ = name
    return total


def supports_weights(name: str) -> bool:
    """Whether every term of the loss ``name`` takes per-pixel weights (:data:`WEIGHTED`)."""
    return all(LOSSES[t] in WEIGHTED for t in ([name] if name in LOSSES else name.split("+")))
