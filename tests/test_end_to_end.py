"""End to end on the real competition tiles: train a few steps, submit, validate."""

import pytest

from roadseg.cli import main
from roadseg.submission import validate_submission


@pytest.fixture(scope="module")
def quick_checkpoint(shared_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("quick")
    args = [
        "fit",
        "--config",
        "configs/quick.yaml",
        "--data.root",
        str(shared_data / "cil-2022"),
        "--trainer.max_steps",
        "2",
        "--data.samples_per_epoch",
        "16",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(args) == 0
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize(("dataset", "rows"), [("cil-2022", 90_000), ("cil-2020", 135_736)])
def test_submission_for_the_real_test_tiles(
    quick_checkpoint, shared_data, tmp_path, dataset, rows, capsys
):
    out = tmp_path / f"{dataset}.csv"
    assert (
        main(
            [
                "submit",
                "--ckpt",
                str(quick_checkpoint),
                "--data",
                str(shared_data / dataset),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = validate_submission(out, shared_data / dataset)
    assert report.rows == rows
    assert f"{rows:,} rows" in capsys.readouterr().out
    assert (
        main(
            [
                "validate-submission",
                str(out),
                "--images",
                str(shared_data / dataset / "test" / "images"),
            ]
        )
        == 0
    )
