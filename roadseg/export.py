"""Trained checkpoints -> one ONNX file that runs with nothing but onnxruntime and numpy.

The graph takes ``image``: float32 ``(batch, 3, height, width)``, RGB in [0, 1] (8-bit
values / 255), any batch, height and width of at least the network's stride over its input
scale (64 px for ``cpu.yaml``'s; ``roadseg_min_side`` in the metadata), and returns

- ``probability`` ``(batch, 1, height, width)``: the ensemble's mean road probability;
- ``members`` ``(batch, M, height, width)``: each member's (for a majority vote).

Everything :class:`~roadseg.models.wrapper.SegmentationModel` does is inside: the
normalisation, the input scale (ONNX ``Resize`` with ``antialias``, as PyTorch's
antialiased bilinear), the reflect padding to the network's stride (sizes computed in the
graph, so no height or width is baked in), the crop, the resize back and the sigmoid.
Each member's network is traced by PyTorch's TorchScript exporter at opset 18 (the
dynamo exporter stalls on these networks with free height and width; the pre- and
post-processing are written here as ONNX nodes instead of traced).

The model's metadata (``metadata_props``, JSON values) holds what a user needs to decide
as roadseg does: ``roadseg_decision`` (thresholds and clean-up, without and with TTA),
``roadseg_imagery`` (training radiometry and metres per pixel), ``roadseg_sources`` (the
checkpoints, their sizes and SHA-256), ``roadseg_training`` (each member's data root and
recorded split: the file predicts and evaluates as its checkpoints, :mod:`roadseg.exported`),
``roadseg_check`` (the self-check's figures).
:func:`export_checkpoints` refuses to write a file whose outputs differ from PyTorch's by
more than :data:`TOLERANCE` on real tiles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError

OPSET = 18
TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| in probability the export accepts
MIN_SIDE = 64  # reflect padding needs the scaled image larger than the padding (scale 0.5)


def min_side(model) -> int:
    """The smallest height or width the graph of ``model`` takes: reflect padding to the
    stride needs the scaled image at least a stride wide (PyTorch replicates below)."""
    return -(-model.stride // model.input_scale)


FORMAT = 1


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the file, its members, the self-check's largest difference."""

    path: Path
    members: int
    max_diff: float
    checked: str
    metadata: dict
    int8: dict | None = None  # export --int8's record (roadseg.quantize.int8_record)


def onnx_available() -> bool:
    """Whether onnx and onnxruntime are installed (``pip install roadseg[onnx]``)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require_onnx() -> None:
    """onnx and onnxruntime are there, else one line: export needs the training install
    too (torch traces the networks), the onnx backend only roadseg[onnx]."""
    if onnx_available():
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RoadsegError(
            "export traces the networks with torch and writes them with onnx: pip install "
            "'roadseg[train,onnx]'"
        ) from None
    raise RoadsegError(
        "ONNX export and the onnx backend need onnx and onnxruntime: pip install "
        "'roadseg[onnx]' (or pip install onnx onnxruntime)"
    )


def _net_proto(net, prefix: str):
    """One member's network as an ONNX graph with free batch, height and width (multiples
    of its stride), its names prefixed."""
    import onnx
    import onnx.compose
    import torch

    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, 128, 128)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (dummy,), buf, dynamo=False, opset_version=OPSET,
            input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 2: "h", 3: "w"}},
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    return onnx.compose.add_prefix(proto, prefix).graph


def _const(name: str, values, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _member_nodes(model, i: int) -> tuple[list, list, str]:
    """(nodes, initializers, output name) of member ``i``: ``image`` -> its probability
    ``(B, 1, H, W)``, as :meth:`SegmentationModel.forward` followed by a sigmoid."""
    from onnx import helper

    p = f"m{i}_"
    net = _net_proto(model.net, p)
    inits = [
        _const(p + "mean", model.mean.numpy()), _const(p + "std", model.std.numpy()),
        _const(p + "stride", [model.stride], np.int64), _const(p + "zeros6", [0] * 6, np.int64),
        _const(p + "i2", [2], np.int64),
        _const(p + "i4", [4], np.int64), _const(p + "axes_hw", [2, 3], np.int64),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Sub", ["image", p + "mean"], [p + "centred"]),
        helper.make_node("Div", [p + "centred", p + "std"], [p + "normed"]),
    ]
    scaled = p + "normed"
    if model.input_scale != 1:
        s = model.input_scale
        inits.append(_const(p + "scales", [1, 1, s, s]))
        nodes.append(helper.make_node(
            "Resize", [p + "normed", "", p + "scales"], [p + "scaled"], mode="linear",
            antialias=1, exclude_outside=1, coordinate_transformation_mode="half_pixel",
        ))  # fmt: skip  # exclude_outside: edge weights renormalised, as PyTorch's
        scaled = p + "scaled"
    nodes += [  # pad bottom and right to the stride: (stride - size % stride) % stride
        helper.make_node("Shape", [scaled], [p + "shape"]),
        helper.make_node("Slice", [p + "shape", p + "i2", p + "i4"], [p + "hw"]),
        helper.make_node("Mod", [p + "hw", p + "stride"], [p + "rest"]),
        helper.make_node("Sub", [p + "stride", p + "rest"], [p + "short"]),
        helper.make_node("Mod", [p + "short", p + "stride"], [p + "pad_hw"]),
        helper.make_node("Concat", [p + "zeros6", p + "pad_hw"], [p + "pads"], axis=0),
        helper.make_node("Pad", [scaled, p + "pads"], [net.input[0].name], mode="reflect"),
        *net.node,
        helper.make_node(
            "Slice", [net.output[0].name, p + "zeros6", p + "hw", p + "axes_hw"], [p + "crop"]
        ),
    ]
    # Slice reads starts of the same length as ends: two zeros
    nodes[-1].input[1] = p + "zeros2"
    inits.append(_const(p + "zeros2", [0, 0], np.int64))
    logits = p + "crop"
    if model.input_scale != 1:  # back to the input's size, bilinear, not antialiased
        inits.append(_const(p + "i0", [0], np.int64))
        nodes += [
            helper.make_node("Shape", ["image"], [p + "in_shape"]),
            helper.make_node("Shape", [p + "crop"], [p + "crop_shape"]),
            helper.make_node("Slice", [p + "crop_shape", p + "i0", p + "i2"], [p + "bc"]),
            helper.make_node("Slice", [p + "in_shape", p + "i2", p + "i4"], [p + "out_hw"]),
            helper.make_node("Concat", [p + "bc", p + "out_hw"], [p + "sizes"], axis=0),
            helper.make_node(
                "Resize", [p + "crop", "", "", p + "sizes"], [p + "up"], mode="linear",
                coordinate_transformation_mode="half_pixel",
            ),
        ]  # fmt: skip
        logits = p + "up"
    nodes.append(helper.make_node("Sigmoid", [logits], [p + "prob"]))
    return nodes, [*inits, *net.initializer], p + "prob"


def build_graph(models: list):
    """The ONNX model of an ensemble of :class:`SegmentationModel` (see the module)."""
    import onnx
    from onnx import TensorProto, helper

    from roadseg.models.wrapper import SegmentationModel

    for model in models:
        if not isinstance(model, SegmentationModel):
            raise RoadsegError(
                f"export takes the pixel models (unet, dilated, ...); {type(model).__name__} "
                "is a patch classifier: predict it with roadseg submit"
            )
    nodes, inits, probs = [], [], []
    for i, model in enumerate(models):
        n, init, out = _member_nodes(model, i)
        nodes += n
        inits += init
        probs.append(out)
    nodes += [
        helper.make_node("Concat", probs, ["members"], axis=1),
        helper.make_node("ReduceMean", ["members", "axis1"], ["probability"], keepdims=1),
    ]
    inits.append(_const("axis1", [1], np.int64))
    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        nodes, "roadseg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1, "height", "width"]),
         helper.make_tensor_value_info("members", TensorProto.FLOAT, ["batch", len(models), "height", "width"])],
        inits,
    )  # fmt: skip
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="roadseg",
        doc_string="Road probability of RGB images in [0, 1]: see metadata_props.",
    )  # fmt: skip
    proto.ir_version = min(proto.ir_version, 10)  # what onnxruntime 1.17+ reads
    onnx.checker.check_model(proto)
    return proto


def session(model, threads: int | None = None):
    """An onnxruntime CPU session of a model (a path, bytes or a ModelProto)."""
    from roadseg.exported import make_session

    if not isinstance(model, str | bytes | Path):
        model = model.SerializeToString()
    return make_session(str(model) if isinstance(model, Path) else model, threads)


def read_metadata(path: str | Path) -> dict:
    """The roadseg metadata of an exported file, JSON values decoded (checked:
    :func:`roadseg.exported.read_exported`)."""
    from roadseg.exported import read_exported

    return read_exported(path).metadata


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_metadata(options, contents: list[dict]) -> dict:
    """The metadata of an export of ``options``' checkpoints (JSON strings)."""
    from roadseg import __version__
    from roadseg.imagery import ensemble_imagery

    def decisions(tta: bool) -> dict:
        opts = dataclasses.replace(options, tta=tta)
        first, origin = opts.mean_decision()  # a mean ensemble's own, when tuned
        tuned = opts.stored()[2]
        given = options.pixel_threshold is not None or options.patch_threshold is not None
        members = [opts.decision(c)[0] for c in options.ckpt]
        return {
            **dataclasses.asdict(first), "origin": origin,
            "tuned": tuned is not None and not given, "metric": tuned.metric if tuned else None,
            "tuned_on_tta": bool(tuned.tta) if tuned else None,  # TTA's falls back to plain's
            "members": [dataclasses.asdict(d) for d in members],
        }  # fmt: skip

    sources = [
        {"path": str(Path(c).resolve()), "bytes": Path(c).stat().st_size, "sha256": _sha256(c)}
        for c in options.ckpt
    ]
    values = {
        "roadseg_format": FORMAT,
        "roadseg_version": __version__,
        "roadseg_merge": options.merge,
        "roadseg_decision": decisions(False),
        "roadseg_decision_tta": decisions(True),
        "roadseg_imagery": ensemble_imagery(list(options.ckpt), contents).to_dict(),
        "roadseg_sources": sources,
        "roadseg_training": [_training(c) for c in contents],
        "roadseg_input": "image: float32 (batch, 3, height, width), RGB in [0, 1] "
        "(8-bit / 255), height and width at least roadseg_min_side",
        "roadseg_outputs": "probability: (batch, 1, height, width) mean road probability; "
        "members: (batch, M, height, width) each member's",
    }
    return {k: json.dumps(v) for k, v in values.items()}


def _training(ckpt: dict) -> dict:
    """What an exported file records of a member's data (what submit and evaluate find the
    tiles by): its root as the config gave it and its split by content; for a checkpoint
    saved before roadseg recorded its split, the split made again from the files present,
    said so (``None`` when its data is not here)."""
    from roadseg.checkpoints import datamodule_arguments, recorded_split, trained_root

    root, split, note = datamodule_arguments(ckpt).get("root"), recorded_split(ckpt), None
    found = trained_root(ckpt)
    if split is None and found and Path(found).is_dir():
        from roadseg.datamodule import RoadDataModule

        split = RoadDataModule.from_checkpoint(ckpt).split_record()
        note = ("the checkpoint records no split: made again at export from the files "
                "present, as it was trained")  # fmt: skip
    return {"root": root, "split": split, "note": note}


def check_source(ckpt: dict):
    """Where a checkpoint's export checks itself: its first scene for a model trained on
    scenes, else its dataset root (None when unknown)."""
    from roadseg.checkpoints import recorded_split, trained_root

    record = recorded_split(ckpt) or {}
    if record.get("kind") == "scenes" and Path(record["scenes"][0]["image"]).is_file():
        return record["scenes"][0]["image"]
    return trained_root(ckpt)


def check_images(folder: str | Path | None, count: int = 3) -> tuple[list[np.ndarray], str]:
    """Real images for the self-check: ``count`` tiles of ``folder`` (a dataset root or
    a folder of images), plus an odd-sized crop of the first, so padding is exercised."""
    from roadseg.io import read_image

    if folder is None or not Path(folder).exists():
        raise RoadsegError(
            "the export checks itself on real tiles: pass --check-data FOLDER (a dataset "
            "root or a folder of images); the checkpoint's own data is not here",
            folder,
        )
    root = Path(folder)
    if root.is_file():  # a scene: three windows of it (a scene-trained model's own data)
        from rasterio.windows import Window

        from roadseg.io import raster_shape

        _, h, w = raster_shape(root)
        side = min(512, h, w)
        corners = [(0, 0), ((h - side) // 2, (w - side) // 2), (h - side, w - side)]
        images = [read_image(root, Window(c, r, side, side)) for r, c in corners[:count]]
        images.append(np.ascontiguousarray(images[0][:, : max(MIN_SIDE, side - 67),
                                                     : max(MIN_SIDE, side - 29)]))  # fmt: skip
        return images, f"{len(images) - 1} windows of {root} and an odd-sized crop"
    paths = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg")
    )
    paths = [p for p in paths if "groundtruth" not in p.parts and "masks" not in p.parts]
    if not paths:
        raise RoadsegError("no images (png, tif, jpg) to check the export on", folder)
    images = [read_image(p) for p in paths[:count]]
    first = images[0]
    images.append(np.ascontiguousarray(first[:, : max(MIN_SIDE, first.shape[1] - 67),
                                             : max(MIN_SIDE, first.shape[2] - 29)]))  # fmt: skip
    return images, f"{min(count, len(paths))} images of {folder} and an odd-sized crop"


def compare(models: list, sess, images: list[np.ndarray]) -> float:
    """Largest |ONNX Runtime - PyTorch| of the mean probability over ``images``."""
    import torch

    worst = 0.0
    for image in images:
        x = torch.from_numpy(image[None].astype(np.float32))
        with torch.inference_mode():
            ref = torch.stack([torch.sigmoid(m(x)) for m in models]).mean(0).numpy()
        (out,) = sess.run(["probability"], {"image": x.numpy()})
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def load_models(options) -> tuple[list[dict], list]:
    """(contents, networks in eval mode) of ``options``' checkpoints."""
    from roadseg.task import RoadSegTask

    contents = options.read_checkpoints()
    models = [
        RoadSegTask.from_checkpoint(p, ckpt=c).model.eval()
        for p, c in zip(options.ckpt, contents, strict=True)
    ]
    return contents, models


def refuse_disagreement(worst: float, checked: str, out, graph: str = "exported graph") -> None:
    """Refuse, one line, a graph whose self-check differs from PyTorch by more than
    :data:`TOLERANCE`."""
    if not worst <= TOLERANCE:
        raise RoadsegError(
            f"the {graph} disagrees with PyTorch by {worst:.2e} in probability on "
            f"{checked} (tolerance {TOLERANCE:g}); nothing was written. Report it with "
            "the checkpoint's model and model_args",
            out,
        )


def write_checked(proto, metadata: dict, out: str | Path, *, worst: float, checked: str,
                  graph: str = "exported graph") -> None:  # fmt: skip
    """Record the self-check in ``metadata``; refuse, writing nothing, when ``worst`` is
    above :data:`TOLERANCE`; else write ``proto`` with ``metadata`` to ``out`` atomically."""
    import onnx

    from roadseg.io import atomic_path

    metadata["roadseg_check"] = json.dumps(
        {"max_abs_diff": worst, "tolerance": TOLERANCE, "on": checked}
    )
    refuse_disagreement(worst, checked, out, graph)
    _with_metadata(proto, metadata)
    with atomic_path(out, suffix=".tmp.onnx") as tmp:
        onnx.save(proto, str(tmp))


def _with_metadata(proto, metadata: dict) -> None:
    """``metadata`` (JSON strings) into ``proto``'s metadata_props."""
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def export_checkpoints(
    options, out: str | Path, *, check_data: str | None = None, int8: bool = False,
    int8_tolerance: float | None = None,
) -> ExportReport:  # fmt: skip
    """Export ``options``' checkpoints (an ensemble when several) to ``out``, checked against
    PyTorch on real tiles (``check_data``, default: the data the first checkpoint trained
    on); nothing is written when they disagree by more than :data:`TOLERANCE`. With
    ``int8``, the checked graph's convolutions are quantised (:mod:`roadseg.quantize`) and
    nothing is written when validation road patch F1 drops by more than ``int8_tolerance``
    (default :data:`roadseg.quantize.TOLERANCE`)."""
    require_onnx()

    contents, models = load_models(options)
    metadata = export_metadata(options, contents)
    metadata["roadseg_min_side"] = json.dumps(max(int(min_side(m)) for m in models))
    proto = build_graph(models)
    images, checked = check_images(check_data or check_source(contents[0]))
    worst = compare(models, session(proto), images)
    record = None
    if int8:
        refuse_disagreement(worst, checked, out)  # before the minutes of calibration
        proto, record = _int8(options, contents, proto, metadata, out, int8_tolerance)
        metadata["roadseg_int8"] = json.dumps(record)
    write_checked(proto, metadata, out, worst=worst, checked=checked)
    return ExportReport(Path(out), len(models), worst, checked, metadata, record)


def _int8(options, contents, proto, metadata: dict, out, tolerance: float | None):
    """(the int8 graph of ``proto``, its record), scored beside fp32 and refused when it
    drops F1 by more than ``tolerance`` (:mod:`roadseg.quantize`)."""
    import tempfile

    import onnx

    from roadseg import quantize
    from roadseg.io import read_image

    tolerance = quantize.TOLERANCE if tolerance is None else tolerance
    validation = quantize.validation(options, contents)  # refused before calibrating
    tiles, calibration = quantize.calibration_tiles(contents[0])
    int8, kept = quantize.quantize(proto, [read_image(p) for p in tiles])
    with tempfile.TemporaryDirectory(prefix="roadseg-int8-") as tmp:
        files = {"fp32": Path(tmp) / "fp32.onnx", "int8": Path(tmp) / "int8.onnx"}
        for graph, path in ((proto, files["fp32"]), (int8, files["int8"])):
            copy = onnx.ModelProto.FromString(graph.SerializeToString())
            _with_metadata(copy, metadata)
            onnx.save(copy, str(path))
        scores = quantize.validation_scores(options, validation, files)
    drop = quantize.check_drop(scores, tolerance, out)
    record = quantize.int8_record(scores, drop, tolerance, calibration, kept)
    return int8, record
