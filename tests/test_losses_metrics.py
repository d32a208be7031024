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


def test_sum_of_named_losses():
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, :, 8:14] = 1  # a vertical road, 6 px wide
    logits = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    parts = [get_loss(n)(logits, target) for n in ("bce", "dice", "patch_f1")]
    assert get_loss("bce+dice+patch_f1")(logits, target).item() == pytest.approx(
        sum(p.item() for p in parts), rel=1e-6
    )
    assert get_loss("dice+bce")(logits, target).item() == pytest.approx(
        get_loss("bce+dice")(logits, target).item(), rel=1e-6
    )
    with pytest.raises(RoadsegError, match="unknown loss 'l3'"):
        get_loss("bce+l3")


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


def _probe(values, target):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1), torch.tensor(
        target, dtype=torch.float32
    ).view(1, 1, 1, -1)


def test_focal_hand_values():
    from roadseg.losses import focal

    logits, target = _probe([BIG, -BIG], [1, 0])
    assert focal(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert focal(-logits, target).item() == pytest.approx(BIG, rel=1e-4)  # 2 * 0.5 * 1 * 50
    logits, target = _probe([0.0], [1])
    assert focal(logits, target).item() == pytest.approx(
        0.25 * math.log(2)
    )  # 2 * 0.5 * 0.5**2 * ln 2


def test_lovasz_hand_values():
    from roadseg.losses import lovasz

    logits, target = _probe([BIG, -BIG], [1, 0])
    assert lovasz(logits, target).item() == pytest.approx(0.0)
    assert lovasz(-logits, target).item() == pytest.approx(1 + BIG)
    logits, target = _probe([0.5, 0.5], [1, 0])
    assert lovasz(logits, target).item() == pytest.approx(
        1.0
    )  # errors 1.5 and 0.5, gradient 0.5 and 0.5


def _two_road_patches():
    target = torch.zeros(1, 1, 32, 32)
    target[..., :16, :] = 1
    return target


def test_patch_losses_hand_values():
    from roadseg.losses import patch_bce, patch_f1

    target = _two_road_patches()
    perfect = (2 * target - 1) * BIG
    assert patch_bce(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert patch_bce(torch.zeros_like(target), target).item() == pytest.approx(math.log(2))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    on, off = sig(20 * 0.75), sig(20 * -0.25)
    expected = 1 - 2 * (2 * on) / (2 * on + 2 * off + 2)
    assert patch_f1(perfect, target).item() == pytest.approx(expected, rel=1e-5)
    # all wrong: the road patches score sigmoid(-5) each, the empty ones sigmoid(15)
    assert patch_f1(-perfect, target).item() == pytest.approx(
        1 - 2 * (2 * off) / (2 * off + 2 * on + 2), rel=1e-5
    )


def test_cldice_hand_values():
    from roadseg.losses import cldice, soft_skeleton

    line = torch.zeros(1, 1, 16, 16)
    line[..., 8, 4:12] = 1  # a 1-pixel road of 8 pixels is its own skeleton
    assert torch.equal(soft_skeleton(line), line)
    assert cldice((2 * line - 1) * BIG, line).item() == pytest.approx(0.0, abs=1e-6)
    # nothing predicted: precision (0 + 1) / (0 + 1) = 1, sensitivity 1 / 9 -> clDice 0.2
    assert cldice(torch.full_like(line, -BIG), line).item() == pytest.approx(0.8, abs=1e-6)


def test_every_loss_is_registered_and_differentiable():
    from roadseg.losses import LOSSES

    target = _two_road_patches()
    for name, loss in LOSSES.items():
        logits = torch.zeros_like(target, requires_grad=True)
        loss(logits, target).backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all(), name
