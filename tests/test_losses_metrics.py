import math

import pytest
import torch

from roadseg.errors import RoadsegError
from roadseg.losses import bce, bce_dice, dice, get_loss
from roadseg.metrics import RoadMetrics

BIG = 50.0  # sigmoid(50) == 1 to float precision


def test_perfect_and_all_wrong_predictions():
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    perfect, wrong = (2 * target - 1) * BIG, (1 - 2 * target) * BIG
    assert bce(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert bce(wrong, target).item() == pytest.approx(BIG, rel=1e-4)
    assert dice(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice(wrong, target).item() == pytest.approx(1 - 1 / 5)  # (0 + 1) / (2 + 2 + 1)


def test_known_intermediate_values():
    target = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.zeros_like(target)  # p = 0.5 everywhere
    assert bce(logits, target).item() == pytest.approx(math.log(2))
    assert dice(logits, target).item() == pytest.approx(1 - (2 * 0.5 + 1) / (1.0 + 1 + 1))
    assert bce_dice(logits, target).item() == pytest.approx(math.log(2) + 1 - 2 / 3)
    with pytest.raises(RoadsegError, match="unknown loss 'l3'"):
        get_loss("l3")


def test_road_metrics_hand_computed():
    metric = RoadMetrics()
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1  # top two patches road
    prob = torch.zeros(1, 1, 32, 32)
    prob[..., :16, :16] = 0.9  # one of them found
    prob[..., 16:, 16:] = 0.9  # one false patch
    metric.update(prob, mask)
    values = metric.compute()
    assert values["patch_f1"].item() == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert values["precision"].item() == pytest.approx(0.5)
    assert values["recall"].item() == pytest.approx(0.5)
    assert values["iou"].item() == pytest.approx(256 / (256 * 3))


def test_given_patch_labels_override_the_binary_mask():
    metric = RoadMetrics()
    prob = torch.ones(1, 1, 16, 16)
    metric.update(prob, torch.zeros(1, 1, 16, 16), patches=torch.ones(1, 1, 1, 1))
    assert metric.compute()["patch_f1"].item() == 1.0
