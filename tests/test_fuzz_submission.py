"""Property test: any mask gives a CSV that validates and reads back to the same patch labels."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from roadseg.index import scan
from roadseg.patches import patch_grid, patch_labels
from roadseg.submission import submission_to_masks, tile_rows, validate_submission, write_submission
from tests.conftest import write_raster

masks = st.tuples(st.integers(1, 70), st.integers(1, 70)).flatmap(
    lambda hw: arrays(
        np.uint8, hw, elements=st.sampled_from([0, 1, 60, 64, 65, 127, 128, 200, 255])
    )
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mask=masks, tile=st.integers(0, 1500))
def test_any_mask_round_trips_through_a_valid_csv(tmp_path_factory, mask, tile):
    tmp = tmp_path_factory.mktemp("fuzz")
    h, w = mask.shape
    write_raster(tmp / "test" / f"satimage_{tile}.png", np.zeros((3, h, w), np.uint8))
    labels = patch_labels(mask / 255.0)
    assert labels.shape == patch_grid(h, w)
    rows = tile_rows(tile, labels)
    assert write_submission(rows, tmp / "sub.csv") == labels.size
    report = validate_submission(tmp / "sub.csv", scan(tmp / "test"))
    assert report.rows == labels.size
    np.testing.assert_array_equal(submission_to_masks(tmp / "sub.csv", h, w)[tile], labels)
