"""The two numbers: patch accuracy (the leaderboard's) and road patch F1 (the course's)."""

from __future__ import annotations

import numpy as np
import pytest

from roadseg.cli import main
from roadseg.scoring import patch_scores, score_submission
from tests.conftest import write_raster


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        # 2 road patches found of 3, 1 false alarm, 6 background right: 10 patches
        (
            [1, 1, 0, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            {"patch_accuracy": 0.8, "patch_f1": 2 * 2 / (2 * 2 + 1 + 1),
             "background_f1": 2 * 6 / (2 * 6 + 1 + 1), "patch_precision": 2 / 3,
             "patch_recall": 2 / 3},
        ),
        # all background on 1 road in 4: accuracy is the background share, road F1 is 0
        (
            [0, 0, 0, 0],
            [1, 0, 0, 0],
            {"patch_accuracy": 0.75, "patch_f1": 0.0, "background_f1": 2 * 3 / (2 * 3 + 1),
             "patch_precision": 1.0, "patch_recall": 0.0},
        ),
        # all road: F1 looks fair while accuracy is the road share
        (
            [1, 1, 1, 1],
            [1, 0, 0, 0],
            {"patch_accuracy": 0.25, "patch_f1": 2 / 5, "background_f1": 0.0,
             "patch_precision": 0.25, "patch_recall": 1.0},
        ),
    ],
)  # fmt: skip
def test_patch_scores_by_hand(pred, truth, expected):
    got = patch_scores(np.array(pred), np.array(truth))
    assert got == pytest.approx(expected)


def _mask(tmp_path, name: str, road_patches: list[tuple[int, int]], grey: int = 255) -> None:
    """A 32x32 mask (2x2 patches) with the given patches (row, col) filled with ``grey``."""
    mask = np.zeros((32, 32), np.uint8)
    for r, c in road_patches:
        mask[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = grey
    write_raster(tmp_path / "truth" / name, mask)


def _csv(tmp_path, rows: dict[str, int]) -> str:
    path = tmp_path / "sub.csv"
    path.write_text("id,prediction\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return str(path)


def test_score_a_submission_against_masks_with_the_competition_rule(tmp_path, capsys):
    # Tile 7: road in patch (row 0, col 1). Tile 8: road in (1, 0) drawn anti-aliased at
    # grey 70 (mean 70/255 = 0.27 > 0.25: road by the competition's rule, not binarised).
    _mask(tmp_path, "satimage_7.png", [(0, 1)])
    _mask(tmp_path, "satimage_8.png", [(1, 0)], grey=70)
    # ids are <tile>_<x>_<y>: x the column, y the row of the patch's top-left pixel
    sub = _csv(tmp_path, {
        "007_0_0": 0, "007_0_16": 0, "007_16_0": 1, "007_16_16": 1,  # 1 hit, 1 false alarm
        "008_0_0": 0, "008_0_16": 0, "008_16_0": 0, "008_16_16": 0,  # 1 miss
    })  # fmt: skip
    scores, tiles, patches = score_submission(sub, tmp_path / "truth")
    assert (tiles, patches) == (2, 8)
    assert scores["patch_accuracy"] == pytest.approx(6 / 8)
    assert scores["patch_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert main(["score", sub, "--truth", str(tmp_path / "truth")]) == 0
    printed = capsys.readouterr().out
    assert "patch accuracy (the leaderboard's number)" in printed and "0.7500" in printed
    assert "road patch F1 (the course's score)" in printed and "0.5000" in printed


def test_an_all_background_submission_scores_the_background_share_and_no_f1(tmp_path):
    _mask(tmp_path, "satimage_7.png", [(0, 1)])
    _mask(tmp_path, "satimage_8.png", [])
    sub = _csv(tmp_path, {f"00{t}_{x}_{y}": 0 for t in (7, 8) for x in (0, 16) for y in (0, 16)})
    scores, _, _ = score_submission(sub, tmp_path / "truth")
    assert scores["patch_accuracy"] == pytest.approx(7 / 8)  # the background share
    assert scores["patch_f1"] == 0.0


def test_the_real_ground_truth_scores_itself_perfectly(shared_data, tmp_path):
    """masks-to-submission of real labelled tiles, scored against the same masks."""
    truth = shared_data / "cil-2020" / "training" / "groundtruth"  # anti-aliased grey masks
    sub = tmp_path / "sub.csv"
    assert main(["masks-to-submission", str(truth), "--out", str(sub)]) == 0
    scores, tiles, patches = score_submission(sub, truth)
    assert tiles == 80 and patches == 80 * 625
    assert scores["patch_accuracy"] == 1.0 and scores["patch_f1"] == 1.0
