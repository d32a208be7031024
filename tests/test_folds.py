import numpy as np
import pytest

from roadseg.errors import RoadsegError
from roadseg.folds import assign_folds, split_stages, tile_positions
from roadseg.index import scan
from tests.conftest import smooth_map, write_raster


@pytest.fixture
def mapped_tiles(tmp_path):
    """Two maps (4x3 and 2x2 tiles of 32 px) cut into tiles with shuffled ids."""
    rng = np.random.default_rng(1)
    truth, tiles = {}, []
    for m, (cols, rows) in enumerate([(4, 3), (2, 2)]):
        big = smooth_map(rows * 32, cols * 32, seed=m)
        tiles += [
            (m, c, r, big[:, r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32])
            for r in range(rows)
            for c in range(cols)
        ]
    ids = rng.permutation(len(tiles)) + 1
    for (m, c, r, pixels), tid in zip(tiles, ids, strict=True):
        write_raster(tmp_path / "d" / "training" / "images" / f"satimage_{tid}.png", pixels)
        write_raster(
            tmp_path / "d" / "training" / "groundtruth" / f"satimage_{tid}.png",
            np.zeros((32, 32), np.uint8),
        )
        truth[int(tid)] = (m, c, r)
    return scan(tmp_path / "d"), truth


def test_positions_are_recovered_from_the_edges(mapped_tiles):
    frame, truth = mapped_tiles
    pos = tile_positions(frame)
    assert pos["map"].nunique() == 2
    for (tid, (m, c, r)), (_, p) in zip(
        sorted(truth.items()), pos.assign(t=frame.tile_id).sort_values("t").iterrows(), strict=True
    ):
        same_map = pos[(frame.tile_id.map(lambda t: truth[t][0]) == m).to_numpy()]
        origin = same_map[["col", "row"]].min()
        assert (p["col"] - origin["col"], p["row"] - origin["row"]) == (c, r), tid


def test_blocks_keep_neighbours_together(mapped_tiles):
    frame, truth = mapped_tiles
    folded = assign_folds(frame, 2, block=2)
    for (m, c, r), fold in zip([truth[t] for t in folded.tile_id], folded.fold, strict=True):
        partner = (
            next(t for t, v in truth.items() if v == (m, c ^ 1, r))
            if (m, c ^ 1, r) in truth.values()
            else None
        )
        if partner is not None:  # the tile beside it in the same 2x2 block
            assert folded.loc[folded.tile_id == partner, "fold"].item() == fold
    assert set(folded.fold) == {0, 1}


def test_split_stages(mapped_tiles):
    frame, _ = mapped_tiles
    geo = split_stages(frame, split="geographic", folds=2, fold=1)
    assert set(geo.stage) == {"train", "val"}
    with pytest.raises(RoadsegError, match="fold 2 does not exist"):
        split_stages(frame, split="geographic", folds=2, fold=2)
    with pytest.raises(RoadsegError, match="unknown split"):
        split_stages(frame, split="nearby")
