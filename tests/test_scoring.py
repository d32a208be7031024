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


def _refusal(capsys, sub: str, truth) -> str:
    assert main(["score", sub, "--truth", str(truth)]) == 2
    return capsys.readouterr().err.strip()


def test_score_refuses_an_id_given_twice(tmp_path, capsys):
    """At 50d5b1f the last of two rows of an id counted, without a word."""
    _mask(tmp_path, "satimage_7.png", [(0, 1)])
    rows = [f"007_{x}_{y},0" for x in (0, 16) for y in (0, 16)] + ["007_16_0,1"]
    sub = tmp_path / "sub.csv"
    sub.write_text("id,prediction\n" + "\n".join(rows) + "\n")
    assert _refusal(capsys, str(sub), tmp_path / "truth") == (
        f"roadseg: error: {sub}: 1 duplicated ids (first: 007_16_0)"
    )


def test_score_refuses_ids_of_tiles_without_a_mask(tmp_path, capsys):
    """A CSV of tiles 7 and 9 against the masks of tiles 7 and 8: tile 9 has no mask."""
    _mask(tmp_path, "satimage_7.png", [(0, 1)])
    _mask(tmp_path, "satimage_8.png", [])
    sub = _csv(tmp_path, {f"00{t}_{x}_{y}": 0 for t in (7, 9) for x in (0, 16) for y in (0, 16)})
    assert _refusal(capsys, sub, tmp_path / "truth") == (
        f"roadseg: error: {sub}: 4 ids of 1 tile with no mask in {tmp_path / 'truth'} "
        "(first: 009_0_0): the CSV's tiles are not the truth's; score it against its own "
        "tiles' masks"
    )


def test_score_refuses_ids_outside_the_masks_grid(tmp_path, capsys):
    """A CSV of 48x48 tiles (3x3 patches) against 32x32 masks of the same ids: the tiles are
    not the truth's (a cil-2020 test CSV, 608x608, against the 400x400 training masks)."""
    _mask(tmp_path, "satimage_7.png", [(0, 1)])
    sub = _csv(tmp_path, {f"007_{x}_{y}": 0 for x in (0, 16, 32) for y in (0, 16, 32)})
    assert _refusal(capsys, sub, tmp_path / "truth") == (
        f"roadseg: error: {sub}: 5 ids outside their tile's mask (first: 007_0_32; "
        "satimage_7.png is 32x32): the CSV's tiles are not the truth's"
    )


def test_a_cil_2020_test_csv_is_not_scored_against_the_training_masks(shared_data, tmp_path):
    """At 50d5b1f: "23 tiles scored" without a word. The test tiles are 608x608."""
    from roadseg.errors import RoadsegError
    from roadseg.index import unlabelled_tiles
    from roadseg.submission import expected_ids

    test = unlabelled_tiles(shared_data / "cil-2020")
    sub = _csv(tmp_path, dict.fromkeys(expected_ids(test), 0))
    with pytest.raises(RoadsegError, match="the CSV's tiles are not the truth's"):
        score_submission(sub, shared_data / "cil-2020" / "training" / "groundtruth")
