"""Trained checkpoints -> one ONNX file for QGIS's Deepness plugin (Deep Neural Remote Sensing).

The graph runs :func:`roadseg.export.build_graph`'s, narrowed to what Deepness runs: input
``image`` float32 ``(batch, 3, S, S)``, RGB in [0, 1], ``S`` the tile size (square, fixed),
and one output ``probability`` ``(batch, 1, S, S)``, the ensemble's mean road probability
after the sigmoid (one class map: Deepness reads every output as a head
``(batch, classes, S, S)`` and thresholds a one-channel head at ``seg_thresh``). The
normalisation, input scale and padding to the network's stride stay inside the graph.

Deepness feeds each tile as 8-bit RGB divided by 255, then standardised as
``(x - standardization_mean) / standardization_std`` (per channel), NCHW. The metadata's
standardisation is therefore the identity (mean 0, std 1): the graph gets RGB in [0, 1],
what it normalises itself. Tiles that run past the layer's edge are padded with zeros:
Deepness grows the processed extent north and east to whole tiles
(``processing/extent_utils.py``, ``calculate_extended_processing_extent``: ``yMaximum``
and ``xMaximum``) and cuts tiles from its north-west corner (``processing/tile_params.py``),
so the first row of tiles has zero rows on top, the last column zero columns on the
right, and a layer smaller than a tile both. A network's receptive field would see those
zeros (8e-2 in probability 64 px from them with cpu.yaml's model), so the graph runs each
tile of the batch on its own (ONNX ``Scan``: a batch mixes edge and inner tiles) and
crops it to its valid part first (:func:`valid_box`): the rows and columns from the first
to the last holding a non-zero value in any channel, widened into the padding to at least
``roadseg_min_side`` where the layer is narrower. The crop goes through ``build_graph``'s
graph (free height and width: reflect padding to the stride, as ``roadseg predict`` pads
an image) and the probability is padded back to the tile with zeros. A tile past the
edge is thus predicted as roadseg predicts its valid part as an image. Inner tiles cannot
be helped: the rows of zeros above the layer shift every tile by their number, off the
network's grid unless a multiple of it, and nothing in an inner tile shows it.

Leading or trailing rows or columns truly black in all three bands are cropped too
(nodata in practice); an all-zero tile is predicted whole. Nothing is cropped where the
padding is not zero: a Deepness standardisation changed from the metadata's identity, or
a layer whose nodata value QGIS fills in is not 0.

Metadata keys (``metadata_props``, JSON values, as Deepness ``json.loads`` each one),
checked against PUTvision/qgis-plugin-deepness: the table "List of parameters parsed by
plugin" of ``docs/source/creators/creators_add_metadata_to_model.rst``, the requirements of
``docs/source/creators/creators_description_classes.rst``, and the code that reads them:
``src/deepness/processing/models/model_base.py`` (``get_metadata_*``,
``get_metadata_standarization_parameters``, ``preprocessing``),
``processing/models/preprocessing_utils.py``, ``processing/models/segmentor.py``,
``processing/map_processor/map_processor_segmentation.py`` (``_process_tile``),
``processing/tile_params.py`` and ``widgets/deepness_dockwidget.py``
(``_load_default_model_parameters``: the "Load default parameters" button):

- ``model_type`` str ``"Segmentor"`` (Deepness capitalises it and matches its model class);
- ``class_names`` dict id -> name, ``{"0": "road"}``: one name per channel of the head, as
  Deepness's own one-channel sigmoid test model is named (``{0: 'Coffee'}``);
- ``resolution`` float, centimetres per pixel: the checkpoint's imagery metres per pixel x
  100 (:mod:`roadseg.imagery`); left out when the checkpoint does not know it;
- ``tiles_size`` int, pixels: the documented spelling; ``tile_size`` too, the spelling
  ``ModelBase.get_metadata_tile_size`` reads (Deepness also takes the size from the input
  shape, which is fixed here);
- ``tiles_overlap`` int, percent of the tile;
- ``seg_thresh`` float: the decision's pixel threshold without TTA (Deepness runs none);
  Deepness keeps a pixel at or above it, roadseg above it (they differ only at equality);
- ``seg_small_segment`` int ``0``: Deepness's median filter off (its size is a filter
  width, not roadseg's clean-up; a decision's ``close_gaps``/``min_area`` are not applied);
- ``standardization_mean`` / ``standardization_std`` lists of 3 floats, ``[0, 0, 0]`` and
  ``[1, 1, 1]``: the spelling ``model_base.py`` reads (not in the docs' table).

roadseg's own metadata is :func:`roadseg.export.export_metadata`'s (the decision with and
without TTA, the imagery, the sources), with ``roadseg_input``/``roadseg_outputs`` for this
graph, ``roadseg_min_side``, ``roadseg_deepness`` (tile and overlap) and ``roadseg_check``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadseg.errors import RoadsegError
from roadseg.export import (
    OPSET,
    _const,
    build_graph,
    check_images,
    check_source,
    export_metadata,
    load_models,
    min_side,
    require_onnx,
    session,
    write_checked,
)

TILE_SIZE = 512  # Deepness's documented example and its usual tile
TILE_OVERLAP = 25  # percent: Deepness keeps a 512 px tile's middle, 64 px in from inner sides
CLASS_NAME = "road"
MODEL_TYPE = "Segmentor"
DEEPNESS = "PUTvision/qgis-plugin-deepness"
# Standardisation that Deepness applies after dividing by 255: the identity, the graph
# normalises RGB in [0, 1] itself
STANDARDIZATION_MEAN = (0.0, 0.0, 0.0)
STANDARDIZATION_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class DeepnessReport:
    """What a Deepness export wrote: the file, its members, the self-check's largest
    difference, the metadata (JSON strings) and what a user should know (``notes``)."""

    path: Path
    members: int
    max_diff: float
    checked: str
    metadata: dict
    notes: tuple[str, ...] = ()


def valid_box(tile: np.ndarray, min_px: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the part of one tile ``(C, S, S)`` that the
    Deepness graph predicts, as the graph finds it: the rows and columns from the first to
    the last holding a non-zero value in any channel (Deepness's zero padding left out),
    widened to at least ``min_px`` within the tile (into the padding) where narrower; the
    whole tile when it is all zeros."""
    size = tile.shape[-1]

    def span(nonzero: np.ndarray) -> tuple[int, int]:
        hits = np.flatnonzero(nonzero)
        start, end = (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, size)
        end = max(end, min(start, size - min_px) + min_px)
        return min(start, end - min_px), end

    a = np.abs(tile)
    return (*span(a.max(axis=(0, 2)) > 0), *span(a.max(axis=(0, 1)) > 0))


def _tile_body(models: list, tile: int, min_px: int):
    """The Scan body: one tile ``(3, S, S)`` -> its probability ``(1, S, S)``: cropped to
    :func:`valid_box`, :func:`~roadseg.export.build_graph`'s graph on the crop, zeros
    around it."""
    import onnx.compose
    from onnx import TensorProto, helper

    inner = onnx.compose.add_prefix(build_graph(models), "tile_").graph  # tile_image -> ...
    nodes = [
        helper.make_node("Abs", ["tile_in"], ["v_abs"]),
        helper.make_node("ReduceMax", ["v_abs", "v_axes_cw"], ["v_rows"], keepdims=0),
        helper.make_node("ReduceMax", ["v_abs", "v_axes_ch"], ["v_cols"], keepdims=0),
    ]
    for axis in ("rows", "cols"):  # first and last non-zero (0 and S when none)
        nodes += [
            helper.make_node("Greater", [f"v_{axis}", "v_zero"], [f"v_{axis}_nz"]),
            helper.make_node("Cast", [f"v_{axis}_nz"], [f"v_{axis}_f"], to=TensorProto.FLOAT),
            helper.make_node("ArgMax", [f"v_{axis}_f"], [f"v_{axis}_first"], axis=0,
                             keepdims=1, select_last_index=0),
            helper.make_node("ArgMax", [f"v_{axis}_f"], [f"v_{axis}_last"], axis=0,
                             keepdims=1, select_last_index=1),
            helper.make_node("Add", [f"v_{axis}_last", "v_one"], [f"v_{axis}_end"]),
        ]  # fmt: skip
    # at least min_px: end = max(end, min(start, S - m) + m), start = min(start, end - m)
    nodes += [
        helper.make_node("Concat", ["v_rows_first", "v_cols_first"], ["v_first"], axis=0),
        helper.make_node("Concat", ["v_rows_end", "v_cols_end"], ["v_end"], axis=0),
        helper.make_node("Min", ["v_first", "v_room"], ["v_lo"]),
        helper.make_node("Add", ["v_lo", "v_min"], ["v_lo_end"]),
        helper.make_node("Max", ["v_end", "v_lo_end"], ["v_stop"]),
        helper.make_node("Sub", ["v_stop", "v_min"], ["v_stop_less"]),
        helper.make_node("Min", ["v_first", "v_stop_less"], ["v_start"]),
        helper.make_node("Slice", ["tile_in", "v_start", "v_stop", "v_axes_hw"], ["v_crop"]),
        helper.make_node("Unsqueeze", ["v_crop", "v_axis0"], ["tile_image"]),
        *inner.node,
        helper.make_node("Sub", ["v_size", "v_stop"], ["v_after"]),
        helper.make_node("Concat", ["v_zeros2", "v_start", "v_zeros2", "v_after"], ["v_pads"],
                         axis=0),
        helper.make_node("Pad", ["tile_probability", "v_pads"], ["v_full"], mode="constant"),
        helper.make_node("Squeeze", ["v_full", "v_axis0"], ["tile_out"]),
    ]  # fmt: skip
    inits = [
        _const("v_axes_cw", [0, 2], np.int64), _const("v_axes_ch", [0, 1], np.int64),
        _const("v_zero", 0.0), _const("v_one", [1], np.int64),
        _const("v_room", [tile - min_px] * 2, np.int64), _const("v_min", [min_px] * 2, np.int64),
        _const("v_size", [tile] * 2, np.int64), _const("v_axes_hw", [1, 2], np.int64),
        _const("v_axis0", [0], np.int64), _const("v_zeros2", [0, 0], np.int64),
    ]  # fmt: skip
    return helper.make_graph(
        nodes, "roadseg_tile",
        [helper.make_tensor_value_info("tile_in", TensorProto.FLOAT, [3, tile, tile])],
        [helper.make_tensor_value_info("tile_out", TensorProto.FLOAT, [1, tile, tile])],
        [*inits, *inner.initializer],
    )  # fmt: skip


def deepness_graph(models: list, tile: int):
    """The Deepness graph: input ``image`` ``(batch, 3, tile, tile)``, output
    ``probability`` ``(batch, 1, tile, tile)``; each tile of the batch on its own (ONNX
    ``Scan``) cropped to its :func:`valid_box`, :func:`~roadseg.export.build_graph`'s
    graph on the crop (free height and width), the mean probability padded back with
    zeros."""
    import onnx
    from onnx import TensorProto, helper

    min_px = max(int(min_side(m)) for m in models)
    scan = helper.make_node(
        "Scan", ["image"], ["probability"], num_scan_inputs=1,
        body=_tile_body(models, tile, min_px),
    )  # fmt: skip
    graph = helper.make_graph(
        [scan], "roadseg_deepness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, tile, tile])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1, tile, tile])],
    )  # fmt: skip
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="roadseg",
        doc_string=f"Road probability of {tile}x{tile} RGB tiles in [0, 1], for QGIS "
        "Deepness: see metadata_props.",
    )  # fmt: skip
    proto.ir_version = min(proto.ir_version, 10)  # what onnxruntime 1.17+ reads
    onnx.checker.check_model(proto, full_check=True)
    return proto


def deepness_tiles(images: np.ndarray, tile: int, *, zeros_below: bool = False) -> np.ndarray:
    """Tiles ``(N, tile, tile, 3)`` uint8 as Deepness cuts them from 8-bit RGB images
    ``(N, H, W, 3)`` at their top-left corner, zero-padded where the image ends: above
    and to the right as Deepness pads (its extent grows north and east), or below and to
    the right with ``zeros_below``."""
    out = np.zeros((images.shape[0], tile, tile, 3), np.uint8)
    h, w = min(tile, images.shape[1]), min(tile, images.shape[2])
    rows = slice(0, h) if zeros_below else slice(tile - h, tile)
    out[:, rows, :w] = images[:, :h, :w, :3]
    return out


def deepness_input(
    tiles: np.ndarray, mean=STANDARDIZATION_MEAN, std=STANDARDIZATION_STD
) -> np.ndarray:
    """What Deepness feeds the graph for uint8 tiles ``(N, S, S, C)``, step by step as its
    ``preprocessing_utils``: divided by 255 (float32), standardised, NHWC -> NCHW."""
    x = np.float32(tiles * 1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)), dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """RGB ``(3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8, as a QGIS layer holds it."""
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def deepness_metadata(
    options, contents: list[dict], *, tile: int, overlap: int, min_px: int
) -> dict:
    """The metadata of a Deepness export (JSON strings): Deepness's keys, then roadseg's."""
    from roadseg.imagery import ensemble_imagery

    roadseg = export_metadata(options, contents)
    pixel = json.loads(roadseg["roadseg_decision"])["pixel"]
    resolution = ensemble_imagery(list(options.ckpt), contents).resolution
    values = {
        "model_type": MODEL_TYPE,
        "class_names": {"0": CLASS_NAME},
        **({"resolution": round(resolution * 100, 6)} if resolution else {}),
        "tiles_size": tile,
        "tile_size": tile,
        "tiles_overlap": overlap,
        "seg_thresh": pixel,
        "seg_small_segment": 0,
        "standardization_mean": list(STANDARDIZATION_MEAN),
        "standardization_std": list(STANDARDIZATION_STD),
    }
    metadata = {k: json.dumps(v) for k, v in values.items()}
    metadata.update(roadseg)
    metadata["roadseg_input"] = json.dumps(
        f"image: float32 (batch, 3, {tile}, {tile}), RGB in [0, 1] (8-bit / 255; Deepness's "
        "standardisation is the identity); tiles past the layer's edge zero-padded: each "
        "tile is cropped to its rows and columns from the first to the last non-zero one "
        "(at least roadseg_min_side) and predicted as an image"
    )
    metadata["roadseg_outputs"] = json.dumps(
        f"probability: (batch, 1, {tile}, {tile}) mean road probability (sigmoid), 0 in "
        "a tile's cropped-off padding; a pixel is road at or above seg_thresh"
    )
    metadata["roadseg_min_side"] = json.dumps(min_px)
    metadata["roadseg_deepness"] = json.dumps(
        {"tile": tile, "overlap_percent": overlap, "keys_checked_against": DEEPNESS}
    )
    return metadata


def compare_tiles(models: list, sess, images: list[np.ndarray], tile: int) -> float:
    """Largest |ONNX Runtime - PyTorch| of the mean probability over the Deepness tiles of
    ``images`` (``(3, H, W)`` in [0, 1]), each fed as Deepness feeds it (zeros above and
    to the right, and below and to the right): PyTorch's on the :func:`valid_box` of the
    tile, zeros around it."""
    import torch

    min_px = max(int(min_side(m)) for m in models)
    worst = 0.0
    for image in images:
        for below in (False, True):
            x = deepness_input(deepness_tiles(to_uint8(image)[None], tile, zeros_below=below))
            r0, r1, c0, c1 = valid_box(x[0], min_px)
            ref = np.zeros((1, 1, tile, tile), np.float32)
            with torch.inference_mode():
                t = torch.from_numpy(np.ascontiguousarray(x[:, :, r0:r1, c0:c1]))
                probs = torch.stack([torch.sigmoid(m(t)) for m in models]).mean(0)
            ref[:, :, r0:r1, c0:c1] = probs.numpy()
            (out,) = sess.run(["probability"], {"image": x})
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export_deepness(
    options,
    out: str | Path,
    *,
    tile: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
    check_data: str | None = None,
) -> DeepnessReport:
    """Export ``options``' checkpoints (their mean when several) for Deepness to ``out``,
    checked against PyTorch on Deepness-style tiles of real images (``check_data``,
    default: the data the first checkpoint trained on); nothing is written when they
    disagree by more than :data:`~roadseg.export.TOLERANCE`."""
    require_onnx()

    if options.merge == "vote":
        raise RoadsegError(
            "Deepness reads one probability map and thresholds it: export the members' "
            "mean (--merge mean), not a vote"
        )
    if not 0 <= overlap < 100:
        raise RoadsegError(f"--tile-overlap is a percentage of the tile: 0 to 99, got {overlap}")
    contents, models = load_models(options)
    min_px = max(int(min_side(m)) for m in models)
    if tile < min_px:
        raise RoadsegError(f"--tile-size {tile} is below what the network takes ({min_px} px)")
    metadata = deepness_metadata(options, contents, tile=tile, overlap=overlap, min_px=min_px)
    proto = deepness_graph(models, tile)
    images, checked = check_images(check_data or check_source(contents[0]))
    checked = f"{tile}x{tile} Deepness tiles (zero-padded, cropped to the valid part) of {checked}"
    worst = compare_tiles(models, session(proto), images, tile)
    write_checked(proto, metadata, out, worst=worst, checked=checked, graph="Deepness graph")
    notes = []
    grid = math.lcm(*(int(min_side(m)) for m in models))
    step = tile - int(tile * overlap / 100 * 2) // 2  # Deepness's tile stride (ProcessingOverlap)
    if step % grid:
        notes.append(
            f"Deepness will start a tile every {step} px, not a multiple of the network's "
            f"{grid} px grid: tiles are seen at other phases of it than roadseg's, and "
            "probabilities differ from roadseg's more than from context alone (choose "
            "--tile-size and --tile-overlap so that the stride is a multiple)"
        )
    decision = json.loads(metadata["roadseg_decision"])
    if decision.get("close_gaps", 0) > 1 or decision.get("min_area", 0) > 1:
        notes.append(
            "the decision's clean-up (close_gaps/min_area) has no Deepness key: Deepness "
            "applies the pixel threshold only"
        )
    if "resolution" not in metadata:
        notes.append("the checkpoint does not know its resolution: set it in Deepness")
    return DeepnessReport(Path(out), len(models), worst, checked, metadata, tuple(notes))
