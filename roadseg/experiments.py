"""Experiment plans: many training runs under one budget, collected into a results table.

A plan is a YAML file::

    budget:            # CLI overrides applied to every run (the scale of the plan)
      trainer.max_time: "00:00:03:00"
      data.crop_size: 192
    runs:
      - name: unet
        config: configs/unet.yaml
        args: {model.model_args.encoder_weights: null}   # this run's own overrides

Each run trains with ``roadseg fit`` in a child process into ``<out>/runs/<name>``; a run
that finished is skipped, one that was interrupted resumes from its last checkpoint. The
table (``<out>/table.csv`` and ``table.md``) holds each run's best validation epoch:
patch F1, pixel IoU, precision, recall, parameters and training minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from roadseg.checkpoints import parameter_count, read_checkpoint
from roadseg.errors import RoadsegError
from roadseg.io import atomic_path
from roadseg.paths import load_yaml

METRICS = {
    "val_patch_accuracy": "patch_accuracy",  # the leaderboard's number
    "val_patch_f1": "patch_f1",  # the course's score: F1 of the road patches
    "val_iou": "iou",
    "val_precision": "precision",
    "val_recall": "recall",
}


def read_plan(path: str | Path) -> dict:
    """A plan file's mapping (an experiment plan's or a reproduction plan's)."""
    path = Path(path)
    if not path.is_file():
        raise RoadsegError("plan not found", path)
    plan = load_yaml(path, "plan") or {}
    if not isinstance(plan, dict):
        raise RoadsegError(
            "a plan is a mapping (methods:, profiles:, ...); see configs/plans/", path
        )
    return plan


def load_plan(path: str | Path) -> dict:
    """Read and check an experiment plan."""
    plan = read_plan(path)
    runs = plan.get("runs") or []
    if not runs or not all(isinstance(r, dict) and "name" in r and "config" in r for r in runs):
        raise RoadsegError("a plan needs runs: a list of {name, config, args}", path)
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise RoadsegError("two runs of the plan share a name", path)
    return plan


def _cli_args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [
            f"--{key}",
            "null"
            if value is None
            else json.dumps(value)
            if isinstance(value, list | dict)
            else str(value),
        ]
    return args


def run_plan(
    plan_path: str | Path, out: str | Path, *, only: list[str] | None = None
) -> pd.DataFrame:
    """Train every run of a plan (skipping finished ones) and write the results table."""
    plan = load_plan(plan_path)
    out = Path(out)
    for run in plan["runs"]:
        if only and run["name"] not in only:
            continue
        train_run(run, plan.get("budget") or {}, out / "runs" / run["name"])
    table = collect(plan, out)
    write_table(table, out)
    return table


def train_run(run: dict, budget: dict, run_dir: Path, *, in_process: bool = False) -> None:
    """Train one run into ``run_dir`` (skipped when done, resumed when interrupted).

    ``in_process``: run ``roadseg fit`` in this process instead of a child process: no
    start-up cost per run (imports, dataset scan), for plans of many short runs.
    """
    done = run_dir / "done.json"
    settings = {"config": run["config"], "args": {**budget, **(run.get("args") or {})}}
    if done.is_file():
        before = json.loads(done.read_text()).get("settings")  # absent: an older roadseg
        if before is not None and json.loads(json.dumps(settings)) != before:
            changed = sorted(
                k for k in {*before["args"], *settings["args"]}
                if before["args"].get(k) != settings["args"].get(k)
            ) + (["config"] if before["config"] != settings["config"] else [])  # fmt: skip
            raise RoadsegError(
                f"run {run['name']!r} finished with other settings ({', '.join(changed)} "
                "changed): move or delete its folder to train it again",
                run_dir,
            )
        print(f"[{run['name']}] done already: {done}")
        return
    resume = ["--ckpt_path", "last"] if (run_dir / "checkpoints" / "last.ckpt").is_file() else []
    args = [
        "fit", "--config", run["config"], *_cli_args({**budget, **(run.get("args") or {})}),
        "--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false", *resume,
    ]  # fmt: skip
    print(
        f"[{run['name']}] {'resuming' if resume else 'training'}: roadseg {' '.join(args)}",
        flush=True,
    )
    start = time.perf_counter()
    if in_process:
        from roadseg.training import run_lightning

        try:
            run_lightning(args)
        except RoadsegError as err:
            raise RoadsegError(f"run {run['name']!r} failed: {err}; rerun to resume it") from err
    else:
        status = subprocess.run([sys.executable, "-m", "roadseg", *args]).returncode
        if status != 0:
            raise RoadsegError(
                f"run {run['name']!r} failed (exit {status}); rerun to resume it", run_dir
            )
    with atomic_path(done) as tmp:  # a resumed run's time counts from its resumption
        tmp.write_text(
            json.dumps(
                {
                    "seconds": time.perf_counter() - start,
                    "resumed": bool(resume),
                    "settings": settings,
                }
            )  # fmt: skip
        )


def run_row(run_dir: Path) -> dict:
    """A finished run's best validation epoch: metrics, parameters, minutes, epoch."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    val = metrics.dropna(subset=["val_patch_f1"])
    best = val.loc[val["val_patch_f1"].idxmax()]  # the first of equal bests, as the checkpoint
    # mapped, not read: only the tensors' shapes are needed
    params = parameter_count(read_checkpoint(run_dir / "checkpoints" / "best.ckpt", mapped=True))
    done = json.loads((run_dir / "done.json").read_text())
    return {
        # runs logged before roadseg reported patch accuracy have no such column: NaN
        **{short: float(best.get(key, float("nan"))) for key, short in METRICS.items()},
        "parameters": params, "train_minutes": done["seconds"] / 60, "best_epoch": int(best["epoch"]),
    }  # fmt: skip


def collect(plan: dict, out: Path) -> pd.DataFrame:
    """One row per finished run: its best validation epoch's metrics, size and time."""
    rows = []
    for run in plan["runs"]:
        run_dir = out / "runs" / run["name"]
        if (run_dir / "done.json").is_file():
            rows.append({"run": run["name"], **run_row(run_dir)})
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """``table.csv`` and ``table.md`` in ``out``, written atomically."""
    with atomic_path(out / "table.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    shown = table.copy()
    for col in METRICS.values():
        shown[col] = shown[col].map("{:.3f}".format)
    shown["parameters"] = shown["parameters"].map("{:,}".format)
    shown["train_minutes"] = shown["train_minutes"].map("{:.1f}".format)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown_table(shown))


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (numbers right-aligned)."""
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) or frame[c].astype(str).str.match(r"^[\d.,-]+$").all()
               for c in frame.columns]  # fmt: skip
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
