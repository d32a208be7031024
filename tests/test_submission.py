import re

import numpy as np
import pytest

from roadseg.errors import RoadsegError
from roadseg.index import scan
from roadseg.io import read_mask_grey
from roadseg.submission import (
    expected_ids,
    masks_to_submission,
    read_submission,
    submission_to_masks,
    tile_rows,
    validate_submission,
    write_submission,
)
from tests.conftest import write_raster


def competition_script_rows(path):
    """The competition's mask_to_submission.py, restated: columns outer, rows inner."""
    im = read_mask_grey(path)
    number = int(re.findall(r"\d+", path.stem)[-1])
    for j in range(0, im.shape[1], 16):
        for i in range(0, im.shape[0], 16):
            yield f"{number:03d}_{j}_{i}", int(np.mean(im[i : i + 16, j : j + 16]) > 0.25)


def test_ids_name_column_then_row():
    labels = np.array([[0, 1], [1, 0], [0, 0]], np.uint8)  # 3 rows, 2 columns
    assert tile_rows(7, labels) == [
        ("007_0_0", 0),
        ("007_0_16", 1),
        ("007_0_32", 0),
        ("007_16_0", 1),
        ("007_16_16", 0),
        ("007_16_32", 0),
    ]


def test_masks_to_submission_matches_the_competition_script(tmp_path):
    rng = np.random.default_rng(3)
    masks = tmp_path / "masks"
    for n, (h, w) in {5: (48, 32), 144: (40, 40)}.items():  # 40 is no multiple of 16
        write_raster(masks / f"pred_2022_{n}.png", (rng.random((h, w)) * 255).astype(np.uint8))
    out = tmp_path / "sub.csv"
    rows = masks_to_submission(masks, out)
    by_tile_id = sorted(masks.iterdir(), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    expected = [r for p in by_tile_id for r in competition_script_rows(p)]
    frame = read_submission(out)
    assert rows == len(expected) == 6 + 9
    assert list(zip(frame.id, frame.prediction.astype(int), strict=True)) == expected
    assert out.read_text().splitlines()[0] == "id,prediction"


def test_round_trip_through_csv(tmp_path):
    labels = {1: np.eye(4, dtype=np.uint8), 2: 1 - np.eye(4, dtype=np.uint8)}
    write_submission(
        [r for t, lab in labels.items() for r in tile_rows(t, lab)], tmp_path / "s.csv"
    )
    back = submission_to_masks(tmp_path / "s.csv", 64, 64)
    assert back.keys() == labels.keys()
    for t in labels:
        np.testing.assert_array_equal(back[t], labels[t])


@pytest.fixture
def test_images(tmp_path):
    for n in (144, 145):
        write_raster(tmp_path / "imgs" / f"satimage_{n}.png", np.zeros((3, 32, 32), np.uint8))
    return tmp_path / "imgs"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_accepts_a_complete_submission(tmp_path, test_images):
    ids = expected_ids(scan(test_images))
    path = _write(
        tmp_path / "ok.csv", ["id,prediction", *[f"{i},{k % 2}" for k, i in enumerate(ids)]]
    )
    report = validate_submission(path, test_images)
    assert (report.rows, report.tiles, report.road_fraction) == (8, 2, 0.5)


def test_a_spreadsheet_saved_submission_is_accepted(tmp_path, test_images):
    """A CSV saved again by a spreadsheet program: UTF-8 byte-order mark, CRLF line ends and
    a trailing blank line, as the competition accepts it."""
    ids = expected_ids(scan(test_images))
    lines = ["id,prediction", *[f"{i},{k % 2}" for k, i in enumerate(ids)]]
    path = tmp_path / "saved.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    report = validate_submission(path, test_images)
    assert (report.rows, report.tiles, report.road_fraction) == (8, 2, 0.5)
    frame = read_submission(path)
    assert list(frame.columns) == ["id", "prediction"]
    assert list(frame["id"]) == ids


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: ["Id,Prediction", *rows[1:]], "header is"),
        (lambda rows: rows[:-1], "1 ids missing"),
        (lambda rows: [*rows, rows[1]], "1 duplicated ids"),
        (lambda rows: [*rows, "146_0_0,1"], "ids that no test tile has"),
        (lambda rows: [*rows[:-1], rows[-1][:-1] + "2"], "only 0 or 1"),
    ],
    ids=["header", "missing", "duplicate", "extra", "value"],
)
def test_validate_rejects_broken_submissions(tmp_path, test_images, edit, message):
    ids = expected_ids(scan(test_images))
    rows = ["id,prediction", *[f"{i},0" for i in ids]]
    path = _write(tmp_path / "bad.csv", edit(rows))
    with pytest.raises(RoadsegError, match=rf"bad.csv: .*{message}"):
        validate_submission(path, test_images)


def test_real_test_sets_have_the_competition_row_counts(shared_data):
    for name, rows in {"cil-2022": 90_000, "cil-2020": 135_736}.items():
        frame = scan(shared_data / name)
        assert len(expected_ids(frame[frame.split == "test"])) == rows
