"""Post-processing of road masks: gap closing along roads and small-component removal."""

import numpy as np
import pytest

from roadseg.errors import RoadsegError
from roadseg.patches import patch_labels
from roadseg.postprocess import Decision, close_gaps, remove_small_components


def road(shape=(64, 64)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal", "antidiagonal"])
def test_a_gap_along_a_road_is_bridged_up_to_the_length(direction):
    def line(gap: int) -> tuple[np.ndarray, np.ndarray]:
        mask, full = road(), road()
        for i in range(4, 60):
            r, c = {
                "horizontal": (30, i), "vertical": (i, 30),
                "diagonal": (i, i), "antidiagonal": (i, 63 - i),
            }[direction]  # fmt: skip
            full[r, c] = True
            mask[r, c] = not 30 <= i < 30 + gap
        return mask, full

    mask, full = line(gap=8)
    np.testing.assert_array_equal(close_gaps(mask, 8), full)  # bridged, nothing else added
    mask, _ = line(gap=9)
    np.testing.assert_array_equal(close_gaps(mask, 8), mask)  # a longer gap stays open


def test_closing_neither_fattens_a_road_nor_grows_at_the_edges():
    mask = road()
    mask[20:26, :] = True  # a 6 px road crossing the whole tile
    mask[:, 40:44] = True  # and one crossing it
    np.testing.assert_array_equal(close_gaps(mask, 16), mask)
    parallel = road()
    parallel[10:16, :] = parallel[24:30, :] = True  # two roads 8 px apart stay two roads
    np.testing.assert_array_equal(close_gaps(parallel, 16), parallel)
    blob = road()
    blob[0:5, 0:5] = True  # touching the corner: no growth from the border
    np.testing.assert_array_equal(close_gaps(blob, 16), blob)


def test_small_components_go_and_large_ones_stay_8_connected():
    mask = road()
    mask[2:6, 2:6] = True  # 16 px blob: removed at min_area 20
    for i in range(10, 40):
        mask[i, i] = True  # a 30 px diagonal line: one 8-connected component, kept
    out = remove_small_components(mask, 20)
    assert not out[2:6, 2:6].any()
    np.testing.assert_array_equal(out[8:], mask[8:])
    np.testing.assert_array_equal(remove_small_components(mask, 0), mask)  # off


def test_a_decision_is_threshold_then_cleanup_then_the_patch_rule():
    prob = np.full((32, 48), 0.1, dtype=np.float32)
    prob[4:12, 0:48] = 0.9  # a road of 8 rows: half of each patch in the first patch row
    prob[4:12, 20:30] = 0.55  # fainter here: road at pixel 0.5, not at 0.6
    prob[20:29, 36:45] = 0.95  # an 81 px speck: a third of its patch
    plain = Decision()
    np.testing.assert_array_equal(plain.mask(prob), (prob > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(plain.labels(prob), patch_labels((prob > 0.5).astype(np.float32)))
    cleaned = Decision(pixel=0.6, patch=0.2, min_area=100)
    expected = remove_small_components(prob > 0.6, 100)
    np.testing.assert_array_equal(cleaned.mask(prob), expected.astype(np.uint8))
    np.testing.assert_array_equal(
        cleaned.labels(prob), patch_labels(expected.astype(np.float32), threshold=0.2)
    )
    assert cleaned.labels(prob)[1, 2] == 0 and plain.labels(prob)[1, 2] == 1  # speck gone
    assert "min area 100 px" in cleaned.describe() and cleaned.postprocessing


def test_bad_decisions_are_refused():
    with pytest.raises(RoadsegError, match="pixel threshold"):
        Decision(pixel=1.5)
    with pytest.raises(RoadsegError, match="min_area"):
        Decision(min_area=-1)
    assert Decision().replace(pixel=None, min_area=50) == Decision(min_area=50)
