"""How to predict: the options of ``submit``, ``tune``, ``predict`` and ``pseudo-label`` as one
typed, frozen object.

Each option comes from the command line, else from an options file (``--config``, YAML;
examples in ``configs/predict/``), else from :class:`PredictOptions`' defaults. The decision
(thresholds, clean-up) comes from the options where given, else from what ``roadseg tune``
stored beside the checkpoint, else from the competition's defaults (0.5 / 0.25).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from roadseg.checkpoints import check_checkpoint_path, checkpoint_of, is_exported
from roadseg.errors import RoadsegError
from roadseg.patches import CONTEXT_MARGIN

if TYPE_CHECKING:  # scipy's start-up is paid by the commands that decide, not by every one
    from roadseg.postprocess import Decision
    from roadseg.thresholds import Thresholds


@dataclass(frozen=True)
class PredictOptions:
    """What a predicting command predicts with; ``None`` thresholds: stored or default."""

    ckpt: tuple[str, ...]
    tta: bool = False
    merge: str = "mean"
    window: int = 1536  # scenes: 1,408 px apart, 17% run twice (1,024: 31%)
    overlap: int = 128
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"  # torch, onnx (ONNX Runtime) or auto (roadseg.backends)
    pixel_threshold: float | None = None
    patch_threshold: float | None = None
    close_gaps: int | None = None
    min_area: int | None = None
    context: int | None = None
    metric: str | None = None  # whose tuned thresholds: f1 or accuracy (None: tuned last)
    bands: str | None = None  # scenes: bands read as R,G,B ("3,2,1"); None: see reading.py
    input_range: str | None = None  # scenes: auto, none or "LOW HIGH" raw values
    resolution: str | float | None = None  # scenes: auto, native or the scene's metres/px
    quiet: bool = False  # no progress bars (command line only)
    config: str | None = None  # the options file they came from

    @classmethod
    def resolve(
        cls, given: Mapping[str, object], config: str | None = None, *, quiet: bool = False
    ) -> PredictOptions:
        """The options given (``None``: not given; ``ckpt`` a list) over those of the
        options file ``config`` over the defaults; every checkpoint is checked to exist."""
        values = _options_file(config) if config else {}
        chosen = {  # an option without a value (``overlap:``) is not set
            name: next((v for v in (given.get(name), values.get(name)) if v is not None), default)
            for name, default in _defaults().items()
        }
        if chosen["metric"] not in (None, "f1", "accuracy"):
            raise RoadsegError(f"option metric: {chosen['metric']!r} is not f1 or accuracy", config)
        ckpts = [checkpoint_of(str(c)) for c in given.get("ckpt") or _file_ckpts(values, config)]
        for ckpt in ckpts:
            check_checkpoint_path(ckpt)
        if any(is_exported(c) for c in ckpts):
            _exported_options(ckpts, chosen, given.get("merge") or values.get("merge"))
        return cls(ckpt=tuple(ckpts), **chosen, quiet=quiet, config=config)

    @property
    def exported(self):
        """The exported file these options predict with (:mod:`roadseg.exported`), else
        ``None`` (checkpoints)."""
        from roadseg.exported import read_exported

        return read_exported(self.ckpt[0]) if is_exported(self.ckpt[0]) else None

    @property
    def networks(self) -> int:
        """How many networks predict: the checkpoints, or the exported file's members."""
        exported = self.exported
        return exported.members if exported else len(self.ckpt)

    @property
    def margin(self) -> int:
        """Pixels of neighbouring tiles each tile is predicted with (before the maps say)."""
        return CONTEXT_MARGIN if self.context is None else self.context

    @property
    def inputs(self) -> list[str]:
        """The files a predicting command reads besides its images: checkpoints, options."""
        return [*self.ckpt, *([self.config] if self.config else [])]

    def read_options(self):
        """How scenes are read (:class:`~roadseg.reading.ReadOptions`), checked."""
        from roadseg.reading import ReadOptions

        return ReadOptions.parse(self.bands, self.input_range, self.resolution)

    def imagery(self):
        """The imagery the (first) checkpoint was trained on (:mod:`roadseg.imagery`)."""
        from roadseg.checkpoints import read_checkpoint
        from roadseg.imagery import imagery_of

        if self.exported:
            return self.exported.imagery()
        return imagery_of(read_checkpoint(self.ckpt[0], mapped=True))

    def engine(self) -> tuple[str, str, str]:
        """(device, precision, backend) that actually run for these options (``auto``
        resolved as the Predictor resolves it): what changes pixels, not what was asked."""
        from roadseg.backends import auto_precision, choose_backend, pick_device

        if self.exported:  # ONNX Runtime, fp32, on the CPU (the Predictor refuses others)
            return pick_device(self.device, exported=True).type, "fp32", "onnx"
        device = pick_device(self.device)
        precision = self.precision
        if precision == "auto":  # the checkpoints' models are read only where it can matter
            names = []
            if device.type == "cuda":
                names = [c["hyper_parameters"].get("model") for c in self.read_checkpoints()]
            precision = auto_precision(device, names=names)
        backend = "torch" if self.backend == "auto" and precision == "bf16" else self.backend
        return device.type, precision, choose_backend(backend, device)[0]

    def read_checkpoints(self) -> list[dict]:
        """The contents of every checkpoint (weights not yet in a model)."""
        from roadseg.checkpoints import read_checkpoint

        if self.exported:  # what its metadata says of the data and split
            return [self.exported.contents()]
        return [read_checkpoint(p) for p in self.ckpt]

    def decision(self, ckpt: str) -> tuple[Decision, str]:
        """(Decision, where from) of one checkpoint: the options given, else what ``roadseg
        tune`` stored beside the checkpoint for maps made as these options make them (with
        or without TTA), else the defaults."""
        from roadseg.exported import read_exported
        from roadseg.thresholds import stored_decision

        if is_exported(ckpt):
            return self._given(*read_exported(ckpt).decision(bool(self.tta)))
        base, origin, _ = stored_decision(ckpt, tta=bool(self.tta), metric=self.metric)
        return self._given(base, origin)

    def member_decisions(self) -> list[tuple[Decision, str]]:
        """(Decision, where from) of each network of a vote: each checkpoint's, or each
        member's recorded in the exported file; the options given over them."""
        exported = self.exported
        if exported is None:
            return [self.decision(p) for p in self.ckpt]
        origin = f"{exported.path}'s metadata"
        return [self._given(d, origin) for d in exported.member_decisions(bool(self.tta))]

    def _given(self, base: Decision, origin: str) -> tuple[Decision, str]:
        """``base`` with the thresholds and clean-up given in the options."""
        given = {
            "pixel": self.pixel_threshold, "patch": self.patch_threshold,
            "close_gaps": self.close_gaps, "min_area": self.min_area,
        }  # fmt: skip
        if any(v is not None for v in given.values()):
            origin = f"{origin}, overridden by the options given"
        return base.replace(**given), origin

    def stored(self) -> tuple[Decision, str, Thresholds | None]:
        """What ``roadseg tune`` stored for the outputs of these checkpoints (not a vote):
        one checkpoint's own thresholds; for a mean ensemble those tuned for it (keyed by
        its members' hashes), else the first member's with a note. Returns (decision, where
        from, the stored :class:`~roadseg.thresholds.Thresholds` or ``None``)."""
        from roadseg.thresholds import stored_decision, stored_ensemble_decision

        tta = bool(self.tta)
        if self.exported:
            return (*self.exported.decision(tta), self.exported.thresholds(tta))
        if len(self.ckpt) > 1:
            found = stored_ensemble_decision(self.ckpt, tta=tta, metric=self.metric)
            if found is not None:
                return found
            base, origin, tuned = stored_decision(self.ckpt[0], tta=tta, metric=self.metric)
            origin = (f"the first member's: {origin}; none tuned for this ensemble: run "
                      "roadseg tune with the same --ckpt")  # fmt: skip
            return base, origin, tuned
        return stored_decision(self.ckpt[0], tta=tta, metric=self.metric)

    def mean_decision(self) -> tuple[Decision, str]:
        """(Decision, where from) of the outputs of one model or of a mean ensemble: the
        options given over :meth:`stored`."""
        return self._given(*self.stored()[:2])

    def output_decision(self) -> Decision:
        """The decision the outputs of these options use (a vote's: strict majority)."""
        if self.merge == "vote":  # Predictor.output_decision
            from roadseg.postprocess import Decision

            return Decision(pixel=0.5, patch=0.5)
        return self.mean_decision()[0]

    def check_model(self) -> None:
        """An exported file ONNX Runtime cannot read refused here, in one line, before any
        output is made (its metadata alone was read so far)."""
        if self.exported:
            from roadseg.backends import onnx_threads
            from roadseg.exported import session

            session(self.exported.path, onnx_threads())

    def predictor(self, contents: list[dict] | None = None, *, lazy: bool = False):
        """(Predictor over the checkpoints, an ensemble when several; the decision that
        turns its maps into masks and labels), the decision printed with where it is from.

        ``contents``: the checkpoints' contents when already read (:meth:`read_checkpoints`).
        ``lazy``: an exported file's session may still be in the making (it is made while
        the caller reads its scene; :meth:`Predictor.ready` waits for it).
        """
        from roadseg.predict import Predictor

        decisions = self.member_decisions()
        settings = dict(
            window=self.window, overlap=self.overlap, batch_size=self.batch_size, tta=self.tta,
            device=self.device, precision=self.precision, progress=not self.quiet,
            merge=self.merge, decisions=[d for d, _ in decisions], backend=self.backend,
        )  # fmt: skip
        if self.exported:
            predictor = Predictor.from_exported(self.ckpt[0], **settings)
        else:
            contents = self.read_checkpoints() if contents is None else contents
            predictor = Predictor.from_checkpoints(list(self.ckpt), contents=contents, **settings)
        if not lazy:
            predictor.ready()
        print(f"backend: {predictor.backend_name} ({predictor.backend_why})")
        decision, origin = predictor.output_decision, "majority vote of the members' patch labels"
        if decision is None:
            decision, origin = self.mean_decision()
        print(f"decision: {decision.describe()} ({origin})")
        if self.merge == "vote":
            names = self.ckpt if not self.exported else [
                f"{self.ckpt[0]} #{k + 1}" for k in range(self.networks)
            ]  # fmt: skip
            for name, (d, where) in zip(names, decisions, strict=True):
                print(f"  member {name}: {d.describe()} ({where})")
        return predictor, decision


def _defaults() -> dict[str, object]:
    """The options an options file may set, with their defaults, in their order."""
    return {
        f.name: f.default
        for f in dataclasses.fields(PredictOptions)
        if f.name not in ("ckpt", "quiet", "config")
    }


def _kinds(name: str) -> tuple[type, ...]:
    """The types an option's value may have in an options file (an int is a float too)."""
    hint = typing.get_type_hints(PredictOptions)[name]
    kinds = tuple(k for k in (typing.get_args(hint) or (hint,)) if k is not types.NoneType)
    return (*kinds, int) if float in kinds else kinds


def _options_file(config: str) -> dict:
    """The options of an options file, each of a known name and of its type."""
    from roadseg.paths import load_yaml

    path = Path(config)
    values = load_yaml(path, "options file") or {}
    if not isinstance(values, dict):
        raise RoadsegError("expected a mapping of option: value", path)
    known = _defaults()
    unknown = sorted(set(values) - set(known) - {"ckpt"})
    if unknown:
        raise RoadsegError(f"unknown option {unknown[0]!r}; known: ckpt, {', '.join(known)}", path)
    for key, value in values.items():
        if key == "ckpt" or value is None:
            continue
        kinds = _kinds(key)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise RoadsegError(f"option {key}: {value!r} is not {names}", config)
    return values


def _exported_options(ckpts: list[str], chosen: dict, merge: str | None) -> None:
    """Options of an exported file: one file, no ``metric`` (it holds the decision it was
    exported with), and the merge it records unless one is given (in ``chosen``)."""
    from roadseg.exported import read_exported

    if len(ckpts) > 1:
        raise RoadsegError(
            "an exported file is already its ensemble: export the members together "
            "(roadseg export --ckpt A --ckpt B) and predict with that one file",
            next(c for c in ckpts if is_exported(c)),
        )
    exported = read_exported(ckpts[0])
    if chosen["metric"] is not None:
        raise RoadsegError(
            "--metric chooses among a checkpoint's tuned thresholds; an exported file holds "
            "the decision it was exported with: leave out --metric, or export with it",
            ckpts[0],
        )
    if merge is None:
        chosen["merge"] = exported.merge


def _file_ckpts(values: dict, config: str | None) -> list[str]:
    """The checkpoints an options file names; one at least must be named somewhere."""
    ckpt = values.get("ckpt")
    ckpts = [ckpt] if isinstance(ckpt, str) else ckpt
    if ckpts is not None and (
        not isinstance(ckpts, list) or not all(isinstance(c, str) and c.strip() for c in ckpts)
    ):
        raise RoadsegError("ckpt: must be a checkpoint path or a list of them", config)
    if not ckpts:
        raise RoadsegError(
            "no checkpoint: pass --ckpt (repeat for an ensemble) or put ckpt: in --config"
        )
    return ckpts
