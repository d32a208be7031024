"""An exported file (``roadseg export``, ``model.onnx``) used as the model of a command.

Every predicting command takes ``--ckpt model.onnx`` as it takes a checkpoint: the network
runs in ONNX Runtime (no torch, Lightning or smp: ``pip install 'roadseg[predict]'``), and
what a checkpoint and its tuned thresholds would say comes from the file's metadata
(:mod:`roadseg.export`): the decision with and without TTA (``roadseg_decision``,
``roadseg_decision_tta``, each member's for a vote), the training imagery and resolution
(``roadseg_imagery``), the smallest side the graph takes (``roadseg_min_side``), and, for
files exported since it was recorded, the data each member trained on and its split
(``roadseg_training``), so that ``submit`` finds its test tiles and ``evaluate`` its
validation tiles as they would from the checkpoint. The run identity holds the file's
SHA-256 (:func:`roadseg.identity.run_identity`), as it holds a checkpoint's.

An exported file is already its ensemble (``members``): one file per command. Options a
checkpoint takes and the file cannot honour (``--metric``: it holds the decision it was
exported with; ``--backend torch``, a GPU, bf16) are refused in one line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError, is_int, is_number

# what a file must hold to be predicted with as roadseg predicts (export's FORMAT 1)
REQUIRED = (
    "roadseg_format", "roadseg_decision", "roadseg_decision_tta", "roadseg_imagery",
    "roadseg_min_side", "roadseg_merge",
)  # fmt: skip
FORMAT = 1  # roadseg.export.FORMAT: the newest this reads
TRAINING_KEY = "roadseg_training"  # each member's data root and split (checkpoints' own keys)


def require_onnxruntime(path: str | Path | None = None) -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise RoadsegError(
            "predicting with an exported file needs onnxruntime: pip install 'roadseg[predict]'",
            path,
        ) from err


@dataclass(frozen=True)
class ExportedModel:
    """An exported file: its path, its roadseg metadata (JSON decoded) and the number of
    members its graph holds."""

    path: str
    metadata: dict
    members: int

    @property
    def merge(self) -> str:
        return self.metadata["roadseg_merge"]

    @property
    def min_side(self) -> int:
        return int(self.metadata["roadseg_min_side"])

    def imagery(self):
        from roadseg.imagery import Imagery

        return Imagery.from_dict(self.metadata["roadseg_imagery"])

    def _decision_entry(self, tta: bool) -> dict:
        return self.metadata["roadseg_decision_tta" if tta else "roadseg_decision"]

    def decision(self, tta: bool):
        """(Decision of the mean, where from) recorded for maps made with or without TTA."""
        from roadseg.postprocess import Decision

        entry = self._decision_entry(tta)
        decision = Decision(*(entry[k] for k in ("pixel", "patch", "close_gaps", "min_area")))
        return decision, f"{Path(self.path).name}'s metadata: {entry.get('origin', 'recorded')}"

    def member_decisions(self, tta: bool) -> list:
        """Each member's Decision (for a vote), as recorded."""
        from roadseg.postprocess import Decision

        entries = self._decision_entry(tta).get("members") or []
        if len(entries) != self.members:
            raise RoadsegError(
                f"records {len(entries)} member decisions for {self.members} members: "
                "export it again",
                self.path,
            )
        keys = ("pixel", "patch", "close_gaps", "min_area")
        return [Decision(*(e[k] for k in keys)) for e in entries]

    def thresholds(self, tta: bool):
        """The :class:`~roadseg.thresholds.Thresholds` the decision was tuned as, when the
        metadata says it was tuned (``None``: defaults or options at export)."""
        from roadseg.thresholds import Thresholds

        entry = self._decision_entry(tta)
        origin = entry.get("origin", "")
        found = re.match(r"tuned for (f1|accuracy)", origin)  # files that record no "tuned"
        tuned = entry.get("tuned", bool(found) and "overridden" not in origin)
        if not tuned:
            return None
        metric = entry.get("metric") or (found.group(1) if found else "f1")
        on_tta = entry.get("tuned_on_tta")  # files before it: the origin says when TTA's fell back
        if on_tta is None:
            on_tta = tta and "none tuned with TTA" not in origin
        return Thresholds(
            pixel=entry["pixel"], patch=entry["patch"], close_gaps=entry["close_gaps"],
            min_area=entry["min_area"], tta=bool(on_tta), metric=metric,
        )  # fmt: skip

    def contents(self) -> dict:
        """What a checkpoint's contents would say of the data and the split (for
        :func:`roadseg.checkpoints.trained_root`, :func:`roadseg.imagery.imagery_of` and
        :mod:`roadseg.evaluation`): the first member's root and validation tiles, and the
        tiles any member trained on."""
        from roadseg.checkpoints import SPLIT_KEY

        members = self.metadata.get(TRAINING_KEY) or []
        contents = {"roadseg_imagery": self.metadata["roadseg_imagery"], "exported": self}
        # members whose training tiles are not known: checks say so instead of passing
        contents["unknown_members"] = [k for k, m in enumerate(members) if not m.get("split")]
        if members:
            first = members[0]
            contents["datamodule_hyper_parameters"] = {"root": first.get("root")}
            split = first.get("split")
            if split:
                split = {**split, "note": first.get("note")}  # a split made again, said so
                for m in members[1:]:  # the file is one model: what any member saw
                    other = m.get("split") or {}
                    split["train"] = [*split["train"], *other.get("train", [])]
                    split["pseudo"] = [*split.get("pseudo", []), *other.get("pseudo", [])]
                contents[SPLIT_KEY] = split
        return contents


def read_exported(path: str | Path) -> ExportedModel:
    """The exported file at ``path``, its metadata checked (one line naming what is
    missing); read once per process while the file is unchanged."""
    p = Path(path)
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise RoadsegError("exported model not found (roadseg export writes one)", p) from None
    return _read(str(p), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: str, size: int, mtime: int) -> ExportedModel:
    try:
        props, inputs, names = onnx_header(Path(path).read_bytes())
    except ValueError:  # not what this reader takes: ONNX Runtime reads it, or says why not
        props, inputs, names = _session_header(_session(path, size, mtime, None).result())
    missing = [k for k in REQUIRED if k not in props]
    if len(missing) == len(REQUIRED):
        raise RoadsegError(
            f"an ONNX file with no roadseg metadata (missing {', '.join(missing)}): predict "
            "with a file written by roadseg export, or its checkpoint",
            path,
        )
    if missing:
        raise RoadsegError(
            f"exported by an older roadseg (its metadata has no {', '.join(missing)}): export "
            "it again from its checkpoint",
            path,
        )
    try:
        metadata = {k: json.loads(v) for k, v in props.items() if k.startswith("roadseg_")}
    except json.JSONDecodeError as err:
        raise RoadsegError(f"roadseg metadata that is not JSON ({err})", path) from err
    fmt = metadata["roadseg_format"]
    if not is_int(fmt) or fmt < 1:
        raise RoadsegError(f"roadseg_format {fmt!r} in its metadata is not a format number "
                           "(an edited file?): export it again from its checkpoint", path)  # fmt: skip
    if fmt > FORMAT:
        raise RoadsegError(
            f"exported in format {fmt}, newer than this roadseg reads ({FORMAT}): upgrade roadseg",
            path,
        )
    _check_values(metadata, path)
    if inputs != ["image"] or "probability" not in names or "members" not in names:
        raise RoadsegError(
            f"inputs {inputs} and outputs {sorted(names)}, not roadseg's image -> probability, "
            "members (a Deepness export is for QGIS: predict with the plain export)",
            path,
        )
    members = names["members"][1] if len(names["members"]) > 1 else None
    if not isinstance(members, int) or members < 1:  # a free (named or -1) dimension
        members = len(metadata["roadseg_decision"].get("members") or [None])
    return ExportedModel(path, metadata, members)


def _check_values(metadata: dict, path: str) -> None:
    """The recorded values a prediction uses, of the types and ranges export writes: one
    line naming the key otherwise (a file edited by hand, or damaged)."""

    def bad(key: str, why: str) -> RoadsegError:
        return RoadsegError(f"{key} in its metadata {why} (an edited file?): export it again "
                            "from its checkpoint", path)  # fmt: skip

    for key in ("roadseg_decision", "roadseg_decision_tta"):
        entry = metadata[key]
        members = entry.get("members") if isinstance(entry, dict) else None
        if members is not None and not isinstance(members, list):
            raise bad(key, f"has members {members!r}, not a list of decisions")
        if isinstance(entry, dict) and not isinstance(entry.get("origin", ""), str):
            raise bad(key, f"has origin {entry['origin']!r}, not text")
        for e in [entry, *(members or [])] if isinstance(entry, dict) else [entry]:
            why = _bad_decision(e)
            if why:
                raise bad(key, why)
    why = _bad_imagery(metadata["roadseg_imagery"])
    if why:
        raise bad("roadseg_imagery", why)
    side = metadata["roadseg_min_side"]
    if not is_int(side) or side < 1:
        raise bad("roadseg_min_side", f"is {side!r}, not a positive whole number of pixels")
    if metadata["roadseg_merge"] not in ("mean", "vote"):
        raise bad("roadseg_merge", f"is {metadata['roadseg_merge']!r}, not mean or vote")


def _bad_imagery(value) -> str | None:
    """What is wrong with recorded imagery (2-98% ranges of 3 + 3 + 2 finite numbers, low
    below high; a positive resolution or none), or None."""
    from roadseg.imagery import Imagery

    try:
        imagery = Imagery.from_dict(value)
        lows, highs = [*imagery.low, imagery.pooled[0]], [*imagery.high, imagery.pooled[1]]
        shaped = len(imagery.low) == len(imagery.high) == 3 and len(imagery.pooled) == 2
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        return f"is incomplete ({type(err).__name__}: {err})"
    finite = all(is_number(v) and math.isfinite(v) for v in [*lows, *highs])
    if not (shaped and finite and all(a < b for a, b in zip(lows, highs, strict=True))):
        return "has 2-98% ranges that are not 3 + 3 + 2 finite numbers, low below high"
    res = imagery.resolution
    if res is not None and not (is_number(res) and math.isfinite(res) and res > 0):
        return f"has resolution {res!r}, not a positive number of metres"
    return None


def _bad_decision(entry) -> str | None:
    """What is wrong with a recorded decision (thresholds in [0, 1], clean-up sizes whole
    pixels), or None."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not a decision"
    for field in ("pixel", "patch"):
        value = entry.get(field)
        if not is_number(value) or not 0 <= value <= 1:
            return f"has {field} {value!r}, not a threshold in [0, 1]"
    for field in ("close_gaps", "min_area"):
        value = entry.get(field)
        if not is_int(value) or value < 0:
            return f"has {field} {value!r}, not a whole number of pixels"
    return None


def onnx_header(data: bytes) -> tuple[dict[str, str], list[str], dict[str, list]]:
    """What an ONNX file says of itself without a session (a session takes 0.1 s to make,
    which :func:`session` now spends while the scene is read): its metadata ``{key:
    value}``, its graph's input names (initialisers left out, as ONNX Runtime does) and its
    outputs' ``{name: shape}`` (a dimension an int, or its name). Read from the protobuf's
    fields (ModelProto 14 metadata_props, 7 graph; GraphProto 11 input, 12 output, 5
    initializer); a ValueError when ``data`` is no ModelProto."""
    model = _fields(memoryview(data), limit=10_000)  # a model holds a few dozen
    if 7 not in model:
        raise ValueError("no graph")
    props = {}
    for entry in model.get(14, []):
        kv = _fields(entry)
        props[_text(kv, 1)] = _text(kv, 2)
    graph = _fields(model[7][-1])
    stored = {_text(_fields(t), 8) for t in graph.get(5, [])}
    inputs = [n for n in (_text(_fields(v), 1) for v in graph.get(11, [])) if n not in stored]
    outputs = {}
    for value in graph.get(12, []):
        info = _fields(value)
        tensor = _fields(_first(_fields(_first(info, 2)), 1))
        dims = [_fields(d) for d in _fields(_first(tensor, 2)).get(1, [])]
        outputs[_text(info, 1)] = [_signed(d[1][0]) if 1 in d else _text(d, 2) for d in dims]
    return props, inputs, outputs


def _session_header(sess) -> tuple[dict[str, str], list[str], dict[str, list]]:
    """:func:`onnx_header`'s figures from an ONNX Runtime session."""
    return (
        dict(sess.get_modelmeta().custom_metadata_map),
        [i.name for i in sess.get_inputs()],
        {o.name: o.shape for o in sess.get_outputs()},
    )


def _fields(buf, limit: int = 1 << 20) -> dict[int, list]:
    """A protobuf message's fields ``{number: [values]}``: varints as ints, length-delimited
    fields as memoryviews (nothing copied), fixed-width ones as bytes. A ValueError for
    what is not a message, or holds more than ``limit`` fields (a file made to be slow)."""
    if not isinstance(buf, memoryview):
        raise ValueError("a scalar where a message belongs")
    fields: dict[int, list] = {}
    pos, end, count = 0, len(buf), 0
    while pos < end:
        count += 1
        if count > limit:
            raise ValueError("too many fields")
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = bytes(buf[pos : pos + width]), pos + width
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end or number == 0:
            raise ValueError("truncated")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _first(fields: dict, number: int) -> memoryview:
    values = fields.get(number)
    return values[0] if values else memoryview(b"")


def _text(fields: dict, number: int) -> str:
    value = _first(fields, number)
    if not isinstance(value, memoryview):
        raise ValueError("a scalar where a string belongs")
    return bytes(value).decode("utf-8", "replace")


def _signed(value) -> int:
    """An int64 field read as its varint's unsigned value -> its signed value."""
    if not isinstance(value, int):
        raise ValueError("a dimension that is not a number")
    return value - (1 << 64) if value >= 1 << 63 else value


def session(path: str | Path, threads: int | None = None):
    """One ONNX Runtime CPU session per file (its content as its size and time say, and
    thread count) and process; a file ONNX Runtime cannot read is refused in one line."""
    return session_soon(path, threads).result()


def session_soon(path: str | Path, threads: int | None = None) -> Future:
    """:func:`session`'s, made in a thread from now on: the caller reads its scene
    meanwhile (ONNX Runtime releases the GIL for most of it); ``.result()`` is the session
    or the RoadsegError."""
    stat = Path(path).stat()
    return _session(str(path), stat.st_size, stat.st_mtime_ns, threads)


# Sessions by (process, file, size, mtime, threads), at most 8 per process. Keyed by process,
# never cleared at fork: a forked child (multiprocessing, subprocess with preexec_fn, Ray)
# has none of its parent's threads, so a session the parent was still making would never
# come, and freeing a parent's session in the child waits forever on ONNX Runtime's thread
# pool (seen: the test suite hung in Ray's fork); the child makes its own and leaves the
# parent's alone (OnnxBackend.session checks the process too).
_SESSIONS: dict[tuple, Future] = {}


def _session(path: str, size: int, mtime: int, threads: int | None) -> Future:
    key = (os.getpid(), path, size, mtime, threads)
    if key in _SESSIONS:
        return _SESSIONS[key]
    require_onnxruntime(path)
    mine = [k for k in _SESSIONS if k[0] == key[0]]
    for old in mine[: max(0, len(mine) - 7)]:  # the oldest of this process's go
        del _SESSIONS[old]
    future: Future = Future()
    _SESSIONS[key] = future

    def make() -> None:
        try:
            future.set_result(_make_checked(path, threads))
        except BaseException as err:  # the caller's .result() raises it
            future.set_exception(err)

    # not a daemon: a command that fails while the session is being made waits for it at
    # exit (a daemon thread stopped inside ONNX Runtime aborted the process: exit 134)
    threading.Thread(target=make, name="roadseg-session").start()
    return future


def _make_checked(path: str, threads: int | None):
    try:
        return make_session(path, threads)
    except Exception as err:  # onnxruntime raises its own types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RoadsegError(f"not a readable ONNX model ({first[:200]})", path) from err


def make_session(model: str | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session of a model (a path or its bytes): all graph
    optimisations, ``threads`` (default: ONNX Runtime's), errors only on stderr."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: stderr stays the command's
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
