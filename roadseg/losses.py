"""Segmentation losses by name. Each takes logits and a {0,1} mask, both ``(B, 1, H, W)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from roadseg.errors import RoadsegError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logits, target)


def dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (smoothed by ``eps``)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice: BCE for per-pixel calibration, Dice against the road/background imbalance."""
    return bce(logits, target) + dice(logits, target)


LOSSES: dict[str, Loss] = {"bce": bce, "dice": dice, "bce+dice": bce_dice}


def get_loss(name: str) -> Loss:
    """A loss function by name."""
    if name not in LOSSES:
        raise RoadsegError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
