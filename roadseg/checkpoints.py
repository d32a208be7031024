"""Training checkpoints: where they are, what they hold, and whether their weights fit.

The one place a checkpoint file is opened (:func:`read_checkpoint`). A checkpoint is a
dict with ``state_dict`` (the task's tensors), ``hyper_parameters`` (the task's
arguments), ``datamodule_hyper_parameters`` (the data it trained on) and ``roadseg_split``
(its validation and training tiles by content, :func:`split_record`). The network is
rebuilt from it by :meth:`roadseg.task.RoadSegTask.from_checkpoint`; its validation
tiles are the recorded ones (:func:`roadseg.evaluation.validation_tiles`), or for a
checkpoint that records none, its split made again by
:meth:`roadseg.datamodule.RoadDataModule.from_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from roadseg.errors import RoadsegError

if TYPE_CHECKING:  # torch is imported when a checkpoint is read, not by the command line
    import torch

SPLIT_KEY = "roadseg_split"  # the split's tiles by content (split_record)
SPLIT_FORMAT = 1


EXPORTED_SUFFIX = ".onnx"  # roadseg export's files, which predicting commands take as models


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported file (``.onnx``) rather than a checkpoint."""
    return Path(path).suffix.lower() == EXPORTED_SUFFIX


def read_checkpoint(path: str | Path, *, mapped: bool = False) -> dict:
    """A checkpoint's contents (on the CPU), with a clear error for a missing or foreign file.

    ``mapped``: map the file instead of reading it (for shapes and counters only).
    """
    import torch

    path = Path(path)
    if is_exported(path):  # figures, export, validate, ...: not the file
        raise RoadsegError(
            "an exported file: this command needs the checkpoint it was exported from "
            "(predict, submit and evaluate take the exported file)",
            path,
        )
    if not path.is_file():
        raise RoadsegError("checkpoint not found (train first: make train, or pass CKPT=...)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mapped)
    except Exception as err:  # torch raises many types for a bad file
        raise RoadsegError(
            f"not a readable checkpoint (truncated, or not saved by torch: {type(err).__name__})",
            path,
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise RoadsegError(
            "not a roadseg training checkpoint (no state_dict/hyper_parameters)", path
        )
    return ckpt


def trained_root(ckpt: dict) -> str | None:
    """The dataset root a checkpoint (its contents, :func:`read_checkpoint`) was trained on:
    the root as the config gave it when it is found from here, else the resolved path its
    split records (a relative root was relative to where training ran), else as given."""
    given = (ckpt.get("datamodule_hyper_parameters") or {}).get("root")
    recorded = (ckpt.get(SPLIT_KEY) or {}).get("resolved_root")
    if given and Path(given).is_dir():
        return given
    return recorded if recorded and Path(recorded).is_dir() else given


def split_record(index, root: str | Path) -> dict:
    """What a checkpoint records of its split (under :data:`SPLIT_KEY`): the file name and
    SHA-256 of each validation tile, of each labelled training tile (extra roots too) and
    of each tile trained on pseudo-labels, so that the tiles it never trained on are known
    by content later, whatever files are added to its folder. ``index``: the datamodule's
    tile index with its ``stage`` (and ``pseudo``) column."""
    from roadseg.index import content_hash

    def tiles(rows) -> list[dict[str, str]]:
        return [{"file": Path(p).name, "sha256": content_hash(p)} for p in rows["image"]]

    train = (index["stage"] == "train").to_numpy()
    pseudo = index["pseudo"].fillna(False).to_numpy(bool) if "pseudo" in index else train & False
    return {
        "format": SPLIT_FORMAT, "root": str(root), "resolved_root": str(Path(root).resolve()), "val": tiles(index[index["stage"] == "val"]),
        "train": tiles(index[train & ~pseudo]), "pseudo": tiles(index[train & pseudo]),
    }  # fmt: skip


def recorded_split(ckpt: dict) -> dict | None:
    """The split a checkpoint recorded (:func:`split_record`); ``None`` for a checkpoint
    saved before roadseg recorded one."""
    record = ckpt.get(SPLIT_KEY)
    return record if isinstance(record, dict) and "val" in record else None


def datamodule_arguments(ckpt: dict) -> dict:
    """The arguments the checkpoint's datamodule was made with."""
    saved = ckpt.get("datamodule_hyper_parameters") or {}
    return {k: v for k, v in saved.items() if not k.startswith("_")}


def task_arguments(ckpt: dict) -> dict:
    """The arguments of the checkpoint's task, with no pretrained weights to fetch (the
    checkpoint holds the trained ones)."""
    hparams = dict(ckpt["hyper_parameters"])
    model_args = dict(hparams.get("model_args") or {})
    if "encoder_weights" in model_args:
        model_args["encoder_weights"] = None
    hparams["model_args"] = model_args
    # torch.compile is how it trained, not part of the model: a prediction (on a CPU, often
    # without a compiler toolchain) runs the network as it is
    hparams["compile"] = False
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def network_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The network's tensors of a checkpoint, named as in the network (``model.`` removed)."""
    return {
        name[len("model.") :]: value
        for name, value in ckpt["state_dict"].items()
        if name.startswith("model.")
    }


def weights_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> str | None:
    """What keeps ``given`` tensors from loading into a module whose state is ``expected``,
    in one line (``None`` when they fit): how many are missing, extra or of another shape,
    and the first of each."""
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    shapes = [n for n in expected if n in given and given[n].shape != expected[n].shape]
    problems = [
        f"{len(names)} {what} (first: {names[0]})"
        for names, what in ((missing, "tensors missing"), (extra, "tensors it does not have"),
                            (shapes, "tensors of another shape"))
        if names
    ]  # fmt: skip
    return "; ".join(problems) or None


def parameter_count(ckpt: dict) -> int:
    """Trainable and fixed weights of a checkpoint's task, without BatchNorm's running
    statistics; a tensor stored under two names counts once."""
    tensors = {
        t.data_ptr(): t
        for k, t in ckpt["state_dict"].items()
        if "running_" not in k and "num_batches" not in k
    }
    return sum(t.numel() for t in tensors.values())


def checkpoint_of(name: str) -> str:
    """A checkpoint path, or a training config's best checkpoint (``runs/<stem>/...``)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        return name
    from roadseg.paths import load_yaml

    config = load_yaml(path, "training config") or {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    root = trainer.get("default_root_dir") if isinstance(trainer, dict) else None
    return str(Path(root or Path("runs") / path.stem) / "checkpoints" / "best.ckpt")


def check_checkpoint_path(path: str | Path) -> None:
    """A missing checkpoint, named with the command that would make it, before torch loads."""
    from roadseg.paths import check_input

    p = Path(path)
    if not p.exists() and is_exported(p):
        raise RoadsegError(
            "exported model not found (roadseg export --ckpt CHECKPOINT --out FILE writes one)", p
        )
    if not p.exists():
        raise RoadsegError(f"checkpoint not found ({_missing_checkpoint_hint(p)})", p)
    check_input(p, what="exported model" if is_exported(p) else "checkpoint")


def _missing_checkpoint_hint(path: Path) -> str:
    """A near name when the checkpoint's folder (or its run's) is there, else how to train."""
    import difflib

    folder = path.parent
    if folder.is_dir():  # a typo in the file's name?
        names = sorted(p.name for p in folder.glob("*.ckpt"))
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        if close:
            return f"did you mean {folder / close[0]}?"
        if names:
            return f"{folder}/ has: {', '.join(names)}"
    elif folder.name == "checkpoints" and folder.parent.parent.is_dir():  # in the run's name?
        runs = folder.parent.parent
        names = sorted(p.name for p in runs.iterdir() if (p / "checkpoints").is_dir())
        close = difflib.get_close_matches(folder.parent.name, names, n=1, cutoff=0.6)
        if close:
            return f"did you mean {runs / close[0] / 'checkpoints' / path.name}?"
    if folder.name == "checkpoints":
        config = Path("configs") / f"{folder.parent.name}.yaml"
        if config.is_file():
            return f"train first: make train CONFIG={config}"
    return "train first (make train), or pass the path of a trained checkpoint"


def run_name(path: str | Path) -> str:
    """The run a checkpoint belongs to (``runs/<run>/checkpoints/x.ckpt``), else its stem."""
    path = Path(path)
    return path.resolve().parent.parent.name if path.parent.name == "checkpoints" else path.stem


def global_step(path: str | Path) -> int:
    """The optimisation steps a checkpoint had taken (0 when it does not say)."""
    return int(read_checkpoint(path, mapped=True).get("global_step", 0))
