"""The split travels with the checkpoint: the tiles it never trained on are recorded by
content at training time and read back by every command that relies on them; every
member of an ensemble is checked against them (issue #33)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from roadseg.checkpoints import SPLIT_KEY, read_checkpoint
from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.evaluation import validation_tiles
from tests.conftest import make_cil_dataset, road_tile, write_raster, write_small_checkpoint
from tests.test_cli import CONFIGS, _fit_args


def _names(frame) -> list[str]:
    return [Path(p).name for p in frame["image"]]


def _datamodule(root: Path, seed: int, val_fraction: float):
    from roadseg.datamodule import RoadDataModule

    dm = RoadDataModule(root=str(root), seed=seed, val_fraction=val_fraction, num_workers=0)
    dm.setup()
    return dm


def write_split_checkpoint(
    path: Path, root: Path | str, *, seed: int = 0, val_fraction: float = 0.5,
    record: bool = True,
) -> Path:  # fmt: skip
    """A small untrained checkpoint that says it trained on ``root`` with this seed and
    share of validation tiles, and (``record``) records that split as training does."""
    write_small_checkpoint(path)
    contents = torch.load(path, weights_only=False)
    arguments = {"root": str(root), "seed": seed, "val_fraction": val_fraction, "num_workers": 0}
    contents["datamodule_hyper_parameters"] = arguments
    if record:
        contents[SPLIT_KEY] = _datamodule(Path(root), seed, val_fraction).split_record()
    torch.save(contents, path)
    return path


def _add_labelled_tile(root: Path, tid: int) -> None:
    image, mask = road_tile(32, tid)
    write_raster(root / "training" / "images" / f"satimage_{tid}.png", image)
    write_raster(root / "training" / "groundtruth" / f"satimage_{tid}.png", mask)


@pytest.fixture
def small_root(tmp_path) -> Path:
    return make_cil_dataset(tmp_path / "cil", n_train=6, n_test=2, size=32)


def test_a_trained_checkpoint_records_its_split(cil_root, tmp_path, capsys):
    quick = CONFIGS[0].parent / "quick.yaml"
    run = tmp_path / "run"
    assert main([*_fit_args(quick, cil_root, run), "--trainer.max_steps", "2"]) == 0
    ckpt = run / "checkpoints" / "best.ckpt"
    record = read_checkpoint(ckpt)[SPLIT_KEY]
    dm = _datamodule(cil_root, seed=0, val_fraction=0.2)
    assert [e["file"] for e in record["val"]] == _names(dm.frame("val"))
    assert [e["file"] for e in record["train"]] == _names(dm.frame("train"))
    assert record["pseudo"] == [] and record["root"] == str(cil_root)
    for entry in record["val"] + record["train"]:
        data = (cil_root / "training" / "images" / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert _names(validation_tiles(read_checkpoint(ckpt))) == _names(dm.frame("val"))
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "v.csv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"split: the 1 validation tiles the checkpoint recorded, found in {cil_root}" in out
    # resumed on other files, the run would train on its validation tiles: refused
    for tid in (7, 8):
        _add_labelled_tile(cil_root, tid)
    resume = [*_fit_args(quick, cil_root, run), "--trainer.max_steps", "4", "--ckpt_path", "last"]
    assert main(resume) == 2
    assert capsys.readouterr().err.strip() == (
        f"roadseg: error: {cil_root}: the split made from the files present is not the one the "
        "checkpoint recorded (its 1 validation tiles and the 2 made now share 0: labelled tiles "
        "were added, removed or changed): put the files back as the run started with them, or "
        "start a new run"
    )


def test_adding_a_labelled_tile_changes_nothing_evaluate_scores(small_root, tmp_path, capsys):
    ckpt = write_split_checkpoint(tmp_path / "a.ckpt", small_root)
    before = _names(validation_tiles(read_checkpoint(ckpt)))
    evaluate = ["evaluate", "--ckpt", str(ckpt), "--quiet"]
    assert main([*evaluate, "--out", str(tmp_path / "before.csv")]) == 0
    for tid in (7, 8):
        _add_labelled_tile(small_root, tid)
    # made again from the files present, the split would be another one
    remade = _names(_datamodule(small_root, seed=0, val_fraction=0.5).frame("val"))
    assert remade != before
    assert _names(validation_tiles(read_checkpoint(ckpt))) == before
    assert main([*evaluate, "--out", str(tmp_path / "after.csv")]) == 0
    assert (tmp_path / "after.csv").read_bytes() == (tmp_path / "before.csv").read_bytes()
    # a tile renamed is the same tile: found by its content
    val = small_root / "training" / "images" / before[0]
    val.rename(val.with_name("satimage_99.png"))
    mask = small_root / "training" / "groundtruth" / before[0]
    mask.rename(mask.with_name("satimage_99.png"))
    assert "satimage_99.png" in _names(validation_tiles(read_checkpoint(ckpt)))


def test_a_recorded_validation_tile_that_is_gone_is_refused(small_root, tmp_path, capsys):
    ckpt = write_split_checkpoint(tmp_path / "a.ckpt", small_root)
    gone = _names(validation_tiles(read_checkpoint(ckpt)))[1]
    write_raster(small_root / "training" / "images" / gone, road_tile(32, 50)[0])  # changed
    with pytest.raises(RoadsegError, match=f"validation tile {gone} recorded in the checkpoint"):
        validation_tiles(read_checkpoint(ckpt))
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "e.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"roadseg: error: {small_root}: validation tile {gone} recorded in the checkpoint is not "
        "here (no labelled image has its content; 1 of 3 missing): restore it as it was "
        "trained with"
    )


def _leak(root: Path, seed: int) -> int:
    """Validation tiles of seed 0's split (share 0.5) that seed ``seed``'s split trains on."""
    val = set(_names(_datamodule(root, 0, 0.5).frame("val")))
    return len(val & set(_names(_datamodule(root, seed, 0.5).frame("train"))))


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "old member"])
def test_an_ensemble_member_trained_on_another_split_is_refused(
    small_root, tmp_path, capsys, record
):
    a = write_split_checkpoint(tmp_path / "a.ckpt", small_root)
    b = write_split_checkpoint(tmp_path / "b.ckpt", small_root, seed=1, record=record)
    leak = _leak(small_root, 1)
    assert leak > 0
    ensemble = ["--ckpt", str(a), "--ckpt", str(b), "--quiet"]
    commands = {
        "scores": (["evaluate", *ensemble, "--out", str(tmp_path / "e.csv")], 3),
        "scores ": (["tune", *ensemble, "--dry-run"], 3),
        "labels": (["pseudo-label", *ensemble, "--validation", "--out", str(tmp_path / "p")], 5),
    }
    for doing, (args, tiles) in commands.items():
        assert main(args) == 2, args[0]
        captured = capsys.readouterr()
        assert captured.err.strip() == (
            f"roadseg: error: {b}: trained on {leak} of the {tiles} tiles this command "
            f"{doing.strip()} (its split is not the first checkpoint's): leave it out, or use "
            "members trained on the same split (data.seed or data.split_seed, data.val_fraction)"
        )
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "p").exists()
    # a member of the same split is accepted; one that records none is checked all the same
    c = write_split_checkpoint(tmp_path / "c.ckpt", small_root, record=record)
    args = ["evaluate", "--ckpt", str(a), "--ckpt", str(c), "--out", str(tmp_path / "e.csv")]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ("records no split" in out) is not record


def test_an_old_checkpoint_falls_back_with_a_note(small_root, tmp_path, capsys):
    ckpt = write_split_checkpoint(tmp_path / "old.ckpt", small_root, record=False)
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "e.csv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (
        "split: the checkpoint records no split (saved before roadseg recorded one): its "
        "validation tiles are made again from the files present" in out
    )
    assert "the 3 validation tiles of" in out
    remade = _names(_datamodule(small_root, seed=0, val_fraction=0.5).frame("val"))
    assert _names(validation_tiles(read_checkpoint(ckpt))) == remade


def test_submit_notes_each_member_that_trained_on_the_tiles(small_root, tmp_path, capsys):
    a = write_split_checkpoint(tmp_path / "a.ckpt", small_root)
    b = write_split_checkpoint(tmp_path / "b.ckpt", small_root, seed=1)
    copies = tmp_path / "copies"  # copies of every labelled tile, under other names
    copies.mkdir()
    for k, image in enumerate(sorted((small_root / "training" / "images").iterdir())):
        shutil.copyfile(image, copies / f"tile_{k}.png")
    args = ["submit", "--ckpt", str(a), "--ckpt", str(b), "--data", str(copies), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert f"note: 3 of these 6 tiles trained {a}:" in out
    assert f"note: 3 of these 6 tiles trained {b}:" in out


def test_the_trained_root_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """A relative data.root was relative to where training ran: from another folder the
    checkpoint's own maps were lost (found by trying to break #33)."""
    from roadseg.checkpoints import SPLIT_KEY, trained_root

    (tmp_path / "data" / "cil").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    ckpt = {"datamodule_hyper_parameters": {"root": "data/cil"},
            SPLIT_KEY: {"root": "data/cil", "resolved_root": str(tmp_path / "data" / "cil")}}  # fmt: skip
    monkeypatch.chdir(tmp_path.parent)
    assert trained_root(ckpt) == str(tmp_path / "data" / "cil")
    assert trained_root({"datamodule_hyper_parameters": {"root": "data/cil"}}) == "data/cil"
