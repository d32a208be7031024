"""Self-training: a teacher's probabilities of the unlabelled tiles as soft training targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.losses import bce, dice, get_loss
from tests.conftest import TILE, write_raster
from tests.test_cli import CONFIGS, _fit_args
from tests.test_maps import _datamodule, _locate


def test_pixels_of_weight_zero_do_not_count_in_the_loss():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 1, 8, 8)), dtype=torch.float32, requires_grad=True)
    target = torch.tensor(rng.random((2, 1, 8, 8)), dtype=torch.float32)  # soft targets
    weight = torch.ones_like(target)
    weight[..., :4] = 0
    kept = (slice(None), slice(None), slice(None), slice(4, None))
    assert torch.allclose(bce(logits, target, weight), bce(logits[kept], target[kept]))
    assert torch.allclose(dice(logits, target, weight), dice(logits[kept], target[kept]))
    get_loss("bce+dice")(logits, target, weight).backward()
    assert torch.all(logits.grad[..., :4] == 0) and torch.any(logits.grad[..., 4:] != 0)
    assert torch.allclose(bce(logits, target, torch.ones_like(target)), bce(logits, target))


def _teacher_labels(root: Path, folder: Path) -> dict[int, np.ndarray]:
    """Pseudo-labels of the test tiles: a ramp 0..255 over each tile, as a teacher's maps."""
    labels = {}
    for image in sorted((root / "test" / "images").glob("*.png")):
        ramp = np.tile(np.linspace(0, 255, TILE).round().astype(np.uint8), (TILE, 1))
        write_raster(folder / image.name, ramp)
        labels[int(image.stem.split("_")[1])] = ramp.astype(np.float32) / 255
    return labels


def test_windows_cover_pseudo_labelled_tiles_with_soft_targets_and_weights(
    mapped_dataset, tmp_path
):
    root, big, road, places = mapped_dataset
    teacher = _teacher_labels(root, tmp_path / "pseudo")
    dm = _datamodule(root, pseudo_labels=str(tmp_path / "pseudo"), pseudo_confidence=0.8)
    dataset = dm.train_dataloader().dataset
    assert dm.frame("train")["pseudo"].sum() == 1 and dm.frame("test").empty
    # the map of targets and weights the windows must be crops of
    soft = (road > 127).astype(np.float32)
    weight = np.ones_like(soft)
    ((test_id, p),) = teacher.items()
    c, r = places[test_id]
    cut = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
    soft[cut] = p
    weight[cut] = np.where(np.maximum(p, 1 - p) < 0.8, 0.0, 1.0)
    on_pseudo = 0
    for seed in range(120):
        sample = dataset[(seed % len(dataset), seed)]
        top, left = _locate(sample, big, places)
        window = (slice(top, top + 24), slice(left, left + 24))
        np.testing.assert_allclose(sample["mask"][0].numpy(), soft[window], atol=1e-6)
        np.testing.assert_array_equal(sample["weight"][0].numpy(), weight[window])
        on_pseudo += bool((sample["weight"][0] == 0).any())
        val = {places[t] for t in dm.frame("val")["tile_id"]}
        covered = {(x // TILE, y // TILE) for y in (top, top + 23) for x in (left, left + 23)}
        assert not covered & val, "a window never covers a validation tile"
    assert on_pseudo > 10


def _validation_labels(root: Path, folder: Path) -> dict[int, np.ndarray]:
    """Pseudo-labels of the validation tiles (as --validation writes them): a vertical ramp,
    unlike any true label."""
    labels = {}
    for _, row in _datamodule(root).frame("val").iterrows():
        ramp = np.tile(np.linspace(0, 255, TILE).round().astype(np.uint8)[:, None], (1, TILE))
        write_raster(folder / Path(row["image"]).name, ramp)
        labels[int(row["tile_id"])] = ramp.astype(np.float32) / 255
    return labels


@pytest.mark.parametrize("on_validation", [False, True])
def test_wrong_labels_on_validation_tiles_change_no_self_training_sample(
    mapped_dataset, tmp_path, on_validation
):
    root, _, _, _ = mapped_dataset
    _teacher_labels(root, tmp_path / "pseudo")
    kw = {"pseudo_labels": str(tmp_path / "pseudo"), "pseudo_confidence": 0.6}
    if on_validation:  # the validation tiles train on their teacher's maps: still no labels
        _validation_labels(root, tmp_path / "pseudo")
        kw["pseudo_validation"] = True
    before = _datamodule(root, **kw).train_dataloader().dataset
    keys = [(seed % len(before), seed) for seed in range(100)]
    samples = [before[k] for k in keys]
    for mask in _datamodule(root, **kw).frame("val")["mask"]:  # plant wrong labels: all road
        write_raster(Path(mask), np.full((TILE, TILE), 255, np.uint8))
    after = _datamodule(root, **kw).train_dataloader().dataset
    for key, sample in zip(keys, samples, strict=True):
        again = after[key]
        for name in ("image", "mask", "weight"):
            assert torch.equal(again[name], sample[name])


def test_validation_tiles_can_self_train_on_their_teachers_maps(mapped_dataset, tmp_path):
    """data.pseudo_validation: windows may cover a validation tile, whose targets there are
    its pseudo-label; validation still reads the tile's own labels, and its context."""
    root, big, road, places = mapped_dataset
    teacher = {**_teacher_labels(root, tmp_path / "pseudo"),
               **_validation_labels(root, tmp_path / "pseudo")}  # fmt: skip
    dm = _datamodule(root, pseudo_labels=str(tmp_path / "pseudo"), pseudo_validation=True)
    val = dm.frame("val")
    train = dm.frame("train")
    assert len(val) == 2 and train["copy_of_val"].sum() == 2 and train["pseudo"].sum() == 3
    assert all("groundtruth" in mask for mask in val["mask"])  # validation scores true labels
    soft = (road > 127).astype(np.float32)
    for tile_id, p in teacher.items():
        c, r = places[tile_id]
        soft[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = p
    dataset = dm.train_dataloader().dataset
    on_val = 0
    for seed in range(150):
        sample = dataset[(seed % len(dataset), seed)]
        top, left = _locate(sample, big, places)
        np.testing.assert_allclose(
            sample["mask"][0].numpy(), soft[top : top + 24, left : left + 24], atol=1e-6
        )
        covered = {(x // TILE, y // TILE) for y in (top, top + 23) for x in (left, left + 23)}
        on_val += bool(covered & {places[t] for t in val["tile_id"]})
    assert on_val > 20
    batch = next(iter(dm.val_dataloader()))  # validated in context, on the true labels
    assert int(batch["margin"][0]) > 0
    truth = [road[places[t][1] * TILE : (places[t][1] + 1) * TILE,
                  places[t][0] * TILE : (places[t][0] + 1) * TILE] > 127
             for t in batch["tile_id"].tolist()]  # fmt: skip
    np.testing.assert_array_equal(batch["mask"][:, 0].numpy() > 0.5, np.stack(truth))


def test_validation_tiles_without_pseudo_labels_are_refused(mapped_dataset, tmp_path):
    root, _, _, _ = mapped_dataset
    _teacher_labels(root, tmp_path / "pseudo")
    with pytest.raises(RoadsegError, match="no pseudo-label of validation tile .*--validation"):
        _datamodule(root, pseudo_labels=str(tmp_path / "pseudo"), pseudo_validation=True)
    with pytest.raises(RoadsegError, match="needs data.pseudo_labels"):
        _datamodule(root, pseudo_validation=True)


def test_a_folder_without_pseudo_labels_is_refused(mapped_dataset, tmp_path):
    root, _, _, _ = mapped_dataset
    (tmp_path / "empty").mkdir()
    with pytest.raises(RoadsegError, match="no pseudo-label of any unlabelled tile"):
        _datamodule(root, pseudo_labels=str(tmp_path / "empty"))
    with pytest.raises(RoadsegError, match="pseudo-label folder not found"):
        _datamodule(root, pseudo_labels=str(tmp_path / "missing"))


def test_teacher_writes_pseudo_labels_and_a_student_trains_on_them(cil_root, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    quick = CONFIGS[0].parent / "quick.yaml"
    assert main([*_fit_args(quick, cil_root, teacher), "--trainer.max_epochs", "1"]) == 0
    ckpt = teacher / "checkpoints" / "best.ckpt"
    pseudo = tmp_path / "pseudo"
    args = ["pseudo-label", "--ckpt", str(ckpt), "--tta", "--context", "0", "--quiet"]
    assert main([*args, "--out", str(pseudo)]) == 0
    assert "wrote 2 pseudo-labels" in capsys.readouterr().out
    names = sorted(p.name for p in pseudo.iterdir())
    assert names == ["pseudo.json", "satimage_144.png", "satimage_145.png"]
    # the labels are the teacher's probabilities of those tiles
    from roadseg.checkpoints import read_checkpoint
    from roadseg.evaluation import validation_tiles
    from roadseg.io import read_image, read_raster
    from roadseg.predict import Predictor
    from roadseg.task import RoadSegTask

    predictor = Predictor([RoadSegTask.from_checkpoint(ckpt)], tta=True, progress=False)
    prob = predictor.predict_image(read_image(cil_root / "test" / "images" / "satimage_144.png"))
    label = read_raster(pseudo / "satimage_144.png")[0]
    assert np.abs(label.astype(np.float32) / 255 - prob).max() <= 0.5 / 255 + 1e-6

    student = tmp_path / "student"
    args = [*_fit_args(quick, cil_root, student), "--trainer.max_epochs", "1",
            "--data.pseudo_labels", str(pseudo), "--data.pseudo_confidence", "0.7"]  # fmt: skip
    assert main(args) == 0
    assert (student / "checkpoints" / "best.ckpt").is_file()
    # --validation labels the teacher's validation tiles too, for a student that self-trains
    # on them as on the test tiles
    both = tmp_path / "pseudo-val"
    args_val = ["pseudo-label", "--ckpt", str(ckpt), "--context", "0", "--quiet", "--validation"]
    assert main([*args_val, "--out", str(both)]) == 0
    printed = capsys.readouterr().out
    val_names = {Path(m).name for m in validation_tiles(read_checkpoint(ckpt))["image"]}
    assert f"wrote {2 + len(val_names)} pseudo-labels" in printed
    assert "--data.pseudo_validation true" in printed
    assert {p.name for p in both.glob("*.png")} == {
        "satimage_144.png",
        "satimage_145.png",
    } | val_names
    assert json.loads((both / "pseudo.json").read_text())["validation_tiles"] == len(val_names)
    selfval = [*_fit_args(quick, cil_root, tmp_path / "selfval"), "--trainer.max_epochs", "1",
               "--data.pseudo_labels", str(both), "--data.pseudo_validation", "true"]  # fmt: skip
    assert main(selfval) == 0
    student_ckpt = tmp_path / "selfval" / "checkpoints" / "best.ckpt"
    assert main(["tune", "--ckpt", str(student_ckpt), "--dry-run", "--quiet"]) == 0
    assert f"validation patch scores on {len(val_names)} tiles" in capsys.readouterr().out
    # a loss that cannot weight pixels is refused with what to use instead
    args += ["--model.loss", "lovasz", "--trainer.default_root_dir", str(tmp_path / "lovasz")]
    assert main(args) == 2
    assert "cannot weight pixels" in capsys.readouterr().err


def test_a_student_starts_from_its_teachers_weights(cil_root, tmp_path, capsys):
    """model.init_from copies the teacher's network into the student before its first step
    (with a learning rate of 0 the student's weights stay the teacher's), and a checkpoint
    of another network is refused with a line that names it."""
    quick = CONFIGS[0].parent / "quick.yaml"
    teacher = tmp_path / "teacher"
    assert main([*_fit_args(quick, cil_root, teacher), "--trainer.max_epochs", "1"]) == 0
    ckpt = teacher / "checkpoints" / "best.ckpt"
    taught = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    student = tmp_path / "student"
    args = [*_fit_args(quick, cil_root, student), "--trainer.max_epochs", "1",
            "--model.init_from", str(ckpt), "--model.lr", "0", "--model.weight_decay", "0"]  # fmt: skip
    assert main(args) == 0
    learnt = torch.load(student / "checkpoints" / "best.ckpt", map_location="cpu",
                        weights_only=False)["state_dict"]  # fmt: skip
    from roadseg.task import RoadSegTask

    names = [
        f"model.{name}" for name, _ in RoadSegTask.from_checkpoint(ckpt).model.named_parameters()
    ]
    assert len(names) > 100
    assert all(torch.equal(learnt[n], taught[n]) for n in names)
    # without init_from the same run starts from ImageNet and another random decoder
    fresh = tmp_path / "fresh"
    assert main([*args[: args.index("--model.init_from")], "--model.lr", "0",
                 "--trainer.default_root_dir", str(fresh)]) == 0  # fmt: skip
    other = torch.load(fresh / "checkpoints" / "best.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]  # fmt: skip
    assert not all(torch.equal(other[n], taught[n]) for n in names)
    capsys.readouterr()
    wider = [*args, "--model.model_args.decoder_channels", "[32, 32, 16, 16, 8]",
             "--trainer.default_root_dir", str(tmp_path / "wider")]  # fmt: skip
    assert main(wider) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"roadseg: error: {ckpt}: model.init_from: its network is not this ")
    assert "tensors of another shape (first: net.decoder." in err
    assert "\n" not in err
    # a resumed student has its own weights: it needs the teacher's file no more
    ckpt.rename(tmp_path / "moved.ckpt")
    first = torch.load(student / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)  # fmt: skip
    assert main([*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    resumed = torch.load(student / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=False)  # fmt: skip
    # the second epoch (index 1) ran, from the first one's weights (lr 0)
    assert (first["epoch"], resumed["epoch"]) == (0, 1)
    assert resumed["global_step"] == 2 * first["global_step"] > 0
    assert all(torch.equal(resumed["state_dict"][n], taught[n]) for n in names)
