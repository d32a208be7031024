"""``roadseg export --int8``: the exported graph with int8 convolutions, calibrated on the
checkpoint's own training tiles and refused when it scores worse than fp32.

ONNX Runtime's static quantisation (``quantize_static``, QDQ format) is run on the fp32
graph :mod:`roadseg.export` builds and checks against PyTorch:

- **calibration**: activation ranges (MinMax) from :data:`CALIBRATION_TILES` tiles the first
  member trained on, spread evenly over its split's training tiles, read as it read them;
- **int8**: the convolutions of each member's network, weights per output channel in a
  7-bit range (``reduce_range``: x86 CPUs without VNNI multiply uint8 by int8 with 16-bit
  sums that saturate at the full 8-bit range), activations uint8;
- **fp32**: each member's first convolution (it reads the normalised image, whose range
  the stem's weights amplify) and its last :data:`FP32_LAST` (for a U-Net the segmentation
  head, whose logits a threshold cuts near 0.45, and the two highest-resolution decoder
  blocks, which draw the road edges), and everything outside the networks: the
  normalisation, the input scale, the padding, the resize back and the sigmoid, which hold
  no weights to speed up. Operators between convolutions (ReLU6, Add, Concat, Resize) stay
  fp32: quantising them too agreed with fp32 on 95.7% of pixels against 99.1% for
  convolutions alone, and was no faster on an AVX2 CPU. On the ``cpu.yaml`` model, keeping
  only the first and last convolution in fp32 dropped F1 by 0.0033, the last three 0.0032,
  the last five 0.0021; 8 to 64 calibration tiles, or percentile ranges, moved it by less
  than its spread (0.0021 to 0.0074).

The int8 file is then scored beside the fp32 graph on the checkpoint's validation tiles,
predicted in context as ``roadseg evaluate`` does, at the decision the file records: when
road patch F1 drops by more than ``tolerance``, nothing is written. The drop and the
figures are recorded in the metadata (``roadseg_int8``).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError

CALIBRATION_TILES = 16  # more moved neither the ranges nor the scores on cil-2022
TOLERANCE = 0.003  # the largest drop in validation road patch F1 an int8 export accepts
# convolutions kept in fp32 at the end of each member: for a U-Net the segmentation head
# and the two highest-resolution decoder blocks, which draw the road edges a threshold cuts
FP32_LAST = 5
_OUTSIDE = "roadseg_"  # name given to the nodes outside the members' networks


def vnni() -> bool | None:
    """Whether this CPU has int8 dot products (AVX-512 VNNI or AVX-VNNI), where int8
    convolutions run up to about twice fp32's speed; None when it cannot be told."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags


def calibration_tiles(ckpt: dict, count: int | None = None) -> tuple[list[Path], str]:
    """``count`` (default :data:`CALIBRATION_TILES`) tiles the checkpoint (its contents)
    trained on, spread evenly over them, and a line saying which."""
    count = CALIBRATION_TILES if count is None else count
    from roadseg.checkpoints import trained_root
    from roadseg.evaluation import trained_tiles
    from roadseg.index import content_hash, scan

    root, hashes = trained_root(ckpt), trained_tiles(ckpt)
    if root is None or hashes is None or not Path(root).is_dir():
        raise RoadsegError(
            "--int8 calibrates on the tiles the checkpoint trained on, and they are not here: "
            "put its dataset back where it trained (or export without --int8)",
            root,
        )
    frame = scan(root)
    images = [Path(p) for p in frame["image"] if content_hash(p) in hashes]
    if not images:
        raise RoadsegError("none of the tiles the checkpoint trained on is here", root)
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    return [images[k] for k in picks], f"{len(picks)} of the {len(images)} training tiles of {root}"


def quantize(proto, images: list[np.ndarray]):
    """``proto`` (roadseg's fp32 graph) with int8 convolutions calibrated on ``images``
    (each float32 ``(3, H, W)`` in [0, 1]); returns (the quantised ModelProto, the names of
    the convolutions kept in fp32)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # the caller's is kept
    del proto.metadata_props[:]
    inside, outside = [], []
    for k, node in enumerate(proto.graph.node):
        if not node.name:  # roadseg's own pre- and post-processing nodes are unnamed
            node.name = f"{_OUTSIDE}{k}_{node.op_type}"
        (outside if node.name.startswith(_OUTSIDE) else inside).append(node)
    kept, total = [], 0
    for member in sorted({n.name.split("/", 1)[0] for n in inside}):
        convs = [n.name for n in inside if n.op_type == "Conv" and n.name.startswith(member + "/")]
        kept += [convs[0], *convs[-FP32_LAST:]] if len(convs) > FP32_LAST + 1 else convs
        total += len(convs)
    if total == len(kept):
        raise RoadsegError(
            f"--int8: the networks have {total} convolutions, and each member's first and "
            f"last {FP32_LAST} stay fp32: none would be int8. Export without --int8"
        )

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self.left = iter(images)

        def get_next(self):
            image = next(self.left, None)
            return None if image is None else {"image": image[None].astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="roadseg-int8-") as tmp, _quiet():
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(fp32))
        quantize_static(
            str(fp32), str(int8), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[n.name for n in outside] + kept,
        )  # fmt: skip
        return onnx.load(str(int8)), kept


@contextlib.contextmanager
def _quiet():
    """The quantiser's advice (Python logging) and ONNX Runtime's notes on the initialisers
    it drops (C++ log) kept off the command's output; errors still show."""
    import logging

    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def validation(options, contents: list[dict]):
    """The first checkpoint's validation tiles, as ``roadseg evaluate`` scores them (made
    before the minutes of calibration: a checkpoint without them is refused first)."""
    from roadseg.evaluation import Validation

    try:
        found = Validation(
            contents[0], options.margin, members=list(zip(options.ckpt, contents, strict=True))
        )
    except RoadsegError as err:
        raise RoadsegError(f"{err.args[0]} (--int8 is scored on them; or export without --int8)",
                           *err.args[1:]) from err  # fmt: skip
    if found.tiles.empty:
        raise RoadsegError(
            "--int8 is checked on the checkpoint's validation tiles and it has none (trained "
            "on every labelled tile): export without --int8",
            options.ckpt[0],
        )
    return found


def validation_scores(options, validation, files: dict[str, Path]) -> dict:
    """Road patch F1 and patch accuracy of each exported file of ``files`` (``{name:
    path}``) on ``validation``'s tiles, predicted as ``options`` predict (TTA, context,
    merge; a vote by its members' decisions) and decided as ``roadseg evaluate`` decides."""
    import contextlib
    import dataclasses
    import io

    scores = {"tiles": len(validation.tiles), "tta": bool(options.tta),
              "context_px": validation.margin}  # fmt: skip
    for name, path in files.items():
        opts = dataclasses.replace(options, ckpt=(str(path),), quiet=True)
        with contextlib.redirect_stdout(io.StringIO()):  # its backend and decision lines
            predictor, decision = opts.predictor()
        found = validation.scores(predictor).with_clean(decision.clean)
        values = found.scores(decision.pixel, decision.patch)
        scores[name] = {k: float(values[k]) for k in ("patch_f1", "patch_accuracy")}
        scores["decision"] = decision.describe()
    return scores


def check_drop(scores: dict, tolerance: float, out) -> float:
    """The int8 file's drop in road patch F1 against fp32 (``scores``); refused, one line,
    when above ``tolerance``."""
    drop = scores["fp32"]["patch_f1"] - scores["int8"]["patch_f1"]
    if drop > tolerance:
        raise RoadsegError(
            f"int8 drops validation road patch F1 by {drop:.4f} ({scores['fp32']['patch_f1']:.4f} "
            f"-> {scores['int8']['patch_f1']:.4f} on {scores['tiles']} tiles), more than "
            f"--int8-tolerance {tolerance:g}; nothing was written. Export without --int8",
            out,
        )
    return drop


def int8_record(scores: dict, drop: float, tolerance: float, calibration: str, kept) -> dict:
    """The ``roadseg_int8`` metadata entry."""
    return {
            "calibration": calibration, "method": "ONNX Runtime static quantisation, QDQ, "
            "MinMax; weights int8 per channel (7-bit range), activations uint8",
            "int8": "the convolutions of each member's network but those kept in fp32",
            "fp32": {"convolutions": list(kept), "why": "each member's first (the "
                     f"normalised image) and last {FP32_LAST} (the road logits a threshold "
                     "cuts and the highest-resolution features that draw road edges)",
                     "other": "everything outside the networks and every operator that is "
                     "not a convolution"},
            "validation": scores, "drop": drop, "tolerance": tolerance,
    }  # fmt: skip
