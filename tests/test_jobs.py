"""Many scenes: lists (folder, text file, STAC), the manifest (skip, redo, refuse), shards,
Cloud-Optimized GeoTIFFs, and Ray; the real tiles as georeferenced scenes."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.jobs import parse_shard, predict_many, scene_list, shard
from roadseg.options import PredictOptions
from tests.conftest import smooth_map, write_raster, write_small_checkpoint


def write_scenes(folder, sizes=((200, 260), (230, 180), (1100, 700))):
    """Georeferenced RGB scenes in EPSG:32632 (0.5 m), one per size."""
    paths = []
    for k, (h, w) in enumerate(sizes):
        transform = from_origin(500_000 + 1_000 * k, 5_200_000, 0.5, 0.5)
        paths.append(write_raster(folder / f"scene_{k}.tif", smooth_map(h, w, seed=k),
                                  crs="EPSG:32632", transform=transform))  # fmt: skip
    return paths


def options(ckpt):
    return PredictOptions(ckpt=(str(ckpt),), quiet=True, window=256, overlap=64, backend="torch")


def outputs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))}


def test_scene_lists_from_folders_text_files_and_stac(tmp_path):
    paths = write_scenes(tmp_path / "in", sizes=((64, 64), (64, 64)))
    assert [s.id for s in scene_list([str(tmp_path / "in")])] == ["scene_0", "scene_1"]
    listing = tmp_path / "list.txt"
    listing.write_text("# scenes\nin/scene_1.tif\n\n" + str(paths[0]) + "\n")
    assert [s.path for s in scene_list([str(listing)])] == [
        str(paths[0]),
        str(tmp_path / "in/scene_1.tif"),
    ]
    item = {"type": "Feature", "id": "tile-a", "assets": {
        "visual": {"href": "in/scene_0.tif", "type": "image/tiff; application=geotiff"},
        "thumb": {"href": "a.png", "type": "image/png"}}}  # fmt: skip
    (tmp_path / "item.json").write_text(json.dumps(item))
    collection = {"type": "FeatureCollection", "features": [item, {**item, "id": "tile-b"}]}
    (tmp_path / "items.json").write_text(json.dumps(collection))
    assert scene_list([str(tmp_path / "item.json")])[0].path == str(tmp_path / "in/scene_0.tif")
    assert [s.id for s in scene_list([str(tmp_path / "items.json")], asset="visual")] == [
        "tile-a",
        "tile-b",
    ]
    with pytest.raises(RoadsegError, match="no asset .red.; its assets: visual .*, thumb"):
        scene_list([str(tmp_path / "item.json")], asset="red")
    (tmp_path / "other").mkdir()
    write_raster(tmp_path / "other" / "scene_0.tif", smooth_map(64, 64, seed=9))
    with pytest.raises(RoadsegError, match="two scenes would write scene_0.tif"):
        scene_list([str(tmp_path / "in"), str(tmp_path / "other")])


def test_shards_split_the_list_without_overlap():
    scenes = list(range(10))
    parts = [shard(scenes, i, 3) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == scenes and parts[0] == [0, 3, 6, 9]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(RoadsegError, match="--shard"):
            parse_shard(bad)


def test_a_rerun_skips_what_is_done_redoes_what_is_missing_and_refuses_another_run(
    tmp_path, capsys
):
    write_scenes(tmp_path / "in")
    ckpt = write_small_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "out"
    first = predict_many(options(ckpt), [str(tmp_path / "in")], out, output="prob8")
    assert (first.done, first.skipped) == (3, 0)
    before = outputs(out)
    assert sorted(before) == ["scene_0.tif", "scene_1.tif", "scene_2.tif"]
    (out / "scene_1.tif").unlink()  # lost output: predicted again
    again = predict_many(options(ckpt), [str(tmp_path / "in")], out, output="prob8")
    assert (again.done, again.skipped) == (1, 2)
    assert outputs(out) == before
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0].startswith("id,scene,output,status") and len(rows) == 4
    assert all(",done," in r for r in rows[1:])
    assert "3 scenes: 1 predicted, 2 done before (skipped), 0 failed" in capsys.readouterr().out
    with pytest.raises(RoadsegError, match="outputs of another run"):
        predict_many(options(ckpt), [str(tmp_path / "in")], out, output="mask")


def test_shards_then_merge_give_the_one_process_outputs(tmp_path):
    write_scenes(tmp_path / "in")
    ckpt = write_small_checkpoint(tmp_path / "m.ckpt")
    predict_many(options(ckpt), [str(tmp_path / "in")], tmp_path / "one", output="prob8")
    for i in (1, 2, 3):
        predict_many(options(ckpt), [str(tmp_path / "in")], tmp_path / "sharded",
                     output="prob8", shard_spec=f"{i}/3")  # fmt: skip
    assert not (tmp_path / "sharded" / "manifest.csv").exists()
    args = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "sharded"), "--ckpt", str(ckpt),
            "--window", "256", "--overlap", "64", "--backend", "torch", "--output", "prob8",
            "--shard", "1/3", "--merge-manifest", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert outputs(tmp_path / "sharded") == outputs(tmp_path / "one")
    assert len((tmp_path / "sharded" / "manifest.csv").read_text().splitlines()) == 4


def test_cog_output_is_valid_and_has_overviews(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    write_scenes(tmp_path / "in", sizes=((1100, 1300),))
    ckpt = write_small_checkpoint(tmp_path / "m.ckpt")
    args = ["predict", str(tmp_path / "in" / "scene_0.tif"), "--out", str(tmp_path / "p.tif"),
            "--ckpt", str(ckpt), "--window", "512", "--backend", "torch", "--cog", "--quiet",
            "--output", "prob8"]  # fmt: skip
    assert main(args) == 0
    valid, errors, _ = cog_validate(tmp_path / "p.tif")
    assert valid and not errors
    with rasterio.open(tmp_path / "p.tif") as cog:
        assert cog.overviews(1) and cog.block_shapes[0] == (512, 512)
        assert cog.crs.to_epsg() == 32632 and cog.nodata == 255
        assert cog.scales[0] == pytest.approx(1 / 254)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "m.ckpt", "p.qml", "p.tif"]


def test_ray_workers_give_the_one_process_outputs(tmp_path):
    """Scenes of 4 and 24 chunks are split into one task per worker and merged by the
    driver; the outputs are those of one process."""
    pytest.importorskip("ray")  # installed with roadseg[dev]: CI runs this
    write_scenes(tmp_path / "in")
    ckpt = write_small_checkpoint(tmp_path / "m.ckpt")
    predict_many(options(ckpt), [str(tmp_path / "in")], tmp_path / "one", output="mask", chunk=256)
    ray = predict_many(options(ckpt), [str(tmp_path / "in")], tmp_path / "ray", output="mask",
                       chunk=256, ray="local", workers=2)  # fmt: skip
    assert ray.done == 3
    assert not list((tmp_path / "ray").glob("*.parts"))
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "one")


def test_real_tiles_as_georeferenced_scenes(shared_data, tmp_path):
    """Three real test tiles, georeferenced in a projected CRS, predicted as one list in
    one process and as two shards: the same outputs, on the tiles' own grid."""
    from roadseg.io import read_raster

    tiles = sorted((shared_data / "cil-2022" / "test" / "images").glob("*.png"))[:3]
    scenes = tmp_path / "scenes"
    for k, tile in enumerate(tiles):
        rgb = read_raster(tile)[:3]
        write_raster(scenes / f"{tile.stem}.tif", rgb, crs="EPSG:32632",
                     transform=from_origin(500_000 + 200 * k, 5_200_000, 0.5, 0.5))  # fmt: skip
    ckpt = write_small_checkpoint(tmp_path / "m.ckpt")
    predict_many(options(ckpt), [str(scenes)], tmp_path / "one", output="prob")
    for i in (1, 2):
        predict_many(options(ckpt), [str(scenes)], tmp_path / "two", output="prob",
                     shard_spec=f"{i}/2", merge=i == 2)  # fmt: skip
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    with rasterio.open(tmp_path / "one" / f"{tiles[0].stem}.tif") as out:
        prob = out.read(1)
        assert out.crs.to_epsg() == 32632 and prob.shape == (400, 400)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
