"""Tiles and folders are told apart by content: the same data reached by another path (a
relative or absolute path, a link, a copy of its test folder) gives the same maps, the
same context and the same submission (issue #33)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from roadseg.cli import main
from roadseg.index import (
    TileFinder,
    distinct_roots,
    distinct_tiles,
    scan,
    scan_many,
    unlabelled_tiles,
)
from roadseg.io import read_raster
from roadseg.maps import MapIndex, context_for, place_tiles
from tests.conftest import write_raster, write_small_checkpoint


def _ways_in(root: Path, tmp_path: Path) -> dict[str, Path]:
    """The dataset ``root`` reached four ways (relative to ``tmp_path``, the working
    folder): its relative path, its absolute path, a link to it, a copy of its test folder."""
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    shutil.copytree(root / "test" / "images", tmp_path / "copy")
    return {
        "relative": Path(os.path.relpath(root, tmp_path)),
        "absolute": root.resolve(),
        "link": Path("link"),
        "copy": Path("copy"),
    }


def _neighbours(maps: MapIndex, images) -> list[tuple[str, ...]]:
    """Each tile's four neighbours by file name: the same tiles whatever their paths."""
    return [
        tuple(Path(maps.neighbour(p, dx, dy) or "-").name
              for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1)))
        for p in images
    ]  # fmt: skip


def test_a_tile_counts_once_however_it_is_reached(mapped_dataset, tmp_path, monkeypatch):
    root, _, _, _ = mapped_dataset
    monkeypatch.chdir(tmp_path)
    ways = _ways_in(root, tmp_path)
    assert distinct_roots([ways["relative"], None, ways["absolute"], ways["link"]]) == [
        str(ways["relative"])
    ]
    alone = scan(root)
    for way in ways.values():  # a second root that is the first (or part of it) adds nothing
        both = scan_many([root, way])
        assert list(both["image"]) == list(alone["image"])  # the first rows are kept
    copies = scan(ways["copy"])
    assert len(distinct_tiles(copies)) == len(copies) == 1  # distinct files stay
    finder = TileFinder(alone["image"])
    test_tile = alone.index[alone["split"] == "test"][0]
    for image in (
        *copies["image"],
        ways["link"] / "test" / "images" / Path(copies["image"][0]).name,
    ):
        assert finder.find(image) == test_tile
    assert finder.find(root / "training" / "groundtruth" / Path(alone["mask"][0]).name) is None


def test_the_maps_are_the_same_however_the_data_is_reached(mapped_dataset, tmp_path, monkeypatch):
    """Before, a tile under two paths counted twice, the copies tied in edge matching and
    the runner-up rule dropped every link: "context: off" or tiles alone."""
    root, _, _, _ = mapped_dataset
    monkeypatch.chdir(tmp_path)
    ways = _ways_in(root, tmp_path)
    seen = {}
    for name, way in ways.items():
        tiles = unlabelled_tiles(way)
        maps, margin, line = context_for([root, way], tiles, 96)
        assert maps is not None and margin == 16, (name, line)
        seen[name] = (line, _neighbours(maps, tiles["image"]))
    assert len(set(map(str, seen.values()))) == 1, seen
    line, neighbours = seen["copy"]
    assert line.endswith(
        "(12 tiles on 1 maps of several tiles; 0 of the 1 tiles predicted stand alone)"
    )
    assert "-" not in neighbours[0]  # the test tile sits inside the map: four neighbours


def test_a_layout_that_loses_the_checkpoints_neighbours_says_so(mapped_dataset, tmp_path):
    """A tile added that ties with one of the checkpoint's own in edge matching (a near
    copy: other bytes, so another tile) costs it its neighbours: said in one line with the
    figure. The map's bottom-right tile is only ever linked to from its left and top
    neighbours, and with a twin each of those links loses to the runner-up rule."""
    root, _, _, places = mapped_dataset
    (corner,) = [tid for tid, place in places.items() if place == (3, 2)]
    image = root / "training" / "images" / f"satimage_{corner}.png"
    near = np.clip(read_raster(image).astype(np.int16) + 1, 0, 255).astype(np.uint8)
    write_raster(tmp_path / "near" / "tile_900.png", near)
    _, margin, line = context_for(
        [root, tmp_path / "near"], unlabelled_tiles(tmp_path / "near"), 96
    )
    assert margin == 16
    assert line.split("\n")[1] == (
        f"context: 2 of the 17 neighbour links of the checkpoint's own maps ({root}) are lost "
        "among the tiles added: tiles there are predicted with less of their map"
    )
    # the checkpoint's own tiles again, by a link: nothing lost, nothing said
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    assert "\n" not in context_for([root, tmp_path / "link"], unlabelled_tiles(root), 96)[2]


def test_submit_writes_the_same_csv_however_the_data_is_reached(
    mapped_dataset, tmp_path, monkeypatch, capsys
):
    root, _, _, _ = mapped_dataset
    ckpt = write_small_checkpoint(tmp_path / "model.ckpt")
    contents = torch.load(ckpt, weights_only=False)
    contents["datamodule_hyper_parameters"] = {"root": str(root), "num_workers": 0}
    torch.save(contents, ckpt)
    monkeypatch.chdir(tmp_path)
    ways = _ways_in(root, tmp_path)
    args = ["submit", "--ckpt", str(ckpt), "--quiet"]
    assert main([*args, "--out", "default.csv"]) == 0
    lines = {"default": _context_line(capsys.readouterr().out)}
    for name, way in ways.items():
        assert main([*args, "--data", str(way), "--out", f"{name}.csv"]) == 0
        lines[name] = _context_line(capsys.readouterr().out)
        assert (tmp_path / f"{name}.csv").read_bytes() == (tmp_path / "default.csv").read_bytes()
    assert len(set(lines.values())) == 1 and lines["copy"].startswith("context: 16 px"), lines


def _context_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("context:"))


def test_the_real_maps_are_the_same_however_the_tiles_are_reached(shared_data, tmp_path):
    """cil-2022: its 264 tiles by the link, its real path, and a copy of its test folder."""
    link = tmp_path / "cil-2022"
    link.symlink_to(shared_data / "cil-2022", target_is_directory=True)
    shutil.copytree(shared_data / "cil-2022" / "test" / "images", tmp_path / "copy")
    real = (shared_data / "cil-2022").resolve()
    seen = set()
    for way in (link, real, tmp_path / "copy"):
        tiles = unlabelled_tiles(way)
        maps, margin, line = context_for([link, way], tiles, 96)
        assert margin == 96, line
        seen.add((line, tuple(_neighbours(maps, tiles["image"]))))
    assert len(seen) == 1
    ((line, _),) = seen
    assert line == (
        "context: 96 px of neighbouring tiles around each tile (264 tiles on 2 maps of several "
        "tiles; 0 of the 144 tiles predicted stand alone)"
    )


@pytest.mark.parametrize("how", ["link", "copy"])
def test_a_map_index_finds_a_tile_by_another_path(mapped_dataset, tmp_path, how):
    root, _, _, _ = mapped_dataset
    layout = place_tiles(scan(root))
    maps = MapIndex(layout)
    image = Path(layout["image"][0])
    other = tmp_path / how / image.name
    other.parent.mkdir()
    if how == "link":
        other.symlink_to(image)
    else:
        shutil.copyfile(image, other)
    assert maps.place(other) == maps.place(image) is not None
    assert maps.place(tmp_path / "missing.png") is None
