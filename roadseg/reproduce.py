"""Reproduce the paper: methods x folds x seeds, a cross-validated table and the figures.

A reproduction plan (``configs/plans/paper.yaml``) names the methods once and the scale
of the experiment per *profile*::

    split: {folds: 5, split_seed: 0}          # geographic folds of the main dataset
    methods:
      - {name: unet, config: configs/unet.yaml, args: {...}}
      - {name: unet-context, base: unet, args: {data.context: true}}      # an ablation
      - {name: unet-self, base: unet-context, teacher: unet-context}       # self-training
    evaluations:                               # rows that train nothing
      - {name: unet+tta, models: [unet], tta: true}
      - {name: ensemble, models: [unet, unet-context], postprocess: {min_area: 400}}
    profiles:
      smoke: {folds: [0, 1], seeds: [0], budget: {trainer.max_epochs: 2, ...}}
      cpu: {split: {folds: 3}, folds: [0, 1, 2], budget: {...}, method_args: {unet: {...}}}
      paper: {folds: [0, 1, 2, 3, 4], seeds: [0, 1, 2], budget: {...}}
    figures: {method: unet}

Every (method, fold, seed) trains (one after the other, in this process) into
``<out>/runs/<profile>/<method>/fold<k>-seed<s>`` (finished runs are skipped,
interrupted ones resume). A method with ``base:`` is that method with its own ``args``
on top; one with ``teacher:`` first has the teacher's run of the same fold and seed
label the unlabelled tiles (:mod:`roadseg.pseudo`; TTA unless the profile says
``pseudo_tta: false``) and trains on them too. An evaluation predicts each fold's
validation tiles with the mean of the named methods' runs of that fold (TTA, context
and fixed post-processing as it says) and is cached in ``<out>/runs/<profile>/evaluations/``.

Then ``<out>/table.csv`` and ``table.md`` hold, per row, the mean and standard
deviation over its runs of the best validation epoch's patch accuracy (the
leaderboard's number), road patch F1, pixel IoU, precision and recall, and the
parameter count; ``<out>/runs.csv`` has every run. Wall time is a measurement that never
repeats exactly, so it goes to ``<out>/timing.csv`` and ``timing.md``; the table itself
is the same on every rerun with the same seeds on the same machine, unless the profile's
budget is wall time (``trainer.max_time``, as ``cpu``). The figures go to
``<out>/figures/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from roadseg.errors import RoadsegError
from roadseg.experiments import METRICS, markdown_table, read_plan, run_row, train_run
from roadseg.io import atomic_path
from roadseg.maps import context_for
from roadseg.patches import CONTEXT_MARGIN
from roadseg.provenance import file_stamps

# What predicts the evaluation rows and the pseudo-labels: PyTorch, whatever `auto` would
# pick (ONNX Runtime sums in another order: the 6th decimal of a score moves)
EVALUATION_BACKEND = "torch"


def evaluation_backend(device: str = "auto") -> str:
    """The backend, precision and device of the evaluation rows, in words."""
    import torch

    gpu = device != "cpu" and torch.cuda.is_available()
    where = "bf16 on the GPU" if gpu else "fp32 on the CPU"
    return f"{EVALUATION_BACKEND} (PyTorch), {where}"


def environment_changes(out: Path, now: dict) -> list[str]:
    """What differs between the environment that wrote ``out``'s tables (its
    ``environment.json``) and ``now``: the reasons a rerun's last digits may differ."""
    path = out / "environment.json"
    if not path.is_file():
        if (out / "table.csv").is_file():
            return ["its tables record no environment (written by an older roadseg)"]
        return []
    try:
        before = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        before = None
    if not isinstance(before, dict):
        return [f"{path} is not roadseg's record of an environment"]
    changes = []
    for key in ("git", "python", "cpu", "cpus", "torch_threads", "cuda", "evaluation_backend"):
        if before.get(key) != now.get(key):
            changes.append(f"{key} {_said(key, before.get(key))} -> {_said(key, now.get(key))}")
    old, new = before.get("packages"), now.get("packages") or {}
    old = old if isinstance(old, dict) else {}
    changes += [f"{name} {old.get(name)} -> {new.get(name)}" for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)]  # fmt: skip
    return changes


def _said(key: str, value) -> str:
    """An environment entry in a few words."""
    if key == "git" and isinstance(value, dict):
        commit = value.get("commit")
        return f"{commit[:10] if commit else 'no commit'}{' with changes' if value.get('dirty') else ''}"
    if key == "cpu" and isinstance(value, dict):
        return f"{value.get('model') or 'an unknown CPU'} ({', '.join(value.get('flags') or [])})"
    return str(value)


SPLIT_NOTE = (
    "geographic folds of {root}: tiles are placed on their maps by matching edges, and "
    "4x4-tile blocks of a map go to one fold, so neighbouring tiles never sit on both "
    "sides of the split"
)


def _resolve_methods(methods: list[dict], method_args: dict, path: Path) -> dict[str, dict]:
    """Each method's config and its own arguments, ``base:`` methods expanded: a method
    with ``base: unet`` is the unet method (config, arguments, this profile's
    ``method_args`` of unet) plus its own ``args``. ``teacher:`` names an earlier method
    whose run of the same fold and seed labels the unlabelled tiles for this one."""
    resolved: dict[str, dict] = {}
    for method in methods:
        name = method["name"]
        if name in resolved:
            raise RoadsegError(f"two methods of the plan are called {name!r}", path)
        base = method.get("base")
        if base is not None and base not in resolved:
            raise RoadsegError(f"method {name!r}: base {base!r} is not an earlier method", path)
        teacher = method.get("teacher")
        if teacher is not None and teacher not in resolved:
            raise RoadsegError(
                f"method {name!r}: teacher {teacher!r} is not an earlier method", path
            )
        inherited = resolved[base] if base else {"config": None, "args": {}}
        config = method.get("config") or inherited["config"]
        if config is None:
            raise RoadsegError(f"method {name!r} needs a config (or a base method)", path)
        args = {**inherited["args"], **(method.get("args") or {}), **(method_args.get(name) or {})}
        resolved[name] = {"config": config, "args": args, "teacher": teacher}
    return resolved


def _check_evaluations(evaluations: list, methods: dict, path: Path) -> list[dict]:
    names = set(methods)
    checked = []
    for e in evaluations:
        if not isinstance(e, dict) or not {"name", "models"} <= set(e):
            raise RoadsegError(
                "evaluations are {name, models: [methods], tta, context, postprocess}", path
            )
        if e["name"] in names:
            raise RoadsegError(f"evaluation {e['name']!r}: the name is taken", path)
        unknown = [m for m in e["models"] if m not in methods]
        if unknown:
            raise RoadsegError(f"evaluation {e['name']!r}: {unknown[0]!r} is not a method", path)
        extra = set(e) - {"name", "models", "tta", "context", "postprocess", "label"}
        if extra:
            raise RoadsegError(f"evaluation {e['name']!r}: unknown key {sorted(extra)[0]!r}", path)
        names.add(e["name"])
        checked.append({"tta": False, "context": False, "postprocess": {}, **e})
    return checked


def load_reproduction(path: str | Path, profile: str) -> dict:
    """Read a reproduction plan and resolve one profile: the runs, the evaluations and the
    split."""
    path = Path(path)
    plan = read_plan(path)
    methods = plan.get("methods") or []
    profiles = plan.get("profiles") or {}
    if not methods or not all(
        isinstance(m, dict) and "name" in m and ("config" in m or "base" in m) for m in methods
    ):
        raise RoadsegError(
            "a reproduction plan needs methods: a list of {name, config (or base), args}", path
        )
    if profile not in profiles:
        raise RoadsegError(f"no profile {profile!r}; the plan has: {', '.join(profiles)}", path)
    chosen = profiles[profile] or {}
    split = {
        "folds": 5,
        "split_seed": 0,
        **(plan.get("split") or {}),
        **(chosen.get("split") or {}),
    }
    folds, seeds = chosen.get("folds") or [0], chosen.get("seeds") or [0]
    bad = [f for f in folds if not 0 <= f < split["folds"]]
    if bad:
        raise RoadsegError(f"fold {bad[0]} does not exist; folds are 0..{split['folds'] - 1}", path)
    resolved = _resolve_methods(methods, chosen.get("method_args") or {}, path)
    unknown = [m for m in chosen.get("method_args") or {} if m not in resolved]
    if unknown:
        raise RoadsegError(
            f"profile {profile!r}: method_args of {unknown[0]!r}, not a method", path
        )
    evaluations = _check_evaluations(plan.get("evaluations") or [], resolved, path)
    shown = (plan.get("figures") or {}).get("method")
    if shown is not None and shown not in resolved:
        raise RoadsegError(f"figures.method {shown!r} is not one of the plan's methods", path)
    if plan.get("reference") is not None and plan["reference"] not in resolved:
        raise RoadsegError(
            f"reference {plan['reference']!r} is not one of the plan's methods", path
        )
    runs = []
    for name, method in resolved.items():
        for fold in folds:
            for seed in seeds:
                args = {
                    "seed_everything": seed, "data.split": "geographic",
                    "data.folds": split["folds"], "data.fold": fold, "data.seed": seed,
                    "data.split_seed": split["split_seed"], **(chosen.get("budget") or {}),
                    **method["args"],
                }  # fmt: skip
                runs.append({
                    "method": name, "fold": fold, "seed": seed,
                    "name": f"{name}/fold{fold}-seed{seed}", "config": method["config"],
                    "args": args,
                    "teacher": f"{method['teacher']}/fold{fold}-seed{seed}" if method["teacher"] else None,
                })  # fmt: skip
    return {
        "profile": profile, "runs": runs, "folds": folds, "seeds": seeds, "split": split,
        "note": chosen.get("note"), "evaluations": evaluations,
        "pseudo_tta": bool(chosen.get("pseudo_tta", True)), "reference": plan.get("reference"),
        "methods": list(resolved), "figures": plan.get("figures") or {},
        "labels": {m["name"]: m["label"] for m in [*methods, *evaluations] if m.get("label")},
        "root": chosen.get("root") or plan.get("root") or "data/cil-2022",
        # a profile trained on the CPU is evaluated there too (fp32), whatever the machine has
        "device": "cpu" if (chosen.get("budget") or {}).get("trainer.accelerator") == "cpu" else "auto",
    }  # fmt: skip


def reproduce(
    plan_path: str | Path, out: str | Path = "results", *, profile: str = "paper",
    figures: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """Train every run of the profile (resuming), evaluate, write the tables and figures."""
    from roadseg.provenance import environment

    plan = load_reproduction(plan_path, profile)
    out = Path(out)
    run_root = out / "runs" / profile
    env = environment(evaluation_backend(plan["device"]))
    changes = environment_changes(out, env)
    if changes:  # said first: a reader comparing the tables knows why digits may move
        print(f"note: {out} was written in another environment ({'; '.join(changes)}): "
              "its last digits may differ from this run's")  # fmt: skip
    for i, run in enumerate(plan["runs"], 1):
        print(f"[{i}/{len(plan['runs'])}] {run['name']}", flush=True)
        args = {"data.root": plan["root"], **run["args"]}
        if run["teacher"]:
            labels = run_root / run["name"] / "pseudo-labels"
            teacher = run_root / run["teacher"] / "checkpoints" / "best.ckpt"
            make_pseudo_labels(teacher, labels, plan["root"], tta=plan["pseudo_tta"],
                               device=plan["device"])  # fmt: skip
            args["data.pseudo_labels"] = str(labels)
        train_run({**run, "args": args}, {}, run_root / run["name"], in_process=True)
    rows = [
        {"method": r["method"], "fold": r["fold"], "seed": r["seed"], **run_row(run_root / r["name"])}
        for r in plan["runs"]
    ]  # fmt: skip
    parameters = {r["name"]: row["parameters"] for r, row in zip(plan["runs"], rows, strict=True)}
    evaluated = {}
    for fold in plan["folds"]:  # fold by fold: rows that differ in post-processing alone
        for seed in plan["seeds"]:  # share one prediction of the fold's tiles
            where, predicted = f"fold{fold}-seed{seed}", {}
            for i, e in enumerate(plan["evaluations"], 1):
                print(
                    f"[evaluation {i}/{len(plan['evaluations'])}] {e['name']} {where}", flush=True
                )
                ckpts = [run_root / m / where / "checkpoints" / "best.ckpt" for m in e["models"]]
                cache = run_root / "evaluations" / e["name"] / f"{where}.json"
                size = sum(parameters[f"{m}/{where}"] for m in e["models"])
                evaluated[e["name"], fold, seed] = evaluation(
                    ckpts, cache, e, parameters=size, predicted=predicted, device=plan["device"]
                )
    rows += [
        {"method": e["name"], "fold": fold, "seed": seed, **evaluated[e["name"], fold, seed]}
        for e in plan["evaluations"] for fold in plan["folds"] for seed in plan["seeds"]
    ]  # fmt: skip
    runs = pd.DataFrame(rows)
    write_tables(runs, plan, out, env)
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


def make_pseudo_labels(teacher: Path, out: Path, root: str | Path, *, tta: bool = True,
                       device: str = "auto") -> None:  # fmt: skip
    """The teacher's pseudo-labels of the unlabelled tiles of ``root`` (in context, with TTA
    unless ``tta`` is false), unless ``out`` has them from this teacher checkpoint already."""
    done = out / "pseudo.json"
    if done.is_file() and json.loads(done.read_text()).get("checkpoints") == file_stamps([teacher]):
        return  # labelled by this teacher checkpoint already (not retrained since)
    from roadseg.index import unlabelled_tiles
    from roadseg.predict import Predictor
    from roadseg.pseudo import write_pseudo_labels

    tiles = unlabelled_tiles(root)
    maps, margin, _ = context_for([root], tiles, CONTEXT_MARGIN)
    predictor = Predictor.from_checkpoints(
        [teacher], tta=tta, progress=False, backend=EVALUATION_BACKEND, device=device
    )
    start = time.perf_counter()
    about = write_pseudo_labels(
        predictor, tiles, out, teacher=[teacher], context=maps, margin=margin
    )
    print(
        f"pseudo-labels of {about['tiles']} tiles by {teacher}: {time.perf_counter() - start:.0f} s",
        flush=True,
    )


def evaluation(
    ckpts: list[Path], cache: Path, spec: dict, *, parameters: int, predicted: dict | None = None,
    device: str = "auto",
) -> dict:  # fmt: skip
    """The scores of an evaluation row on one fold: the mean of ``ckpts`` (the fold's runs
    of the methods named, ``parameters`` in all), with TTA, context and post-processing as
    ``spec`` says, on the validation tiles of the first one's split: patch accuracy, road
    patch F1 (the competition's patch rule on the raw grey masks), pixel IoU, precision
    and recall. Kept in ``cache`` (JSON) with the checkpoints' sizes and times, so a
    resumed reproduction does not predict again unless a model was retrained.
    ``predicted``: the :class:`~roadseg.evaluation.ValidationScores` of earlier
    evaluations with the same checkpoints, TTA and context (filled here)."""
    stamps = file_stamps(ckpts)
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.pop("checkpoints", None) == stamps:  # a model retrained since: predict again
            return kept
    from roadseg.checkpoints import read_checkpoint
    from roadseg.evaluation import Validation
    from roadseg.postprocess import Decision
    from roadseg.predict import Predictor

    start = time.perf_counter()
    key = (tuple(map(str, ckpts)), bool(spec["tta"]), bool(spec["context"]))
    predicted = {} if predicted is None else predicted
    if key not in predicted:
        contents = [read_checkpoint(p) for p in ckpts]
        validation = Validation(contents[0], CONTEXT_MARGIN if spec["context"] else 0)
        predictor = Predictor.from_checkpoints(
            ckpts, contents=contents, tta=bool(spec["tta"]), progress=False,
            backend=EVALUATION_BACKEND, device=device,
        )  # fmt: skip
        predicted[key] = validation.scores(predictor)
    decision = Decision(**(spec.get("postprocess") or {}))
    scores = predicted[key].with_clean(decision.clean)
    everything = scores.all_scores(decision.pixel, decision.patch)
    result = {
        **{name: everything[name] for name in METRICS.values()}, "parameters": parameters,
        "train_minutes": (time.perf_counter() - start) / 60, "best_epoch": float("nan"),
    }  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps({**result, "checkpoints": stamps}))
    return result


def summarise(runs: pd.DataFrame, methods: list[str], reference: str | None = None) -> pd.DataFrame:
    """Per method: number of runs, mean and standard deviation of each metric, parameters;
    with a ``reference`` method, also the mean and standard deviation over (fold, seed) of
    the difference of road patch F1 from the reference's run on the same fold and seed
    (paired: the folds' own difficulty, which makes most of the spread, cancels)."""
    rows = []
    if reference is not None:
        ref = runs[runs["method"] == reference].set_index(["fold", "seed"])["patch_f1"]
    for method in methods:
        group = runs[runs["method"] == method]
        row = {"method": method, "runs": len(group)}
        for col in METRICS.values():
            row[f"{col}_mean"] = group[col].mean()
            row[f"{col}_std"] = group[col].std(ddof=1) if len(group) > 1 else 0.0
        row["parameters"] = int(group["parameters"].iloc[0])
        row["best_epoch_mean"] = group["best_epoch"].mean()
        if reference is not None:
            diff = group.set_index(["fold", "seed"])["patch_f1"] - ref
            row["patch_f1_diff_mean"] = diff.mean()
            row["patch_f1_diff_std"] = diff.std(ddof=1) if len(diff) > 1 else 0.0
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


def describe_environment(env: dict) -> str:
    """One sentence of what made a table (the whole of it in ``environment.json``)."""
    packages = env.get("packages") or {}
    libs = ", ".join(f"{k} {packages[k]}" for k in ("torch", "segmentation-models-pytorch",
                     "timm", "albumentations") if packages.get(k))  # fmt: skip
    commit = (env.get("git") or {}).get("commit")
    cpu = (env.get("cpu") or {}).get("model") or "an unknown CPU"
    code = commit[:10] if commit else "not a git checkout"
    if commit and (env.get("git") or {}).get("dirty"):
        code += ", with uncommitted changes to the code"
    return (
        f"Made by roadseg {packages.get('roadseg')} ({code}) with {libs}, Python "
        f"{env.get('python')}, on {env.get('cuda') or cpu} "
        f"({env.get('torch_threads')} threads); evaluation rows predicted by "
        f"{env.get('evaluation_backend')}. The same environment gives the same table to the "
        "last digit; another may move the last digits (environment.json lists it all)."
    )


def write_tables(
    runs: pd.DataFrame, plan: dict, out: Path, env: dict | None = None
) -> pd.DataFrame:
    """``table.csv``/``table.md`` (metrics), ``runs.csv``, ``timing.csv``/``timing.md``
    and, with ``env`` (:func:`roadseg.provenance.environment`), ``environment.json``."""
    reference = plan.get("reference")
    table = summarise(
        runs, [*plan["methods"], *(e["name"] for e in plan["evaluations"])], reference
    )
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
    labels = plan.get("labels") or {}
    shown = pd.DataFrame({
        "method": [labels.get(m, m) for m in table["method"]], "runs": table["runs"]
    })  # fmt: skip
    for col, title in names.items():
        shown[title] = [
            f"{m:.3f} ± {s:.3f}"
            for m, s in zip(table[f"{col}_mean"], table[f"{col}_std"], strict=True)
        ]
    if reference is not None:
        shown[f"road F1 − {labels.get(reference, reference)}, paired by fold"] = [
            f"{m:+.3f} ± {s:.3f}"
            for m, s in zip(table["patch_f1_diff_mean"], table["patch_f1_diff_std"], strict=True)
        ]
    shown["parameters"] = table["parameters"].map("{:,}".format)
    with atomic_path(out / "table.md") as tmp:
        note = f"**{plan['note']}**\n\n" if plan.get("note") else ""
        made = f"\n\n{describe_environment(env)}" if env else ""
        tmp.write_text(note + describe_split(plan) + made + "\n\n" + markdown_table(shown))
    if env:
        with atomic_path(out / "environment.json") as tmp:
            tmp.write_text(json.dumps(env, indent=2) + "\n")
    timing = (
        runs.groupby("method", sort=False)["train_minutes"]
        .agg(["mean", "std", "sum"])
        .reset_index()
    )
    with atomic_path(out / "timing.csv") as tmp:
        timing.to_csv(tmp, index=False, float_format="%.3f")
    timing_md = pd.DataFrame({
        "method": timing["method"],
        "minutes per run (training; predicting for evaluation rows)": [f"{m:.2f} ± {0 if pd.isna(s) else s:.2f}" for m, s in zip(timing["mean"], timing["std"], strict=True)],
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
