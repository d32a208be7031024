"""Tiles placed back on the maps they were cut from, and tiles seen in context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from roadseg.index import scan
from roadseg.io import read_image
from roadseg.maps import MapIndex, context_image, has_neighbours, place_tiles
from roadseg.predict import Predictor
from tests.conftest import TILE, smooth_map, write_raster

MAPS = [(4, 3), (2, 2)]  # (cols, rows): map 0 is the larger one


@pytest.fixture
def two_maps(tmp_path):
    """Two textured maps cut into 32-px tiles, shuffled and renamed, the tiles of every
    second place moved to a second folder (as test tiles released apart). Returns the
    maps, the combined index and the true place of every image."""
    big = [smooth_map(rows * TILE, cols * TILE, seed=m) for m, (cols, rows) in enumerate(MAPS)]
    places = [(m, c, r) for m, (cols, rows) in enumerate(MAPS) for r in range(rows)
              for c in range(cols)]  # fmt: skip
    ids = np.random.default_rng(7).permutation(len(places)) + 100
    truth = {}
    for (m, c, r), tid in zip(places, ids, strict=True):
        pixels = big[m][:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        if (c + r) % 2:
            path = tmp_path / "later" / f"tile_{tid}.png"
        else:
            path = tmp_path / "data" / "training" / "images" / f"satimage_{tid}.png"
            write_raster(tmp_path / "data" / "training" / "groundtruth" / path.name,
                         np.zeros((TILE, TILE), np.uint8))  # fmt: skip
        write_raster(path, pixels)
        truth[str(path)] = (m, c, r)
    frame = pd.concat([scan(tmp_path / "data"), scan(tmp_path / "later")], ignore_index=True)
    return big, frame, truth


def test_the_exact_layout_comes_back_from_shuffled_tiles_in_two_folders(two_maps):
    _, frame, truth = two_maps
    layout = place_tiles(frame)
    got = {str(p): (m, c, r) for p, m, c, r in
           zip(layout["image"], layout["map"], layout["col"], layout["row"], strict=True)}  # fmt: skip
    assert got == truth
    assert has_neighbours(layout)


def test_tiles_without_neighbours_each_stand_alone(tmp_path):
    for i in range(4):  # unrelated noise tiles: no edge continues another
        noise = np.random.default_rng(i).integers(0, 255, (3, TILE, TILE), dtype=np.uint8)
        write_raster(tmp_path / "solo" / f"img_{i}.png", noise)
    layout = place_tiles(scan(tmp_path / "solo"))
    assert sorted(layout["map"]) == [0, 1, 2, 3]
    assert (layout[["col", "row"]] == 0).all().all() and not has_neighbours(layout)
    image = layout["image"].iloc[0]
    np.testing.assert_array_equal(  # in context of nothing: the tile's own reflection
        context_image(image, MapIndex(layout), 8),
        np.pad(read_image(image), ((0, 0), (8, 8), (8, 8)), mode="reflect"),
    )


def _map_image(big: np.ndarray) -> np.ndarray:
    return big.astype(np.float32) / 255


def test_context_is_the_map_around_the_tile_and_reflection_at_its_edge(two_maps):
    big, frame, truth = two_maps
    maps = MapIndex(place_tiles(frame))
    margin = 10
    for path, (m, c, r) in truth.items():
        got = context_image(path, maps, margin)
        padded = np.pad(_map_image(big[m]), ((0, 0), (margin, margin), (margin, margin)),
                        mode="reflect")  # fmt: skip
        top, left = r * TILE, c * TILE  # in padded coordinates the tile starts at +margin
        want = padded[:, top : top + TILE + 2 * margin, left : left + TILE + 2 * margin]
        inner = (slice(None), slice(margin, margin + TILE), slice(margin, margin + TILE))
        np.testing.assert_array_equal(got[inner], want[inner])
        # every margin pixel inside the map is the neighbour's; outside it, reflection of
        # the tile, which at the map's own edge is the map's reflection too
        interior = 0 < c < MAPS[m][0] - 1 and 0 < r < MAPS[m][1] - 1
        if interior:
            np.testing.assert_array_equal(got, want)


class LocalNet(torch.nn.Module):
    """A network whose output at a pixel is a function of the 7x7 pixels around it, the
    image reflected at its edges: three unpadded 3x3 convolutions after a reflection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = torch.nn.Sequential(
            *[torch.nn.Conv2d(3 if i == 0 else 4, 4 if i < 2 else 1, 3) for i in range(3)]
        )

    def forward(self, x):
        return self.convs(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"))


def test_in_context_prediction_equals_the_whole_map_cropped(two_maps):
    """With a margin as wide as the receptive field, predicting each tile in context is
    predicting the whole map: every pixel of every tile, at the map's edges too (where the
    context is the tile's reflection, as the map's is)."""
    big, frame, truth = two_maps
    layout = place_tiles(frame)
    predictor = Predictor([LocalNet()], progress=False, device="cpu", batch_size=3)
    for m in range(len(MAPS)):
        whole = predictor.predict_image(_map_image(big[m]))
        tiles = layout[layout["map"] == m]
        for row, prob in predictor.predict_index(tiles, context=MapIndex(layout), margin=3):
            _, c, r = truth[str(row["image"])]
            crop = whole[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            np.testing.assert_allclose(prob, crop, atol=1e-5)
        alone = next(iter(predictor.predict_index(tiles.iloc[:1])))[1]
        _, c, r = truth[str(tiles["image"].iloc[0])]
        crop = whole[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        assert np.abs(alone - crop).max() > 1e-3  # alone, its border pixels differ


def test_maps_command_places_tiles_from_two_folders(two_maps, tmp_path, capsys):
    from roadseg.cli import main

    _, frame, truth = two_maps
    data, later = tmp_path / "data", tmp_path / "later"
    assert main(["maps", str(data), "--extra", str(later), "--out", str(tmp_path / "out")]) == 0
    layout = pd.read_csv(tmp_path / "out" / "layout.csv")
    got = {f: (m, c, r) for f, m, c, r in zip(layout.file, layout["map"], layout.col, layout.row,
                                              strict=True)}  # fmt: skip
    assert got == truth
    assert set(layout.split) == {"train", "val", "test"}
    for m in range(len(MAPS)):
        for name in ("map_{}.png", "map_{}_image.tif", "map_{}_labels.tif"):
            assert (tmp_path / "out" / name.format(m)).is_file()
    assert "map 0: 12 tiles on 4 x 3" in capsys.readouterr().out


def test_the_cil_2022_tiles_lie_on_two_maps_of_12_by_12(shared_data, tmp_path):
    from roadseg.maps import write_maps

    table = write_maps([shared_data / "cil-2022"], tmp_path / "maps")
    assert len(table) == 120 + 144
    sizes = table.groupby("map").agg(n=("map", "size"), cols=("col", "max"), rows=("row", "max"))
    assert len(sizes) == 2 and (sizes.n > 120).all()  # every tile on one of two maps
    assert (sizes.cols == 11).all() and (sizes.rows == 11).all()  # 12 x 12 places each
    assert not table.duplicated(["map", "col", "row"]).any()  # no two tiles on one place
    with rasterio.open(tmp_path / "maps" / "map_0_labels.tif") as labels:
        assert labels.shape == (4800, 4800) and labels.nodata == 128


def _datamodule(root, **kw):
    from roadseg.datamodule import RoadDataModule

    dm = RoadDataModule(root=str(root), crop_size=24, batch_size=4, num_workers=0, augment="none",
                        val_fraction=0.2, seed=0, context=True, **kw)  # fmt: skip
    dm.setup()
    return dm


def _locate(sample: dict, big: np.ndarray, places: dict) -> tuple[int, int]:
    """(top, left) of a 24-px training window on the map: the crop of the map, near its
    tile, that its image equals (asserted to exist)."""
    image_map, img = big.astype(np.float32) / 255, sample["image"].numpy()
    tile_c, tile_r = places[int(sample["tile_id"])]
    for top in range(max(0, tile_r * TILE - 12), min(tile_r * TILE + TILE - 12, 3 * TILE - 24) + 1):
        for left in range(
            max(0, tile_c * TILE - 12), min(tile_c * TILE + TILE - 12, 4 * TILE - 24) + 1
        ):
            if np.array_equal(img, image_map[:, top : top + 24, left : left + 24]):
                return top, left
    raise AssertionError("a window is a crop of the map")


def test_context_windows_cross_tile_edges_and_are_the_map(mapped_dataset):
    root, big, road, places = mapped_dataset
    dm = _datamodule(root)
    dataset = dm.train_dataloader().dataset
    mask_map = road > 127
    crossing = 0
    for seed in range(200):
        i = seed % len(dataset)
        sample = dataset[(i, seed)]
        top, left = _locate(sample, big, places)
        np.testing.assert_array_equal(sample["mask"][0].numpy() > 0.5,
                                      mask_map[top : top + 24, left : left + 24])  # fmt: skip
        crossing += top // TILE != (top + 23) // TILE or left // TILE != (left + 23) // TILE
        val_or_test = {places[t] for t in dm.frame("val")["tile_id"]} | {(1, 1)}
        covered = {(x // TILE, y // TILE) for y in (top, top + 23) for x in (left, left + 23)}
        assert not covered & val_or_test, "a window never covers a validation or test tile"
    assert crossing > 50


def test_wrong_labels_on_validation_tiles_change_no_training_sample(mapped_dataset):
    root, _, _, _ = mapped_dataset
    before = _datamodule(root).train_dataloader().dataset
    keys = [(seed % len(before), seed) for seed in range(100)]
    samples = [before[k] for k in keys]
    dm = _datamodule(root)
    for mask in dm.frame("val")["mask"]:  # plant wrong labels: all road
        write_raster(Path(mask), np.full((TILE, TILE), 255, np.uint8))
    after = _datamodule(root).train_dataloader().dataset
    for key, sample in zip(keys, samples, strict=True):
        again = after[key]
        assert torch.equal(again["image"], sample["image"]) and torch.equal(
            again["mask"], sample["mask"]
        )


def test_context_for_skips_a_training_root_that_is_not_here(two_maps, tmp_path):
    """A checkpoint trained on another machine names a data folder that is not here: the
    tiles to predict still get the context of each other."""
    from roadseg.maps import context_for

    _, frame, _ = two_maps
    maps, margin, line = context_for([tmp_path / "elsewhere", None], frame, 96)
    assert maps is not None and margin == 16  # capped to whole patches inside a 32-px tile
    assert "context: 16 px" in line
    assert context_for([], frame, 0)[:2] == (None, 0)


def test_validation_in_context_sees_the_map_and_scores_the_tile(mapped_dataset):
    from roadseg.task import RoadSegTask

    root, big, _, places = mapped_dataset
    dm = _datamodule(root)
    batch = next(iter(dm.val_dataloader()))
    margin = int(batch["margin"][0])
    assert margin == 16  # 96 px capped to whole patches inside a 32-px tile
    image, mask = batch["image"][0].numpy(), batch["mask"][0]
    assert image.shape[1:] == (TILE + 2 * margin,) * 2 and mask.shape[1:] == (TILE, TILE)
    c, r = places[int(batch["tile_id"][0])]
    tile = big[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE].astype(np.float32) / 255
    np.testing.assert_array_equal(image[:, margin:-margin, margin:-margin], tile)
    task = RoadSegTask(model="unet", model_args={"encoder": "tu-tf_efficientnet_lite0",
                                                 "encoder_weights": None})  # fmt: skip
    task.log = lambda *a, **k: None  # outside a Trainer
    loss = task._shared_step(batch, "val")  # logits cropped back to the tile's mask
    assert torch.isfinite(loss) and task.val_metrics.update_called
