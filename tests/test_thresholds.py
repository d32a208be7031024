"""Validation scores by ring of patches, and their bootstrap over tiles (hand-made masks)."""

from __future__ import annotations

import numpy as np
import pytest

from roadseg.evaluation import ValidationScores, patch_rings
from roadseg.postprocess import Decision
from tests.conftest import write_raster

SIDE = 96  # 6 x 6 patches: rings 0, 1 and 2+


def _scores(tmp_path, truths: list[np.ndarray], preds: list[np.ndarray]) -> ValidationScores:
    """Scores of 0/1 patch-level predictions against 0/1 patch-level truths (6 x 6 each)."""
    masks = []
    for k, truth in enumerate(truths):
        grey = np.kron(truth, np.ones((16, 16))).astype(np.uint8) * 255
        masks.append(str(write_raster(tmp_path / f"mask_{k}.png", grey)))
    probs = [np.kron(p, np.ones((16, 16))).astype(np.float32) for p in preds]
    return ValidationScores(probs, masks)


def test_patch_rings_count_from_the_tile_border():
    ring = patch_rings((SIDE, SIDE), rings=2)
    assert ring[0].tolist() == [0] * 6
    assert ring[2].tolist() == [0, 1, 2, 2, 1, 0]
    assert np.bincount(ring.ravel()).tolist() == [20, 12, 4]


def test_ring_f1_scores_each_ring_on_its_own(tmp_path):
    truth = np.zeros((6, 6), np.uint8)
    truth[:, 2] = 1  # a road down column 2: 2 border patches, 2 in ring 1, 2 inside
    pred = truth.copy()
    pred[0, 2] = 0  # one border patch missed
    pred[2, 3] = 1  # one false patch inside
    rings = _scores(tmp_path, [truth], [pred]).ring_f1(rings=2)
    assert rings == pytest.approx({"0": 2 * 1 / (2 * 1 + 1), "1": 1.0, "2+": 2 * 2 / (2 * 2 + 1)})


def test_bootstrap_of_identical_tiles_is_the_score_itself(tmp_path):
    truth = np.zeros((6, 6), np.uint8)
    truth[1, :] = 1
    pred = truth.copy()
    pred[1, :2] = 0
    pred[4, 4] = 1
    scores = _scores(tmp_path, [truth] * 5, [pred] * 5)
    spread = scores.intervals(rings=2)
    point = scores.scores()
    assert spread["f1"] == pytest.approx((point["patch_f1"],) * 2)
    assert spread["accuracy"] == pytest.approx((point["patch_accuracy"],) * 2)
    for name, value in scores.ring_f1(rings=2).items():
        assert spread[f"ring {name}"] == pytest.approx((value, value))


def test_bootstrap_resamples_tiles_not_patches(tmp_path):
    """One perfect tile and one whose road is missed entirely: a draw of two tiles is either
    both perfect (F1 1), both missed (F1 0) or one of each, so the 95% interval spans 0 to 1.
    Patches resampled one by one would put it in a narrow band around the pooled F1."""
    truth = np.zeros((6, 6), np.uint8)
    truth[:, 3] = 1
    scores = _scores(tmp_path, [truth, truth], [truth, np.zeros_like(truth)])
    spread = scores.intervals(draws=4000)
    assert scores.f1() == pytest.approx(2 * 6 / (2 * 6 + 6))
    assert spread["f1"] == pytest.approx((0.0, 1.0))
    assert scores.intervals(draws=4000) == spread  # seeded: the same scores, the same interval
    assert scores.intervals(draws=4000, seed=1)["f1"] == pytest.approx((0.0, 1.0))


def test_bootstrap_interval_holds_the_score_and_narrows_with_more_tiles(tmp_path):
    rng = np.random.default_rng(3)
    truths = [(rng.random((6, 6)) < 0.3).astype(np.uint8) for _ in range(40)]
    preds = [np.where(rng.random((6, 6)) < 0.2, 1 - t, t) for t in truths]  # 20% of patches wrong
    few = _scores(tmp_path / "few", truths[:8], preds[:8])
    many = _scores(tmp_path / "many", truths, preds)
    for scores in (few, many):
        low, high = scores.intervals()["f1"]
        assert low < scores.f1() < high
    width = {
        name: np.subtract(*s.intervals()["f1"][::-1]) for name, s in (("few", few), ("many", many))
    }
    assert width["many"] < width["few"]


def test_per_tile_names_where_the_errors_are(tmp_path):
    truth = np.zeros((6, 6), np.uint8)
    truth[:, 1] = 1  # 6 road patches
    half = truth.copy()
    half[3:, 1] = 0  # 3 of them found
    half[0, 4] = 1  # and one false patch
    tiles = _scores(tmp_path, [truth, truth], [truth, half]).per_tile()
    assert tiles[0] == {"patch_f1": 1.0, "true": 6, "predicted": 6, "hit": 6}
    assert tiles[1] == {"patch_f1": pytest.approx(2 * 3 / (2 * 3 + 1 + 3)), "true": 6,
                        "predicted": 4, "hit": 3}  # fmt: skip


def test_thresholds_are_stored_per_mode_and_metric(tmp_path):
    """tune and tune --tta write separate files, and each mode keeps one entry per metric;
    a command uses its own mode's (the metric tuned last unless it asks), else the other
    mode's with a note in the origin, else the defaults."""
    from roadseg.thresholds import Thresholds, store_thresholds, stored_decision, thresholds_path

    ckpt = tmp_path / "best.ckpt"
    assert stored_decision(ckpt, tta=True) == (Decision(), "defaults", None)
    plain = Thresholds(pixel=0.4, patch=0.2, tta=False, metric="f1")
    assert store_thresholds(ckpt, plain) == thresholds_path(ckpt, tta=False)
    decision, origin, tuned = stored_decision(ckpt, tta=False)
    assert (decision.pixel, decision.patch, tuned) == (0.4, 0.2, plain)
    assert origin.startswith("tuned for f1 without TTA on validation")
    decision, origin, _ = stored_decision(ckpt, tta=True)  # no TTA thresholds yet
    assert decision.pixel == 0.4 and "none tuned with TTA" in origin

    with_tta = Thresholds(pixel=0.6, patch=0.3, tta=True, metric="accuracy")
    assert store_thresholds(ckpt, with_tta).name == "best.ckpt.thresholds-tta.json"
    assert stored_decision(ckpt, tta=True)[0].pixel == 0.6
    assert stored_decision(ckpt, tta=False)[0].pixel == 0.4  # the plain file is untouched
    store_thresholds(ckpt, Thresholds(pixel=0.55, patch=0.25, tta=True, metric="f1"))
    assert stored_decision(ckpt, tta=True)[0].pixel == 0.55  # tuned last
    assert stored_decision(ckpt, tta=True, metric="accuracy")[0].pixel == 0.6  # kept
    _, origin, _ = stored_decision(ckpt, tta=False, metric="accuracy")
    assert "none tuned for accuracy: run roadseg tune --metric accuracy" in origin


def test_a_thresholds_file_of_before_per_mode_files_counts_for_its_mode(tmp_path):
    import json

    from roadseg.thresholds import Thresholds, store_thresholds, stored_decision

    ckpt = tmp_path / "best.ckpt"
    old = {"pixel": 0.35, "patch": 0.2, "val_patch_f1": 0.8, "val_patch_accuracy": 0.9,
           "close_gaps": 0, "min_area": 0, "tta": True, "metric": "f1"}  # fmt: skip
    (tmp_path / "best.ckpt.thresholds.json").write_text(json.dumps(old))
    assert stored_decision(ckpt, tta=True)[0].pixel == 0.35
    decision, origin, _ = stored_decision(ckpt, tta=False)
    assert decision.pixel == 0.35 and "none tuned without TTA" in origin
    # a plain tune now keeps it, for the TTA mode
    store_thresholds(ckpt, Thresholds(pixel=0.6, tta=False))
    assert stored_decision(ckpt, tta=True)[0].pixel == 0.35
    assert stored_decision(ckpt, tta=False)[0].pixel == 0.6
    # one tuned without TTA counts for that mode, and a TTA tune leaves it alone
    old["tta"] = False
    other = tmp_path / "other.ckpt"
    (tmp_path / "other.ckpt.thresholds.json").write_text(json.dumps(old))
    decision, origin, _ = stored_decision(other, tta=False)
    assert decision.pixel == 0.35 and origin.startswith("tuned for f1 without TTA")
    store_thresholds(other, Thresholds(pixel=0.45, tta=True))
    assert stored_decision(other, tta=False)[0].pixel == 0.35
    assert stored_decision(other, tta=True)[0].pixel == 0.45


def test_thresholds_are_used_only_for_the_checkpoint_they_were_tuned_for(tmp_path):
    """After ``fit --ckpt_path last`` rewrites best.ckpt without ``tune``, the old best's
    thresholds were used at 50d5b1f; now the file records the checkpoint's hash, and a file
    of another checkpoint is ignored with a one-line note, the defaults used."""
    import json

    from roadseg.options import PredictOptions
    from roadseg.thresholds import Thresholds, store_thresholds, stored_decision, thresholds_path

    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"the first best")
    store_thresholds(ckpt, Thresholds(pixel=0.4, patch=0.2, tta=False))
    recorded = json.loads(thresholds_path(ckpt).read_text())["checkpoint_sha256"]
    assert recorded.startswith("sha256:") and len(recorded) == 7 + 64
    assert stored_decision(ckpt, tta=False)[0].pixel == 0.4

    ckpt.write_bytes(b"a later best")  # trained on, not tuned
    decision, origin, tuned = stored_decision(ckpt, tta=False)
    assert (decision, tuned) == (Decision(), None)
    assert origin.startswith(f"defaults; {thresholds_path(ckpt)} was tuned for another checkpoint")
    assert origin.endswith("not used; run roadseg tune") and "\n" not in origin
    chosen, said = PredictOptions(ckpt=(str(ckpt),)).mean_decision()
    assert chosen == Decision() and "tuned for another checkpoint" in said

    # tuning the new checkpoint keeps nothing of the old one's (the other metric neither)
    store_thresholds(ckpt, Thresholds(pixel=0.6, patch=0.3, tta=False, metric="accuracy"))
    assert stored_decision(ckpt, tta=False, metric="f1")[0].pixel == 0.6
    assert stored_decision(ckpt, tta=False)[1].startswith("tuned for accuracy")


def test_a_thresholds_file_that_records_no_checkpoint_counts_while_newer_than_it(tmp_path):
    """Files of an older roadseg record no hash: used when written after the checkpoint."""
    import json
    import os

    from roadseg.thresholds import stored_decision, thresholds_path

    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"weights")
    entry = {"pixel": 0.35, "patch": 0.2, "tta": False, "metric": "f1"}
    path = thresholds_path(ckpt)
    path.write_text(json.dumps({"use": "f1", "by_metric": {"f1": entry}}))
    os.utime(ckpt, ns=(path.stat().st_mtime_ns - 10**9,) * 2)
    assert stored_decision(ckpt, tta=False)[0].pixel == 0.35
    os.utime(ckpt, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # the checkpoint rewritten later
    decision, origin, _ = stored_decision(ckpt, tta=False)
    assert decision == Decision() and "is older than the checkpoint and records none" in origin


def test_a_mean_ensembles_thresholds_are_stored_for_it_and_found_in_any_order(tmp_path):
    """At 50d5b1f tune printed an ensemble's thresholds without storing them, and submit of
    the ensemble used its first member's. Now they are stored keyed by the members' content
    and read back when the same checkpoints predict together (in any order)."""
    import json

    from roadseg.options import PredictOptions
    from roadseg.thresholds import (
        Thresholds,
        ensemble_key,
        store_ensemble_thresholds,
        store_thresholds,
        thresholds_path,
    )

    a, b, c = (tmp_path / f"{name}.ckpt" for name in "abc")
    for path in (a, b, c):
        path.write_bytes(path.name.encode())
    store_thresholds(a, Thresholds(pixel=0.45, patch=0.25, tta=False))  # a's own
    out = store_ensemble_thresholds([str(a), str(b)], Thresholds(pixel=0.3, patch=0.2, tta=False))
    assert out == thresholds_path(a)
    key, members = ensemble_key([str(b), str(a)])
    assert json.loads(out.read_text())["ensembles"][key]["members"] == members

    for order in ((a, b), (b, a)):
        decision, origin = PredictOptions(ckpt=tuple(map(str, order))).mean_decision()
        assert (decision.pixel, decision.patch) == (0.3, 0.2)
        assert "for this ensemble" in origin
    assert PredictOptions(ckpt=(str(a),)).mean_decision()[0].pixel == 0.45  # a's own kept
    with_tta = PredictOptions(ckpt=(str(a), str(b)), tta=True).mean_decision()
    assert with_tta[0].pixel == 0.3 and "none tuned with TTA" in with_tta[1]
    given = PredictOptions(ckpt=(str(a), str(b)), pixel_threshold=0.7).mean_decision()
    assert given[0].pixel == 0.7 and given[1].endswith("overridden by the options given")
    vote = PredictOptions(ckpt=(str(a), str(b)), merge="vote").output_decision()
    assert (vote.pixel, vote.patch) == (0.5, 0.5)

    decision, origin = PredictOptions(ckpt=(str(a), str(c))).mean_decision()  # not tuned
    assert decision.pixel == 0.45 and origin.startswith("the first member's: tuned for f1")
    assert "none tuned for this ensemble: run roadseg tune with the same --ckpt" in origin
    b.write_bytes(b"b, trained further")  # another member is another ensemble
    assert PredictOptions(ckpt=(str(a), str(b))).mean_decision()[0].pixel == 0.45
