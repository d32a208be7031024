import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from roadseg.cli import main
from roadseg.errors import RoadsegError
from roadseg.kaggle import upload
from roadseg.submission import read_submission
from roadseg.thresholds import tuned_thresholds
from tests.conftest import road_tile, write_raster

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
SUBCOMMANDS = [
    "submit",
    "pseudo-label",
    "tune",
    "predict",
    "vectorize",
    "validate-submission",
    "masks-to-submission",
    "index",
    "models",
    "reproduce",
    "figures",
]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for name in ["fit", "validate", "test", *SUBCOMMANDS]:
        assert f"    {name}" in out


@pytest.mark.parametrize("command", [*SUBCOMMANDS, "fit"])
def test_each_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: roadseg" in capsys.readouterr().out


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["index", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("roadseg: error: ")
        and "missing: dataset folder not found" in err
    )
    assert main(["submit", "--ckpt", str(tmp_path / "none.ckpt")]) == 2
    assert "none.ckpt: checkpoint not found" in capsys.readouterr().err
    with pytest.raises(Exception, match="dataset folder not found"):
        main(["index", str(tmp_path / "missing"), "--debug"])


def test_a_training_config_stands_for_its_best_checkpoint(tmp_path):
    from roadseg.checkpoints import checkpoint_of as _checkpoint_of

    assert _checkpoint_of("configs/cpu.yaml") == str(Path("runs/cpu/checkpoints/best.ckpt"))
    config = tmp_path / "mine.yaml"
    config.write_text(f"trainer:\n  default_root_dir: {tmp_path / 'elsewhere'}\n")
    assert _checkpoint_of(str(config)) == str(tmp_path / "elsewhere/checkpoints/best.ckpt")
    assert _checkpoint_of("runs/a/checkpoints/best.ckpt") == "runs/a/checkpoints/best.ckpt"


def _fit_args(config: Path, root: Path, run_dir: Path) -> list[str]:
    return [
        "fit",
        "--config",
        str(config),
        "--data.root",
        str(root),
        "--data.crop_size",
        "32",
        "--data.batch_size",
        "2",
        "--data.num_workers",
        "0",
        "--data.samples_per_epoch",
        "4",
        "--trainer.accelerator",
        "cpu",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_through_the_cli(config, cil_root, tmp_path):
    extra = []
    if "extra_roots" in config.read_text():  # a folder of 1 m tiles stands for the extra data
        images = tmp_path / "extra" / "images"
        for k in range(2):
            tile, mask = road_tile(32, k)
            write_raster(images / f"img-{k}.png", tile[:3])
            write_raster(images.parent / "groundtruth" / f"img-{k}.png", mask)
        extra = ["--data.extra_roots", f"[{images.parent}]",
                 "--data.resolutions", f"{{{images.parent}: 1.0}}"]  # fmt: skip
    args = [
        *_fit_args(config, cil_root, tmp_path / "run"),
        *extra,
        *_fine_tuning_args(config, cil_root, tmp_path),
        "--trainer.fast_dev_run",
        "true",
    ]
    assert main(args) == 0


def _fine_tuning_args(config: Path, cil_root: Path, tmp_path: Path) -> list[str]:
    """A config that starts from another config's checkpoint (``model.init_from:
    runs/<name>/checkpoints/best.ckpt``) gets one from a tiny run of ``configs/<name>.yaml``
    (so the pair's networks are shown to match); one that trains on scenes gets a small
    scene with road lines (a clean checkout has neither file)."""
    import yaml

    settings = yaml.safe_load(config.read_text())
    extra = []
    init = (settings.get("model") or {}).get("init_from")
    if init:
        teacher_config = config.parent / f"{Path(init).parts[-3]}.yaml"
        teacher = tmp_path / "teacher"
        fit = [*_fit_args(teacher_config, cil_root, teacher), "--trainer.max_epochs", "1"]
        assert main(fit) == 0
        extra += ["--model.init_from", str(teacher / "checkpoints" / "best.ckpt")]
    if (settings.get("data") or {}).get("scenes"):
        from tests.test_scene_training import region

        (tmp_path / "region").mkdir()
        extra += ["--data.scenes", str(region(tmp_path / "region")), "--data.block", "64"]
    return extra


def test_train_submit_and_resume(cil_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        *_fit_args(CONFIGS[0].parent / "quick.yaml", cil_root, run),
        "--trainer.max_epochs",
        "1",
    ]
    assert main(args) == 0
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert "val_patch_f1" in (run / "metrics.csv").read_text().splitlines()[0]

    assert main(["tune", "--ckpt", str(ckpt), "--quiet"]) == 0
    by_metric, last, path = tuned_thresholds(ckpt, tta=False)
    tuned = by_metric["f1"]
    assert (path.name, last, tuned.tta) == ("best.ckpt.thresholds.json", "f1", False)
    printed = capsys.readouterr().out
    assert "validation patch scores on 1 tiles" in printed and 0 < tuned.pixel < 1
    assert "bootstrap over tiles (1 validation tiles" in printed
    assert "lowest road patch F1 of a tile" in printed

    out = tmp_path / "sub.csv"
    # data from the checkpoint, thresholds from tune
    assert main(["submit", "--ckpt", str(ckpt), "--out", str(out), "--quiet", "--tta"]) == 0
    frame = read_submission(out)
    assert len(frame) == 2 * 16 and frame.id.iloc[0] == "144_0_0"
    printed = capsys.readouterr().out
    # tuned without TTA only: used with TTA too, and the decision line says so
    assert f"pixel {tuned.pixel:g}, patch {tuned.patch:g} (tuned for f1 without TTA" in printed
    assert "none tuned with TTA: for the best match run roadseg tune --tta" in printed
    assert "wrote" in printed

    # The same options from a config file: a vote of three copies of one model is that model.
    options = tmp_path / "vote.yaml"
    options.write_text(f"ckpt: [{ckpt}, {ckpt}, {ckpt}]\nmerge: vote\ntta: true\n")
    voted = tmp_path / "vote.csv"
    assert main(["submit", "--config", str(options), "--out", str(voted), "--quiet"]) == 0
    assert voted.read_text() == out.read_text()
    assert "majority vote" in capsys.readouterr().out
    # Post-processing switched on by the command line changes the decision it reports.
    post = ["submit", "--ckpt", str(ckpt), "--out", str(tmp_path / "post.csv"), "--quiet",
            "--min-area", "20", "--close-gaps", "4"]  # fmt: skip
    assert main(post) == 0
    assert "close gaps 4 px, min area 20 px" in capsys.readouterr().out
    read_submission(tmp_path / "post.csv")
    options.write_text("ckpt: x.ckpt\nthreshold: 0.3\n")
    assert main(["submit", "--config", str(options)]) == 2
    assert "vote.yaml: unknown option 'threshold'" in capsys.readouterr().err

    scene = write_raster(
        tmp_path / "scene.tif", road_tile(100, 5)[0][:3], crs="EPSG:32632",
        transform=from_origin(500_000, 5_000_000, 1, 1),
    )  # fmt: skip
    predict = ["predict", str(scene), "--out", str(tmp_path / "roads.tif"), "--ckpt", str(ckpt),
               "--output", "mask", "--window", "64", "--overlap", "16", "--quiet"]  # fmt: skip
    assert main(predict) == 0
    with rasterio.open(tmp_path / "roads.tif") as roads:
        assert roads.crs.to_epsg() == 32632 and roads.shape == (100, 100)
        assert set(np.unique(roads.read(1))) <= {0, 1}

    assert main(args) == 2  # a fresh run would overwrite this one: refused
    assert "resume it with `--ckpt_path last`" in capsys.readouterr().err
    assert main([*args[:-1], "2", "--ckpt_path", "last"]) == 0  # resumed to a second epoch
    metrics = (run / "metrics.csv").read_text()
    assert sorted({line.split(",")[0] for line in metrics.splitlines()[1:]}) == ["0", "1"]


def test_evaluate_scores_the_validation_split_as_submit_predicts(cil_root, tmp_path, capsys):
    """The honest local score: the validation tiles predicted as submit predicts, written as
    a CSV that roadseg score scores the same against the training masks; predicting tiles
    the checkpoint trained on says so; submission names say how they were made."""
    run = tmp_path / "run"
    args = [
        *_fit_args(CONFIGS[0].parent / "quick.yaml", cil_root, run),
        "--trainer.max_epochs",
        "1",
    ]
    assert main(args) == 0
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["tune", "--ckpt", str(ckpt), "--quiet"]) == 0
    capsys.readouterr()
    # The honest local score: the validation tiles as submit predicts them, written as a
    # CSV that roadseg score scores the same against the training masks.
    val_csv = tmp_path / "val.csv"
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(val_csv), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "the 1 validation tiles of" in printed and "(none trained it)" in printed
    truth = cil_root / "training" / "groundtruth"
    assert main(["score", str(val_csv), "--truth", str(truth)]) == 0
    scored = capsys.readouterr().out
    masks = len(list(truth.iterdir()))
    left = masks - 1
    assert f"1 tiles, 16 patches scored against {truth} ({left} masks there have no rows" in scored
    table = lambda text: text[text.index("patch accuracy") :].strip()  # noqa: E731
    assert table(scored) == table(printed[printed.index("the CSV's labels") :])
    # beside them, the honest figure (1 tile: nothing to cross-fit), the tuned and the defaults
    assert "honest: tuned on the other half (cross-fitted)" in printed
    assert "tuned on these tiles: optimistic" in printed and "defaults" in printed
    # a mean ensemble's thresholds: stored by tune, used when the same checkpoints predict
    pair = ["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--ckpt", str(ckpt)]
    assert main(["tune", *pair, "--quiet"]) == 0
    assert "the thresholds of the mean of these 2 checkpoints" in capsys.readouterr().out
    reordered = ["--ckpt", str(ckpt), "--ckpt", str(run / "checkpoints" / "last.ckpt")]
    assert main(["evaluate", *reordered, "--out", str(tmp_path / "pair.csv"), "--quiet"]) == 0
    assert "on validation for this ensemble" in capsys.readouterr().out
    # Predicting the training images says that most of them trained this checkpoint.
    seen_csv = tmp_path / "seen.csv"
    images = cil_root / "training" / "images"
    assert main(["submit", "--ckpt", str(ckpt), "--data", str(images), "--out", str(seen_csv),
                 "--quiet"]) == 0  # fmt: skip
    assert f"note: {left} of these {masks} tiles trained {ckpt}: scores on them read high" in (
        capsys.readouterr().out
    )
    # Submissions are named by how they were made.
    from roadseg.cli.prediction import submission_name
    from roadseg.options import PredictOptions

    made = PredictOptions(ckpt=(str(ckpt),), tta=True)
    assert submission_name(made, "cil") == "run-cil-tta.csv"
    made = PredictOptions(ckpt=(str(ckpt), str(ckpt)), merge="vote")
    assert submission_name(made, "cil") == "run-cil-ensemble2-vote.csv"
    made = PredictOptions(ckpt=(str(ckpt),), tta=True, metric="accuracy")
    assert submission_name(made, "validation") == "run-validation-tta-accuracy.csv"


def test_upload_without_a_token_says_what_to_run_later(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    with pytest.raises(
        RoadsegError,
        match=r"sub.csv: no Kaggle API token .* later: kaggle competitions submit -c cil-x -f .*sub.csv -m 'first try'",
    ):
        upload(tmp_path / "sub.csv", "cil-x", "first try")


def test_commands_that_read_a_run_never_rewrite_it(cil_root, tmp_path, capsys):
    """validate, test, tune and figures write beside a run; its config trains again elsewhere."""
    run = tmp_path / "run"
    assert main([*_fit_args(CONFIGS[0].parent / "quick.yaml", cil_root, run),
                 "--trainer.max_epochs", "1"]) == 0  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    kept = {name: (run / name).read_bytes() for name in ("metrics.csv", "config.yaml")}
    saved = (run / "config.yaml").read_text()
    assert "RunCSVLogger" not in saved and "ckpt_path: null" in saved

    config = str(run / "config.yaml")
    assert main(["validate", "--config", config, "--ckpt_path", str(ckpt)]) == 0
    assert main(["validate", "--config", config, "--ckpt_path", str(ckpt)]) == 0
    assert main(["test", "--config", config, "--ckpt_path", str(ckpt)]) == 0
    assert main(["tune", "--ckpt", str(ckpt), "--quiet"]) == 0
    assert main(["figures", "--ckpt", str(ckpt), "--runs", str(run),
                 "--out", str(tmp_path / "figures")]) == 0  # fmt: skip
    assert {name: (run / name).read_bytes() for name in kept} == kept
    for stage, versions in (("validate", 2), ("test", 1)):
        for v in range(versions):
            header = (run / stage / f"version_{v}" / "metrics.csv").read_text().splitlines()[0]
            assert f"{stage if stage == 'test' else 'val'}_patch_accuracy" in header
    printed = capsys.readouterr().out
    tuned = tuned_thresholds(ckpt, tta=False)[0]["f1"]
    assert tuned.tta is False and tuned.metric == "f1"
    # figures mark the operating point of the tuned thresholds, the ones submit uses
    assert (
        f"decision: pixel {tuned.pixel:g}, patch {tuned.patch:g} (tuned for f1 without" in printed
    )

    again = tmp_path / "again"
    assert main(["fit", "--config", config, "--trainer.default_root_dir", str(again),
                 "--trainer.max_epochs", "1"]) == 0  # fmt: skip
    assert (again / "checkpoints" / "best.ckpt").is_file() and (again / "metrics.csv").is_file()
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_submission_model_trains_on_every_labelled_tile(cil_root, tmp_path, capsys):
    """data.val_fraction 0: no validation split, best.ckpt is the last epoch, early stopping
    is switched off, the run stops on the learning-rate curve of schedule_epochs, tune refuses
    it with a line that says what to do, and submit writes a CSV with given thresholds."""
    import torch

    run = tmp_path / "all"
    stopping = tmp_path / "early_stopping.yaml"  # as in configs/cpu-long.yaml
    stopping.write_text(
        "trainer:\n  callbacks:\n    - class_path: pytorch_lightning.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val_patch_f1, mode: max, patience: 2}\n"
    )
    args = [*_fit_args(CONFIGS[0].parent / "quick.yaml", cil_root, run), "--config", str(stopping),
            "--trainer.max_epochs", "1", "--model.schedule_epochs", "4",
            "--data.val_fraction", "0"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "every labelled tile trains" in printed and "early stopping is off" in printed
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    # 2 steps of a cosine laid over 4 epochs of 2 steps: the rate where that curve is, not 0
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    lr = state["lr_schedulers"][0]["_last_lr"][0]
    assert lr == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert main(["tune", "--ckpt", str(ckpt), "--quiet"]) == 2
    assert "trained without a validation split" in capsys.readouterr().err
    out = tmp_path / "all.csv"
    assert main(["submit", "--ckpt", str(ckpt), "--out", str(out), "--quiet",
                 "--pixel-threshold", "0.4"]) == 0  # fmt: skip
    assert len(read_submission(out)) == 2 * 16


def test_a_lightning_command_that_fails_leaves_nothing_and_keeps_what_was_there(
    cil_root, tmp_path, capsys
):
    """fit with an option the model refuses: one line naming the option, and no run
    folder, config.yaml or provenance.json left; folders that were there (empty) stay."""
    runs = tmp_path / "runs"
    runs.mkdir()
    args = [*_fit_args(CONFIGS[0].parent / "quick.yaml", cil_root, runs / "a" / "b"),
            "--model.loss", "bcee"]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("roadseg: error: --model.loss=bcee: unknown loss")
    assert runs.is_dir() and list(runs.iterdir()) == []
    # validate of a checkpoint that is not there writes no version folder either
    trained = tmp_path / "trained"
    (trained / "checkpoints").mkdir(parents=True)
    (trained / "checkpoints" / "best.ckpt").write_bytes(b"")
    config = tmp_path / "run.yaml"
    config.write_text(f"trainer:\n  default_root_dir: {trained}\n")
    assert main(["validate", "--config", str(config), "--ckpt_path",
                 str(trained / "checkpoints" / "bst.ckpt")]) == 2  # fmt: skip
    assert "did you mean" in capsys.readouterr().err
    assert sorted(p.name for p in trained.iterdir()) == ["checkpoints"]


GPU_CONFIGS = [c for c in CONFIGS if "accelerator: gpu" in c.read_text()]


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="a GPU is usable here: nothing to refuse"
)
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=[c.stem for c in GPU_CONFIGS])
def test_a_gpu_config_without_a_gpu_is_refused_not_trained_on_the_cpu(
    config, cil_root, tmp_path, capsys
):
    """A GPU config says so in one line where no GPU is usable (it trained on the CPU for up
    to 100 epochs, without a word, with accelerator: auto), and makes no run folder."""
    run = tmp_path / "run"
    args = ["fit", "--config", str(config), "--data.root", str(cil_root),
            "--trainer.default_root_dir", str(run)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"roadseg: error: {config}: asks for a GPU and none is usable here")
    assert "train configs/cpu.yaml" in err and len(err.splitlines()) == 1
    assert not run.exists()
