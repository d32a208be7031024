"""Reproduce the paper: methods x folds x seeds, a cross-validated table and the figures.

A reproduction plan (``configs/plans/paper.yaml``) names the methods once and the scale
of the experiment per *profile*::

    split: {folds: 5, split_seed: 0}          # geographic folds of the main dataset
    methods:
      - {name: unet, config: configs/unet.yaml, args: {...}}
    profiles:
      smoke: {folds: [0, 1], seeds: [0], budget: {trainer.max_epochs: 2, ...}}
      paper: {folds: [0, 1, 2, 3, 4], seeds: [0, 1, 2], budget: {...}}
    figures: {method: unet}

Every (method, fold, seed) trains (one after the other, in this process) into
``<out>/runs/<profile>/<method>/fold<k>-seed<s>`` (finished runs are skipped,
interrupted ones resume). Then ``<out>/table.csv`` and ``table.md`` hold, per method,
the mean and standard deviation over its runs of the best validation epoch's patch F1,
pixel IoU, precision and recall, and the parameter count; ``<out>/runs.csv`` has every
run. Wall time is a measurement that never repeats exactly, so it goes to
``<out>/timing.csv`` and ``timing.md``; the table itself is the same on every rerun
with the same seeds on the same machine. The figures go to ``<out>/figures/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.experiments import METRICS, _train, markdown_table, run_row
from roadseg.io import atomic_path
from roadseg.paths import load_yaml

SPLIT_NOTE = (
    "geographic folds of {root}: tiles are placed on their maps by matching edges, and "
    "4x4-tile blocks of a map go to one fold, so neighbouring tiles never sit on both "
    "sides of the split"
)


def load_reproduction(path: str | Path, profile: str) -> dict:
    """Read a reproduction plan and resolve one profile: the runs and the split."""
    path = Path(path)
    if not path.is_file():
        raise RoadsegError("plan not found", path)
    plan = load_yaml(path, "plan") or {}
    if not isinstance(plan, dict):
        raise RoadsegError(
            "a plan is a mapping (methods:, profiles:, ...); see configs/plans/", path
        )
    methods = plan.get("methods") or []
    profiles = plan.get("profiles") or {}
    if not methods or not all(
        isinstance(m, dict) and {"name", "config"} <= set(m) for m in methods
    ):
        raise RoadsegError(
            "a reproduction plan needs methods: a list of {name, config, args}", path
        )
    if profile not in profiles:
        raise RoadsegError(f"no profile {profile!r}; the plan has: {', '.join(profiles)}", path)
    chosen = profiles[profile] or {}
    split = {"folds": 5, "split_seed": 0, **(plan.get("split") or {})}
    folds, seeds = chosen.get("folds") or [0], chosen.get("seeds") or [0]
    bad = [f for f in folds if not 0 <= f < split["folds"]]
    if bad:
        raise RoadsegError(f"fold {bad[0]} does not exist; folds are 0..{split['folds'] - 1}", path)
    shown = (plan.get("figures") or {}).get("method")
    if shown is not None and shown not in {m["name"] for m in methods}:
        raise RoadsegError(f"figures.method {shown!r} is not one of the plan's methods", path)
    runs = []
    for method in methods:
        for fold in folds:
            for seed in seeds:
                args = {
                    "seed_everything": seed, "data.split": "geographic",
                    "data.folds": split["folds"], "data.fold": fold, "data.seed": seed,
                    "data.split_seed": split["split_seed"], **(chosen.get("budget") or {}),
                    **(method.get("args") or {}),
                }  # fmt: skip
                runs.append({
                    "method": method["name"], "fold": fold, "seed": seed,
                    "name": f"{method['name']}/fold{fold}-seed{seed}", "config": method["config"],
                    "args": args,
                })  # fmt: skip
    return {
        "profile": profile, "runs": runs, "folds": folds, "seeds": seeds, "split": split,
        "note": chosen.get("note"),
        "methods": [m["name"] for m in methods], "figures": plan.get("figures") or {},
        "root": chosen.get("root") or plan.get("root") or "data/cil-2022",
    }  # fmt: skip


def reproduce(
    plan_path: str | Path, out: str | Path = "results", *, profile: str = "paper",
    figures: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """Train every run of the profile (resuming), write the tables and the figures."""
    plan = load_reproduction(plan_path, profile)
    out = Path(out)
    run_root = out / "runs" / profile
    for i, run in enumerate(plan["runs"], 1):
        print(f"[{i}/{len(plan['runs'])}] {run['name']}", flush=True)
        args = {"data.root": plan["root"], **run["args"]}
        _train({**run, "args": args}, {}, run_root / run["name"], in_process=True)
    runs = pd.DataFrame([
        {"method": r["method"], "fold": r["fold"], "seed": r["seed"],
         **run_row(run_root / r["name"])}
        for r in plan["runs"]
    ])  # fmt: skip
    write_tables(runs, plan, out)
    if figures:
        from roadseg.figures import make_figures

        method = plan["figures"].get("method") or plan["methods"][-1]
        first = next(r for r in plan["runs"] if r["method"] == method)
        make_figures(
            out / "figures",
            ckpt=run_root / first["name"] / "checkpoints" / "best.ckpt",
            curves={m: run_root / next(r for r in plan["runs"] if r["method"] == m)["name"]
                    for m in plan["methods"]},
            context=0,  # as the table's scores: validation during training sees tiles alone
        )  # fmt: skip
    return runs


def summarise(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method: number of runs, mean and standard deviation of each metric, parameters."""
    rows = []
    for method in methods:
        group = runs[runs["method"] == method]
        row = {"method": method, "runs": len(group)}
        for col in METRICS.values():
            row[f"{col}_mean"] = group[col].mean()
            row[f"{col}_std"] = group[col].std(ddof=1) if len(group) > 1 else 0.0
        row["parameters"] = int(group["parameters"].iloc[0])
        row["best_epoch_mean"] = group["best_epoch"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def describe_split(plan: dict) -> str:
    split = plan["split"]
    folds = ", ".join(map(str, plan["folds"]))
    seeds = ", ".join(map(str, plan["seeds"]))
    return (
        f"Profile `{plan['profile']}`: validation on fold{'s' if len(plan['folds']) > 1 else ''} "
        f"{folds} of {split['folds']} {SPLIT_NOTE.format(root=plan['root'])} (fold seed "
        f"{split['split_seed']}); training seeds {seeds}. Each cell is the mean ± standard "
        "deviation over a method's runs of the best validation epoch."
    )


def write_tables(runs: pd.DataFrame, plan: dict, out: Path) -> pd.DataFrame:
    """``table.csv``/``table.md`` (metrics), ``runs.csv`` and ``timing.csv``/``timing.md``."""
    table = summarise(runs, plan["methods"])
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "runs.csv") as tmp:
        runs.drop(columns=["train_minutes"]).to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out / "table.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    names = {
        "patch_accuracy": "patch accuracy (leaderboard)",
        "patch_f1": "road patch F1",
        "iou": "pixel IoU",
        "precision": "precision",
        "recall": "recall",
    }
    shown = pd.DataFrame({"method": table["method"], "runs": table["runs"]})
    for col, title in names.items():
        shown[title] = [
            f"{m:.3f} ± {s:.3f}"
            for m, s in zip(table[f"{col}_mean"], table[f"{col}_std"], strict=True)
        ]
    shown["parameters"] = table["parameters"].map("{:,}".format)
    with atomic_path(out / "table.md") as tmp:
        note = f"**{plan['note']}**\n\n" if plan.get("note") else ""
        tmp.write_text(note + describe_split(plan) + "\n\n" + markdown_table(shown))
    timing = (
        runs.groupby("method", sort=False)["train_minutes"]
        .agg(["mean", "std", "sum"])
        .reset_index()
    )
    with atomic_path(out / "timing.csv") as tmp:
        timing.to_csv(tmp, index=False, float_format="%.3f")
    timing_md = pd.DataFrame({
        "method": timing["method"],
        "train minutes per run": [f"{m:.2f} ± {0 if pd.isna(s) else s:.2f}" for m, s in zip(timing["mean"], timing["std"], strict=True)],
        "total minutes": timing["sum"].map("{:.1f}".format),
    })  # fmt: skip
    with atomic_path(out / "timing.md") as tmp:
        tmp.write_text(
            f"Wall time of the `{plan['profile']}` runs on this machine (measured, so it differs "
            "from rerun to rerun; the results table does not).\n\n" + markdown_table(timing_md)
        )
    with atomic_path(out / "plan.json") as tmp:
        tmp.write_text(
            json.dumps(
                {k: plan[k] for k in ("profile", "folds", "seeds", "split", "methods", "root")},
                indent=2,
            )
            + "\n"
        )
    return table
