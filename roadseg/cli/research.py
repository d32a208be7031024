"""Research commands: experiment, reproduce, figures, models."""

from __future__ import annotations

import argparse
from pathlib import Path

from roadseg.checkpoints import check_checkpoint_path
from roadseg.cli.common import add_context_arg, add_decision_args, decision_options
from roadseg.errors import RoadsegError
from roadseg.patches import CONTEXT_MARGIN


def _cmd_experiment(args: argparse.Namespace) -> None:
    from roadseg.experiments import run_plan
    from roadseg.paths import check_io

    check_io(inputs=[args.plan], output_folders=[args.out])
    table = run_plan(args.plan, args.out, only=args.only.split(",") if args.only else None)
    print(f"wrote {Path(args.out) / 'table.md'} ({len(table)} runs)")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io
    from roadseg.reproduce import reproduce

    args.out = args.out or str(Path("results") / args.profile)
    check_io(inputs=[args.plan], output_folders=[args.out])
    if args.profile == "paper" and not args.allow_cpu:
        import torch

        from roadseg.reproduce import load_reproduction

        runs = len(load_reproduction(args.plan, args.profile)["runs"])  # also checks the plan
        if not torch.cuda.is_available():
            raise RoadsegError(
                f"the paper profile trains {runs} runs on GPU budgets (days on a CPU) and no GPU "
                "is here: run make reproduce PROFILE=smoke (the machinery, minutes), or add "
                "--allow-cpu to start it anyway",
                args.plan,
            )
    reproduce(args.plan, args.out, profile=args.profile, figures=not args.no_figures)
    print(f"wrote {Path(args.out) / 'table.md'}:")
    print((Path(args.out) / "table.md").read_text())


def _cmd_figures(args: argparse.Namespace) -> None:
    from roadseg.paths import check_io

    check_checkpoint_path(args.ckpt)
    check_io(input_folders=args.runs, output_folders=[args.out])
    decision, origin = decision_options(args, args.ckpt).decision(args.ckpt)
    print(f"decision: {decision.describe()} ({origin})")
    from roadseg.figures import make_figures

    runs = args.runs or _own_run(args.ckpt)
    make_figures(
        args.out,
        ckpt=args.ckpt,
        curves={Path(r).name: Path(r) for r in runs},
        decision=decision,
        context=CONTEXT_MARGIN if args.context is None else args.context,
    )


def _own_run(ckpt: str) -> list[str]:
    """The run folder of ``runs/<run>/checkpoints/x.ckpt`` when it logged metrics.csv."""
    run = Path(ckpt).parent.parent
    if Path(ckpt).parent.name != "checkpoints" or not (run / "metrics.csv").is_file():
        return []
    print(f"learning curves of {run} (the checkpoint's run; --runs draws others beside it)")
    return [str(run)]


def _cmd_models(args: argparse.Namespace) -> None:
    from roadseg.models import MODELS, create_model

    print(f"{'model':<16} {'parameters':>12}  (encoder resnet34 where it has one)")
    for name in sorted(MODELS):
        model = create_model(name)
        print(f"{name:<16} {sum(p.numel() for p in model.parameters()):>12,}")


def add_commands(sub) -> None:
    """The research commands' parsers."""
    _add_experiment(sub)
    _add_reproduce(sub)
    _add_figures(sub)
    _add_models(sub)


def _add_experiment(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="train every run of an experiment plan and collect the results table",
        description="Each run of the plan (a YAML file under configs/plans) trains in a child "
        "process into OUT/runs/<name>; finished runs are skipped, interrupted ones resume. "
        "The best validation epoch of each run goes into OUT/table.csv and OUT/table.md.",
    )
    p.add_argument("plan", help="plan file, e.g. configs/plans/methods-cpu.yaml")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--only", help="comma-separated run names to train (default: all)")
    p.set_defaults(func=_cmd_experiment)


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="the paper: train methods x folds x seeds of a plan's profile, write the table and figures",
        description="Train every (method, fold, seed) of the chosen profile of a reproduction "
        "plan (finished runs are skipped, interrupted ones resume), then write table.csv and "
        "table.md (mean ± std over folds and seeds), runs.csv, timing.md and figures/ under "
        "--out. The same seeds on the same machine give the same table, except where a profile "
        "budgets wall time (cpu: trainer.max_time), which stops a run at the step the clock "
        "reaches.",
    )
    p.add_argument(
        "plan",
        nargs="?",
        default="configs/plans/paper.yaml",
        help="reproduction plan (default %(default)s)",
    )
    p.add_argument(
        "--profile",
        default="paper",
        help="scale of the plan: smoke (the machinery, minutes), cpu (results on 2 CPU cores, "
        "under 3 h) or paper (GPU) (default %(default)s)",
    )
    p.add_argument("--out", default=None, help="output folder (default: results/PROFILE)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run the paper profile without a GPU (it is refused otherwise: days of CPU work)",
    )
    p.set_defaults(func=_cmd_reproduce)


def _add_figures(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="draw the figures of a trained checkpoint (overlays, PR curve, filters, saliency, ...)",
        description="Predict the checkpoint's validation tiles and draw overlays, the patch "
        "precision-recall curve, first-layer filters, a saliency map, an occlusion map, a t-SNE "
        "of patch embeddings and a class-model visualisation as PNG files.",
    )
    p.add_argument("--ckpt", required=True, help="trained checkpoint")
    p.add_argument(
        "--out", default="results/figures", help="folder for the PNGs (default %(default)s)"
    )
    p.add_argument(
        "--runs",
        nargs="*",
        default=[],
        help="run folders whose learning curves to draw (default: the checkpoint's own run)",
    )
    add_decision_args(p)
    add_context_arg(
        p,
        f"pixels of neighbouring tiles each tile is predicted with, as submit does "
        f"(default {CONTEXT_MARGIN} when the tiles have neighbours; 0 = alone)",
    )
    p.set_defaults(func=_cmd_figures)


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with their parameter counts")
    p.set_defaults(func=_cmd_models)
