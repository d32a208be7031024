"""The paper's reproduction: a reduced plan end to end on real tiles, and its determinism."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from roadseg.errors import RoadsegError
from roadseg.figures import FIGURES
from roadseg.provenance import file_stamps
from roadseg.reproduce import load_reproduction, reproduce

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {
    "trainer.accelerator": "cpu", "trainer.devices": 1, "trainer.precision": "32-true",
    "trainer.max_epochs": 2, "trainer.log_every_n_steps": 1, "data.crop_size": 64,
    "data.batch_size": 4, "data.samples_per_epoch": 8, "data.num_workers": 0,
}  # fmt: skip


def write_plan(path: Path, root: Path, methods: list[str], folds: list[int]) -> Path:
    configs = {"logreg": "logreg.yaml", "patch_cnn": "patch_cnn.yaml"}
    plan = {
        "root": str(root),
        "split": {"folds": 5, "split_seed": 0},
        "methods": [
            {
                "name": m,
                "config": str(ROOT / "configs" / configs[m]),
                "args": {"trainer.max_epochs": 1} if m == "logreg" else {},
            }
            for m in methods
        ],  # fmt: skip
        "figures": {"method": "patch_cnn"},
        "profiles": {"tiny": {"folds": folds, "seeds": [0], "budget": BUDGET}},
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def test_a_reduced_plan_gives_the_table_runs_and_every_figure(shared_data, tmp_path):
    cil = shared_data / "cil-2022"
    plan = write_plan(tmp_path / "plan.yaml", cil, ["logreg", "patch_cnn"], [0, 1])
    out = tmp_path / "results"
    runs = reproduce(plan, out, profile="tiny")

    assert list(zip(runs["method"], runs["fold"], strict=True)) == [
        ("logreg", 0), ("logreg", 1), ("patch_cnn", 0), ("patch_cnn", 1)
    ]  # fmt: skip
    assert runs["patch_f1"].between(0, 1).all() and (runs["parameters"] > 0).all()
    table = pd.read_csv(out / "table.csv")
    assert list(table["method"]) == ["logreg", "patch_cnn"] and list(table["runs"]) == [2, 2]
    for method in ("logreg", "patch_cnn"):  # mean and sample std over the two folds
        f1 = runs.loc[runs["method"] == method, "patch_f1"]
        row = table[table["method"] == method].iloc[0]
        assert row["patch_f1_mean"] == pytest.approx(f1.mean(), abs=1e-6)
        assert row["patch_f1_std"] == pytest.approx(f1.std(ddof=1), abs=1e-6)
    text = (out / "table.md").read_text()
    assert "geographic folds" in text and "folds 0, 1 of 5" in text and " ± " in text
    assert "minutes per run" in (out / "timing.md").read_text()

    run_dir = out / "runs" / "tiny" / "patch_cnn" / "fold1-seed0"
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["packages"]["torch"]
    assert "commit" in provenance["git"] and "--data.fold" in provenance["argv"]

    for name in FIGURES:
        path = out / "figures" / name
        with rasterio.open(path) as png:  # a real PNG with a picture in it
            pixels = png.read()
        assert png.driver == "PNG" and min(pixels.shape[1:]) > 200, name
        assert np.unique(pixels).size > 16, name

    # the runs are done: a second call trains nothing and writes the same table
    before = (out / "table.csv").read_bytes()
    reproduce(plan, out, profile="tiny", figures=False)
    assert (out / "table.csv").read_bytes() == before
    # a finished run whose settings the plan has since changed is not taken as done
    changed = yaml.safe_load(plan.read_text())
    changed["methods"][1]["args"] = {"model.lr": 0.01}
    plan.write_text(yaml.safe_dump(changed))
    with pytest.raises(RoadsegError, match=r"run 'patch_cnn/fold0-seed0' finished with other "
                       r"settings \(model.lr changed\): move or delete its folder"):  # fmt: skip
        reproduce(plan, out, profile="tiny", figures=False)


def test_the_same_seed_gives_the_same_table(cil_root, tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", cil_root, ["patch_cnn"], [2])
    tables = []
    for out in ("first", "second"):
        reproduce(plan, tmp_path / out, profile="tiny", figures=False)
        tables.append((tmp_path / out / "table.csv").read_bytes())
    assert tables[0] == tables[1]


def test_the_tables_record_the_environment_and_a_rerun_says_what_changed(
    cil_root, tmp_path, capsys
):
    import torch

    plan = write_plan(tmp_path / "plan.yaml", cil_root, ["patch_cnn"], [2])
    out = tmp_path / "results"
    reproduce(plan, out, profile="tiny", figures=False)
    env = json.loads((out / "environment.json").read_text())
    assert env["evaluation_backend"].startswith("torch (PyTorch), fp32 on the CPU")
    assert env["packages"]["torch"] == torch.__version__.split("+")[0]
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu"]["model"]
    assert "evaluation rows predicted by torch (PyTorch)" in (out / "table.md").read_text()
    capsys.readouterr()
    reproduce(plan, out, profile="tiny", figures=False)  # the same environment: no note
    assert "another environment" not in capsys.readouterr().out
    env["packages"]["torch"] = "0.1"  # as if made with another PyTorch
    (out / "environment.json").write_text(json.dumps(env))
    reproduce(plan, out, profile="tiny", figures=False)
    said = capsys.readouterr().out
    assert f"torch 0.1 -> {torch.__version__.split('+')[0]}" in said and "last digits" in said
    for foreign in ('["not", "ours"]', "null", "\udcff"):  # valid JSON not ours, not UTF-8
        (out / "environment.json").write_bytes(foreign.encode("utf-8", "surrogateescape"))
        reproduce(plan, out, profile="tiny", figures=False)
        assert "is not roadseg's record of an environment" in capsys.readouterr().out


def test_ablations_self_training_and_evaluation_rows(cil_root, tmp_path):
    """base: and teacher: methods train with the right arguments, evaluation rows score
    the fold's checkpoints, and an evaluation of one run alone repeats its table row."""
    patch_cnn = str(ROOT / "configs" / "patch_cnn.yaml")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "root": str(cil_root), "split": {"folds": 5},
        "methods": [
            {"name": "cnn", "config": patch_cnn},
            {"name": "cnn-plain", "base": "cnn", "args": {"data.augment": "none"}, "label": "CNN, no aug."},
            # patch_cnn's patch loss cannot weight pixels: the student learns with bce
            {"name": "cnn-self", "base": "cnn", "teacher": "cnn", "args": {"model.loss": "bce"}},
        ],
        "evaluations": [
            {"name": "cnn-again", "models": ["cnn"]},
            {"name": "cnn+tta", "models": ["cnn"], "tta": True},
            {"name": "both", "models": ["cnn", "cnn-plain"], "tta": True},
            {"name": "both+post", "models": ["cnn", "cnn-plain"], "tta": True,
             "postprocess": {"min_area": 10**6}, "label": "both, every road removed"},
        ],
        "reference": "cnn",
        "profiles": {"tiny": {"split": {"folds": 3}, "folds": [1], "budget": BUDGET,
                              "pseudo_tta": False}},
    }))  # fmt: skip
    out = tmp_path / "results"
    runs = reproduce(plan, out, profile="tiny", figures=False).set_index("method")

    assert list(runs.index) == [
        "cnn",
        "cnn-plain",
        "cnn-self",
        "cnn-again",
        "cnn+tta",
        "both",
        "both+post",
    ]
    metrics = ["patch_accuracy", "patch_f1", "iou", "precision", "recall"]
    for col in metrics:  # the evaluation predicts the validation tiles as training validated them
        assert runs.loc["cnn-again", col] == pytest.approx(runs.loc["cnn", col], abs=1e-6), col
    assert runs.loc["both", "parameters"] == 2 * runs.loc["cnn", "parameters"]
    # a min area larger than a tile removes every road: no road patch, no road pixel
    assert runs.loc["both+post", "recall"] == 0 and runs.loc["both+post", "iou"] == 0
    root = out / "runs" / "tiny"
    hparams = yaml.safe_load((root / "cnn-plain" / "fold1-seed0" / "hparams.yaml").read_text())
    assert hparams["augment"] == "none" and hparams["fold"] == 1 and hparams["folds"] == 3
    labels = root / "cnn-self" / "fold1-seed0" / "pseudo-labels"
    about = json.loads((labels / "pseudo.json").read_text())
    assert about["tiles"] == 2 and len(list(labels.glob("satimage_*.png"))) == 2
    assert about["teacher"] == [
        str((root / "cnn" / "fold1-seed0" / "checkpoints" / "best.ckpt").resolve())
    ]
    teacher = root / "cnn" / "fold1-seed0" / "checkpoints" / "best.ckpt"
    assert about["checkpoints"] == file_stamps([teacher])  # made again once it is retrained
    self_hparams = yaml.safe_load((root / "cnn-self" / "fold1-seed0" / "hparams.yaml").read_text())
    assert self_hparams["pseudo_labels"] == str(labels)
    text = (out / "table.md").read_text()
    assert "| CNN, no aug. | 1 |" in text and "| both, every road removed | 1 |" in text
    # paired differences from the reference method, fold by fold
    table = pd.read_csv(out / "table.csv").set_index("method")
    assert table.loc["cnn-again", "patch_f1_diff_mean"] == pytest.approx(0, abs=1e-6)
    assert table.loc["both", "patch_f1_diff_mean"] == pytest.approx(
        runs.loc["both", "patch_f1"] - runs.loc["cnn", "patch_f1"], abs=1e-6
    )
    assert "road F1 − cnn, paired by fold" in text
    cached = root / "evaluations" / "both" / "fold1-seed0.json"
    kept = json.loads(cached.read_text())
    assert kept["parameters"] == runs.loc["both", "parameters"] and len(kept["checkpoints"]) == 2


def test_plans_that_cannot_run_are_refused(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}], "profiles": {"smoke": {}}})
    )
    with pytest.raises(RoadsegError, match="no profile 'paper'; the plan has: smoke"):
        load_reproduction(plan, "paper")
    plan.write_text(yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}],
                                    "profiles": {"smoke": {"folds": [5]}}}))  # fmt: skip
    with pytest.raises(RoadsegError, match="fold 5 does not exist"):
        load_reproduction(plan, "smoke")
    plan.write_text(yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}],
                                    "profiles": {"smoke": {}}, "figures": {"method": "b"}}))  # fmt: skip
    with pytest.raises(RoadsegError, match="figures.method 'b' is not one of the plan's methods"):
        load_reproduction(plan, "smoke")
    for bad, message in [
        ({"name": "b", "base": "c"}, "method 'b': base 'c' is not an earlier method"),
        ({"name": "b", "base": "a", "teacher": "b"}, "method 'b': teacher 'b' is not an earlier"),
        ({"name": "a", "config": "a.yaml"}, "two methods of the plan are called 'a'"),
    ]:
        plan.write_text(yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}, bad],
                                        "profiles": {"smoke": {}}}))  # fmt: skip
        with pytest.raises(RoadsegError, match=message):
            load_reproduction(plan, "smoke")
    for evaluations, message in [
        ([{"name": "e", "models": ["z"]}], "evaluation 'e': 'z' is not a method"),
        ([{"name": "a", "models": ["a"]}], "evaluation 'a': the name is taken"),
        ([{"name": "e", "models": ["a"], "ttaa": True}], "evaluation 'e': unknown key 'ttaa'"),
    ]:
        plan.write_text(yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}],
                                        "evaluations": evaluations, "profiles": {"smoke": {}}}))  # fmt: skip
        with pytest.raises(RoadsegError, match=message):
            load_reproduction(plan, "smoke")
    plan.write_text(yaml.safe_dump({"methods": [{"name": "a", "config": "a.yaml"}],
                                    "profiles": {"smoke": {"method_args": {"b": {}}}}}))  # fmt: skip
    with pytest.raises(RoadsegError, match="method_args of 'b', not a method"):
        load_reproduction(plan, "smoke")
    resolved = load_reproduction(ROOT / "configs" / "plans" / "paper.yaml", "smoke")
    assert len(resolved["runs"]) == len(resolved["methods"]) * 2
    assert {r["args"]["data.split"] for r in resolved["runs"]} == {"geographic"}


def test_the_cpu_profile_is_three_folds_of_every_method_and_ablation():
    plan = load_reproduction(ROOT / "configs" / "plans" / "paper.yaml", "cpu")
    assert plan["split"]["folds"] == 3 and plan["folds"] == [0, 1, 2]
    assert len(plan["runs"]) == 3 * len(plan["methods"])
    runs = {r["name"]: r for r in plan["runs"]}
    unet, scratch = runs["unet/fold1-seed0"], runs["unet-scratch/fold1-seed0"]
    # the profile's U-Net encoder reaches every ablation built on it
    assert unet["args"]["model.model_args.encoder"] == "tu-tf_efficientnet_lite0"
    assert scratch["args"]["model.model_args.encoder"] == "tu-tf_efficientnet_lite0"
    assert scratch["args"]["model.model_args.encoder_weights"] is None
    assert scratch["config"] == unet["config"] and scratch["args"]["data.fold"] == 1
    student = runs["unet-self/fold2-seed0"]
    assert student["teacher"] == "unet-context/fold2-seed0" and student["args"]["data.context"]
    assert {r["args"]["trainer.max_time"] for r in plan["runs"]} == {"00:00:02:00"}
    # every evaluation row names methods of the plan, and the ablations are there
    names = {
        "unet-aug-none",
        "unet-aug-d4",
        "unet-aug-full",
        "unet-scratch",
        "unet-context",
        "unet-self",
    }
    assert names <= set(plan["methods"])
    assert {m for e in plan["evaluations"] for m in e["models"]} <= set(plan["methods"])


def test_a_profile_trained_on_the_cpu_is_evaluated_there_whatever_the_machine_has(monkeypatch):
    """The smoke and cpu profiles train on the CPU and are evaluated there in fp32, also on
    a machine with a GPU (they evaluated in bf16 on CUDA, changing the committed tables);
    the paper profile's evaluation takes the GPU when there is one."""
    import torch

    from roadseg.reproduce import evaluation_backend

    plan = Path(__file__).resolve().parents[1] / "configs" / "plans" / "paper.yaml"
    assert load_reproduction(plan, "smoke")["device"] == "cpu"
    assert load_reproduction(plan, "paper")["device"] == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert evaluation_backend("cpu") == "torch (PyTorch), fp32 on the CPU"
    assert evaluation_backend("auto") == "torch (PyTorch), bf16 on the GPU"
