"""Scene runs you can trust (#32): no input lost, no stale or mixed output, one failure
policy, one identity for a prediction. Each test names the finding it reproduces; each
failed at 50d5b1f."""

import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import from_origin

from roadseg.cli import main
from roadseg.errors import Interrupted, RoadsegError
from roadseg.jobs import parse_shard, predict_many, scene_list
from roadseg.options import PredictOptions
from roadseg.parts import parts_dir
from roadseg.predict import Predictor
from tests.conftest import smooth_map, write_raster, write_small_checkpoint
from tests.test_jobs import options, outputs, write_scenes

ARGS = ["--window", "256", "--overlap", "64", "--backend", "torch", "--quiet"]


def digests(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def scenes(tmp_path):
    write_scenes(tmp_path / "in", sizes=((200, 260), (230, 180)))
    return tmp_path / "in"


@pytest.fixture
def ckpt(tmp_path):
    return write_small_checkpoint(tmp_path / "m.ckpt")


# --- inputs lost --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["in", "in/sub"])
def test_an_output_folder_that_is_or_is_inside_the_input_folder_is_refused(
    scenes, ckpt, tmp_path, capsys, where
):
    """`predict scenes/ --out scenes/` replaced every input with its prediction."""
    before = digests(scenes)
    out = tmp_path / where
    code = main(["predict", str(scenes), "--out", str(out), "--ckpt", str(ckpt), *ARGS])
    assert code == 2 and "folder of scenes being read" in capsys.readouterr().err
    assert digests(scenes) == before and not (tmp_path / "in" / "sub").exists()


def test_an_output_folder_holding_a_listed_scene_is_refused(scenes, ckpt, tmp_path, capsys):
    """The .txt list form wrote outputs over the scenes it listed."""
    listing = tmp_path / "list.txt"
    listing.write_text("in/scene_0.tif\nin/scene_1.tif\n")
    before = digests(scenes)
    code = main(["predict", str(listing), "--out", str(tmp_path), "--ckpt", str(ckpt), *ARGS])
    assert code == 2 and "holds an input of this command" in capsys.readouterr().err
    assert digests(scenes) == before and not (tmp_path / "run.json").exists()


def test_a_list_with_a_file_name_as_output_and_a_png_output_are_refused(
    scenes, ckpt, tmp_path, capsys
):
    """A folder input with --out roads.tif made a folder roads.tif/; --out o6.png wrote a
    float TIFF named .png."""
    assert main(["predict", str(scenes), "--out", str(tmp_path / "roads.tif"),
                 "--ckpt", str(ckpt), *ARGS]) == 2  # fmt: skip
    assert "names a file" in capsys.readouterr().err and not (tmp_path / "roads.tif").exists()
    assert main(["predict", str(scenes / "scene_0.tif"), "--out", str(tmp_path / "o6.png"),
                 "--ckpt", str(ckpt), *ARGS]) == 2  # fmt: skip
    assert "name the output .tif" in capsys.readouterr().err and not (tmp_path / "o6.png").exists()


def test_a_failure_keeps_the_chunks_finished_before_it(scenes, ckpt, tmp_path, monkeypatch):
    """After any exception a fresh one-process run deleted its finished chunks."""
    calls = {"n": 0}
    original = Predictor._write_part

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error (a network read failed)")
        return original(self, *args)

    monkeypatch.setattr(Predictor, "_write_part", flaky)
    predictor, decision = options(ckpt).predictor()
    out = tmp_path / "p.tif"
    with pytest.raises(OSError):
        predictor.predict_scene(scenes / "scene_0.tif", out, chunk=64)
    kept = len(list(parts_dir(out).glob("chunk_*.tif")))
    assert kept >= 2  # those finished before it (and one writing behind it)
    monkeypatch.setattr(Predictor, "_write_part", original)
    total = predictor.predict_scene(scenes / "scene_0.tif", out, chunk=64) + kept
    assert total == 4  # 2 x 2 chunks of 192 px: only the rest were predicted again
    clean = tmp_path / "clean.tif"
    predictor.predict_scene(scenes / "scene_0.tif", clean, chunk=64)
    with rasterio.open(out) as a, rasterio.open(clean) as b:
        assert np.array_equal(a.read(), b.read())


def test_manifest_lines_and_outputs_are_synced_before_they_count(scenes, ckpt, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """Nothing was fsynced before an output or a manifest line counted as done."""
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real(fd))  # fmt: skip
    predict_many(options(ckpt), [str(scenes)], tmp_path / "out", output="prob8")
    names = [os.path.basename(p) for p in synced]
    assert names.count("manifest.jsonl") == 2
    assert any(n.startswith(".scene_0.tif.") for n in names)  # the output, before its rename
    assert "out" in names  # the folder, after the rename


# --- earlier work reused when it should not be, and refused when it should be ------------


def test_another_scene_under_the_same_id_is_predicted_not_skipped(tmp_path, ckpt, capsys):
    """dup1/scene.tif then dup2/scene.tif (another image) into one --out: "1 done before"."""
    a = write_raster(tmp_path / "dup1" / "scene.tif", smooth_map(96, 96, seed=1),
                     crs="EPSG:32632", transform=from_origin(500_000, 5_200_000, 0.5, 0.5))  # fmt: skip
    b = write_raster(tmp_path / "dup2" / "scene.tif", smooth_map(96, 96, seed=2),
                     crs="EPSG:32632", transform=from_origin(500_000, 5_200_000, 0.5, 0.5))  # fmt: skip
    out = tmp_path / "out"
    predict_many(options(ckpt), [str(a)], out)
    second = predict_many(options(ckpt), [str(b)], out)
    assert (second.done, second.skipped) == (1, 0)
    assert "made from other content or options" in capsys.readouterr().out
    predict_many(options(ckpt), [str(b)], tmp_path / "clean")
    assert outputs(out) == outputs(tmp_path / "clean")
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])["scene"] == str(b)


def test_a_changed_decision_is_refused_naming_it_and_redone_with_overwrite(scenes, ckpt,
                                                                           tmp_path):  # fmt: skip
    """Masks at one threshold, then a rerun at another, were mixed in one folder."""
    out = tmp_path / "out"
    predict_many(options(ckpt), [str(scenes)], out, output="mask")
    other = PredictOptions(**{**options(ckpt).__dict__, "pixel_threshold": 0.2, "min_area": 50})
    with pytest.raises(RoadsegError, match=r"decision \(pixel 0.5.*-> pixel 0.2.*--overwrite"):
        predict_many(other, [str(scenes)], out, output="mask")
    again = predict_many(other, [str(scenes)], out, output="mask", overwrite=True)
    assert (again.done, again.skipped) == (2, 0)
    predict_many(other, [str(scenes)], tmp_path / "clean", output="mask")
    assert outputs(out) == outputs(tmp_path / "clean")
    with rasterio.open(out / "scene_0.tif") as src:
        assert "pixel 0.2" in src.tags()["roadseg_decision"]


def test_a_copied_and_touched_model_is_the_same_model(scenes, ckpt, tmp_path):
    """The folder's key held the checkpoint's path and time: a copy or a touch was another run."""
    out = tmp_path / "out"
    predict_many(options(ckpt), [str(scenes)], out)
    copy = tmp_path / "local" / "m.ckpt"
    copy.parent.mkdir()
    shutil.copy(ckpt, copy)
    os.utime(copy, (1e9, 1e9))
    again = predict_many(options(copy), [str(scenes)], out)
    assert (again.done, again.skipped) == (0, 2)


def test_a_vote_identity_holds_each_members_decision(tmp_path, ckpt):
    """A vote's parts key left out the members' decisions (its probability depends on them)."""
    from roadseg.identity import identity_hash, run_identity

    second = write_small_checkpoint(tmp_path / "m2.ckpt")
    vote = PredictOptions(ckpt=(str(ckpt), str(second)), merge="vote", quiet=True)
    run = run_identity(vote, output="prob", chunk=2048)
    stricter = PredictOptions(**{**vote.__dict__, "pixel_threshold": 0.7})
    assert run["decisions"] and identity_hash(run) != identity_hash(
        run_identity(stricter, output="prob", chunk=2048)
    )


def test_a_scene_replaced_by_another_of_the_same_size_does_not_resume_its_old_chunks(
    scenes, ckpt, tmp_path, monkeypatch
):
    """A corrected file of the same size resumed on the old chunks."""
    original = Predictor._write_part
    calls = {"n": 0}

    def stop_after_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Predictor, "_write_part", stop_after_two)
    opts = options(ckpt)
    out = tmp_path / "p.tif"
    with pytest.raises(KeyboardInterrupt):
        main_scene(opts, scenes / "scene_0.tif", out)
    monkeypatch.setattr(Predictor, "_write_part", original)
    write_raster(scenes / "scene_0.tif", smooth_map(200, 260, seed=9), crs="EPSG:32632",
                 transform=from_origin(500_000, 5_200_000, 0.5, 0.5))  # fmt: skip
    main_scene(opts, scenes / "scene_0.tif", out)
    main_scene(opts, scenes / "scene_0.tif", tmp_path / "clean.tif")
    with rasterio.open(out) as a, rasterio.open(tmp_path / "clean.tif") as b:
        assert np.array_equal(a.read(), b.read())


def main_scene(opts, scene, out):
    from roadseg.scenes import predict_scene_run

    return predict_scene_run(opts, scene, out, chunk=64)


def test_parts_of_other_options_are_refused_naming_them(scenes, ckpt, tmp_path, monkeypatch):
    original = Predictor._write_part
    monkeypatch.setattr(Predictor, "_write_part",
                        lambda self, *a: (_ for _ in ()).throw(KeyboardInterrupt)
                        if len(list(parts_dir(tmp_path / "p.tif").glob("chunk_*"))) >= 1
                        else original(self, *a))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        main_scene(options(ckpt), scenes / "scene_0.tif", tmp_path / "p.tif")
    monkeypatch.setattr(Predictor, "_write_part", original)
    tta = PredictOptions(**{**options(ckpt).__dict__, "tta": True})
    with pytest.raises(
        RoadsegError,
        match=r"another prediction, made with other options: tta \(false -> true\).*--overwrite",
    ):
        main_scene(tta, scenes / "scene_0.tif", tmp_path / "p.tif")


# --- one failure policy --------------------------------------------------------------------


def test_a_zero_byte_and_a_truncated_scene_fail_alone(scenes, ckpt, tmp_path, capsys):
    """One 0-byte scene (a failed download) ended the whole batch with a traceback."""
    (scenes / "empty.tif").write_bytes(b"")
    data = (scenes / "scene_1.tif").read_bytes()
    (scenes / "cut.tif").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = main(["predict", str(scenes), "--out", str(out), "--ckpt", str(ckpt), *ARGS])
    err = capsys.readouterr().err
    assert code == 1 and "2 scenes failed (cut, empty)" in err
    assert "empty.tif: an empty file (0 bytes" in err
    rows = {
        json.loads(r)["id"]: json.loads(r)
        for r in (out / "manifest.jsonl").read_text().splitlines()
    }
    assert {k: r["status"] for k, r in rows.items()} == {
        "cut": "failed", "empty": "failed", "scene_0": "done", "scene_1": "done"}  # fmt: skip


def test_an_unreachable_stac_href_fails_that_scene_alone(scenes, ckpt, tmp_path):
    item = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "far", "assets": {"visual": {"href": "/vsicurl/http://127.0.0.1:9/x.tif"}}},
        {"type": "Feature", "id": "near", "assets": {"visual": {"href": str(scenes / "scene_0.tif")}}},
    ]}  # fmt: skip
    (tmp_path / "items.json").write_text(json.dumps(item))
    progress = predict_many(options(ckpt), [str(tmp_path / "items.json")], tmp_path / "out")
    assert progress.done == 1 and progress.failed == ["far"]


def test_ctrl_c_in_a_folder_run_says_what_was_kept(scenes, ckpt, tmp_path, monkeypatch):
    import roadseg.jobs as jobs

    monkeypatch.setattr(
        jobs, "predict_one", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(Interrupted, match="run the same command again"):
        predict_many(options(ckpt), [str(scenes)], tmp_path / "out")


# --- lists, shards, progress ----------------------------------------------------------------


def test_addresses_in_lists_are_kept_and_previews_and_hidden_files_left_out(tmp_path, capsys):
    """URL lines were mangled (https:/...); a preview PNG among the scenes was predicted."""
    (tmp_path / "list.txt").write_text("https://example.org/a/scene_a.tif\ns3://bucket/b.tif\n")
    found = scene_list([str(tmp_path / "list.txt")])
    assert [s.path for s in found] == ["s3://bucket/b.tif", "https://example.org/a/scene_a.tif"]
    write_scenes(tmp_path / "in", sizes=((32, 32),))
    write_raster(tmp_path / "in" / "preview.png", smooth_map(32, 32, seed=0))
    (tmp_path / "in" / "._scene_0.tif").write_bytes(b"\0\5\26\7")
    assert [s.id for s in scene_list([str(tmp_path / "in")])] == ["scene_0"]
    assert "1 picture left out beside its GeoTIFFs (preview.png)" in capsys.readouterr().out


def test_stac_takes_the_visual_asset_and_refuses_a_guess(tmp_path):
    """Without --asset the first GeoTIFF asset was taken (a udm mask, an aerosol band)."""
    geotiff = "image/tiff; application=geotiff"
    item = {"type": "Feature", "id": "s2", "assets": {
        "coastal": {"href": "b01.tif", "type": geotiff, "roles": ["data"]},
        "rgb": {"href": "tci.tif", "type": geotiff, "roles": ["visual"]},
    }}  # fmt: skip
    (tmp_path / "item.json").write_text(json.dumps(item))
    assert scene_list([str(tmp_path / "item.json")])[0].path == str(tmp_path / "tci.tif")
    del item["assets"]["rgb"]
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(RoadsegError, match="no visual .RGB. asset; its assets: coastal .data."):
        scene_list([str(tmp_path / "item.json")])


def test_shards_from_schedulers_and_zero_based_indexes():
    """--shard was 1-based only: the 0-based indexes of AWS Batch and Kubernetes were refused."""
    assert parse_shard("0/4", base=0) == (1, 4) and parse_shard("3/4", base=0) == (4, 4)
    assert parse_shard("auto", env={"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                    "SLURM_ARRAY_TASK_COUNT": "8"}) == (5, 8)  # fmt: skip
    assert parse_shard("auto/8", env={"AWS_BATCH_JOB_ARRAY_INDEX": "0"}) == (1, 8)
    assert parse_shard("auto/3", env={"JOB_COMPLETION_INDEX": "2"}) == (3, 3)
    with pytest.raises(RoadsegError, match="0-based"):
        parse_shard("0/4")
    with pytest.raises(RoadsegError, match="auto/N"):
        parse_shard("auto", env={"JOB_COMPLETION_INDEX": "2"})


def test_progress_counts_the_scenes_to_predict(scenes, ckpt, tmp_path, capsys):
    """ "[1/100]" with 90 done before; the time left 11x too long."""
    out = tmp_path / "out"
    predict_many(options(ckpt), [str(scenes / "scene_0.tif")], out)
    capsys.readouterr()
    predict_many(options(ckpt), [str(scenes)], out)
    said = capsys.readouterr().out
    assert "1 done before, 1 to predict" in said and "[1/1] scene_1" in said


def test_the_chunk_plan_is_said_and_recorded(scenes, ckpt, tmp_path, capsys):
    """--chunk 256, 512 and 1,024 gave 1,408-px chunks without a word."""
    opts = PredictOptions(ckpt=(str(ckpt),), backend="torch")
    predictor, _ = opts.predictor()
    predictor.progress = True
    predictor.predict_scene(scenes / "scene_0.tif", tmp_path / "p.tif", chunk=256)
    assert "1 chunk of 1408 px" in capsys.readouterr().out
    from roadseg.parts import ScenePlan

    plan = ScenePlan.make(5000, 5000, chunk=256, window=1536, overlap=128)
    assert "--chunk 256 rounded to whole windows" in plan.describe()


def test_fine_scenes_keep_the_models_context():
    """0.125 m scenes kept 64 scene px (16 model px) of context whatever the resampling."""
    from roadseg.parts import chunk_margin

    assert chunk_margin(128) == 64 and chunk_margin(128, 2.0) == 64
    assert chunk_margin(128, 0.25) == 256


# --- georeference and imagery ---------------------------------------------------------------


def test_gcp_georeference_is_carried_to_the_output(tmp_path, ckpt):
    """GCP-georeferenced scenes gave outputs with no georeference."""
    path = tmp_path / "gcp.tif"
    gcps = [GroundControlPoint(0, 0, 8.50, 47.40), GroundControlPoint(0, 96, 8.50, 47.3996),
            GroundControlPoint(96, 0, 8.5006, 47.40), GroundControlPoint(96, 96, 8.5006, 47.3996)]  # fmt: skip
    with rasterio.open(
        path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8"
    ) as dst:
        dst.write(smooth_map(96, 96, seed=4))
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    predictor, _ = options(ckpt).predictor()
    predictor.predict_scene(path, tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as out:
        got, crs = out.gcps
        assert len(got) == 4 and crs.to_epsg() == 4326


def test_from_checkpoints_uses_the_imagery_the_checkpoint_recorded(tmp_path, ckpt):
    """Predictor.from_checkpoints(paths) ignored the imagery the checkpoint recorded."""
    import torch

    from roadseg.imagery import COMPETITION

    content = torch.load(ckpt, weights_only=False)
    content["roadseg_imagery"] = {**COMPETITION.to_dict(), "resolution": 1.0, "origin": "test"}
    torch.save(content, ckpt)
    assert Predictor.from_checkpoints([ckpt], backend="torch").imagery.resolution == 1.0


def test_clean_up_sizes_tuned_in_model_pixels_are_scaled_to_the_scene():
    """min_area and close_gaps were applied in scene pixels with values tuned in model pixels."""
    from roadseg.postprocess import Decision

    tuned = Decision(pixel=0.4, close_gaps=8, min_area=400)
    assert tuned.scaled(2.0) == Decision(pixel=0.4, close_gaps=4, min_area=100)  # a 1 m scene
    assert tuned.scaled(0.25) == Decision(pixel=0.4, close_gaps=32, min_area=6400)  # 0.125 m
    assert tuned.scaled(1.0) is tuned


def test_lines_of_a_probability_output_get_the_decisions_clean_up(tmp_path):
    """`predict --vector` on probability output skipped the decision's clean-up."""
    from roadseg.postprocess import Decision
    from roadseg.vectors import vectorize_raster

    prob = np.zeros((1, 96, 96), np.float32)
    prob[0, 40:46, 10:40] = 0.9  # a 6 x 30 px speck: 180 px
    prob[0, 10:90, 60:68] = 0.9  # a road: 640 px
    path = write_raster(tmp_path / "p.tif", prob, crs="EPSG:32632",
                        transform=from_origin(500_000, 5_200_000, 0.5, 0.5))  # fmt: skip
    raw, _, _ = vectorize_raster(path, threshold=0.5)
    kept, _, _ = vectorize_raster(path, threshold=0.5, clean=Decision(min_area=300).clean)
    assert len(raw) == 2 and len(kept) == 1


# --- found by trying to break the above ---------------------------------------------------


def test_another_scene_of_the_same_size_and_time_under_the_same_id_is_predicted(tmp_path, ckpt):
    """The stored hash was trusted for any file of the same size and time (cp -p, tar)."""
    geo = {"crs": "EPSG:32632", "transform": from_origin(500_000, 5_200_000, 0.5, 0.5)}
    a = write_raster(tmp_path / "dup1" / "scene.tif", smooth_map(64, 64, seed=1), **geo)
    b = write_raster(tmp_path / "dup2" / "scene.tif", smooth_map(64, 64, seed=2), **geo)
    for path in (a, b):
        os.utime(path, (1.7e9, 1.7e9))
    predict_many(options(ckpt), [str(a)], tmp_path / "out")
    assert predict_many(options(ckpt), [str(b)], tmp_path / "out").done == 1


def test_a_stac_id_cannot_write_outside_the_output_folder(tmp_path, ckpt):
    write_scenes(tmp_path / "stac", sizes=((64, 64),))
    item = {
        "type": "Feature",
        "id": "../stac/scene_0",
        "assets": {"visual": {"href": "scene_0.tif"}},
    }
    (tmp_path / "stac" / "item.json").write_text(json.dumps(item))
    before = (tmp_path / "stac" / "scene_0.tif").read_bytes()
    predict_many(options(ckpt), [str(tmp_path / "stac" / "item.json")], tmp_path / "out")
    assert (tmp_path / "stac" / "scene_0.tif").read_bytes() == before
    assert [p.name for p in (tmp_path / "out").glob("*.tif")] == ["_stac_scene_0.tif"]


def test_a_file_in_the_way_that_roadseg_did_not_write_is_refused(scenes, ckpt, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(scenes / "scene_0.tif", archive / "scene_0.tif")  # imagery, not an output
    with pytest.raises(RoadsegError, match="not an output of roadseg.*--overwrite"):
        predict_many(options(ckpt), [str(scenes / "scene_0.tif")], archive)
    assert (
        predict_many(options(ckpt), [str(scenes / "scene_0.tif")], archive, overwrite=True).done
        == 1
    )


def test_scenes_in_a_zip_and_a_vrt_whose_source_changed(scenes, ckpt, tmp_path):
    """/vsizip/ scenes always failed (stat of a GDAL path); a VRT's identity was its XML alone."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.write(scenes / "scene_1.tif", "scene_1.tif")
    zipped = f"/vsizip/{tmp_path / 'z.zip'}/scene_1.tif"
    assert predict_many(options(ckpt), [zipped], tmp_path / "zout").done == 1
    from rasterio.shutil import copy

    shutil.copy(scenes / "scene_0.tif", tmp_path / "src.tif")
    copy(tmp_path / "src.tif", tmp_path / "m.vrt", driver="VRT")
    predict_many(options(ckpt), [str(tmp_path / "m.vrt")], tmp_path / "vout")
    write_raster(tmp_path / "src.tif", smooth_map(200, 260, seed=7), crs="EPSG:32632",
                 transform=from_origin(500_000, 5_200_000, 0.5, 0.5))  # fmt: skip
    assert predict_many(options(ckpt), [str(tmp_path / "m.vrt")], tmp_path / "vout").done == 1


def test_a_refusal_names_the_nested_option_that_differs():
    from roadseg.identity import describe_differences

    old = {"read": {"bands": [3, 2, 1], "input_range": [0.0, 200.0], "resolution": "auto"}}
    new = {"read": {"bands": [3, 2, 1], "input_range": [0.0, 200.0], "resolution": 0.6}}
    assert describe_differences(old, new) == "read.resolution (auto -> 0.6)"


def test_manifest_csv_counts_the_listed_scenes_and_lists_read_as_users_write_them(
    scenes, ckpt, tmp_path
):
    (scenes / "bad.tif").write_bytes(b"")
    out = tmp_path / "out"
    predict_many(options(ckpt), [str(scenes)], out)
    (scenes / "bad.tif").unlink()
    predict_many(options(ckpt), [str(scenes)], out)
    assert (out / "manifest.csv").read_text().count(",done,") == 2
    assert ",failed," not in (out / "manifest.csv").read_text()
    listing = tmp_path / "list.txt"
    listing.write_text("\ufeffin/scene_0.tif\r\n" + str(scenes / "scene_0.tif") + "\r\n")
    assert [s.path for s in scene_list([str(listing)])] == [str(tmp_path / "in/scene_0.tif")]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(RoadsegError, match="not a STAC Item"):
        scene_list([str(tmp_path / "bad.json")])


def test_slurm_arrays_with_a_step():
    env = {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "5"}
    got = [parse_shard("auto", env={**env, "SLURM_ARRAY_TASK_ID": str(t)}) for t in (0, 2, 4, 6, 8)]
    assert got == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
