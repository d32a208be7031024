"""Trained checkpoints -> one ONNX file for QGIS's Deepness plugin (Deep Neural Remote Sensing).

The graph is :func:`roadseg.export.build_graph`'s, narrowed to what Deepness runs: input
``image`` float32 ``(batch, 3, S, S)``, RGB in [0, 1], ``S`` the tile size (square, fixed),
and one output ``probability`` ``(batch, 1, S, S)``, the ensemble's mean road probability
after the sigmoid (one class map: Deepness reads every output as a head
``(batch, classes, S, S)`` and thresholds a one-channel head at ``seg_thresh``). The
normalisation, input scale and padding to the network's stride stay inside the graph.

Deepness feeds each tile as 8-bit RGB divided by 255, then standardised as
``(x - standardization_mean) / standardization_std`` (per channel), NCHW; tiles that run
past the layer's edge are padded with zeros. The metadata's standardisation is therefore
the identity (mean 0, std 1): the graph gets RGB in [0, 1], what it normalises itself.

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
    TOLERANCE,
    build_graph,
    check_images,
    export_metadata,
    min_side,
    require_onnx,
    session,
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


def deepness_graph(models: list, tile: int):
    """:func:`~roadseg.export.build_graph` with a square input of ``tile`` px and only the
    mean probability as output (``members`` dropped)."""
    import onnx

    proto = build_graph(models)
    graph = proto.graph
    keep = [o for o in graph.output if o.name == "probability"]
    del graph.output[:]
    graph.output.extend(keep)
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_value = tile  # replaces the free "height"/"width" (one of)
        dims[3].dim_value = tile
    proto.doc_string = (
        f"Road probability of {tile}x{tile} RGB tiles in [0, 1], for QGIS Deepness: "
        "see metadata_props."
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def deepness_tiles(images: np.ndarray, tile: int) -> np.ndarray:
    """Tiles ``(N, tile, tile, 3)`` uint8 as Deepness cuts them from 8-bit RGB images
    ``(N, H, W, 3)`` at their top-left corner: zero-padded where the image ends."""
    out = np.zeros((images.shape[0], tile, tile, 3), np.uint8)
    h, w = min(tile, images.shape[1]), min(tile, images.shape[2])
    out[:, :h, :w] = images[:, :h, :w, :3]
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
        "standardisation is the identity); tiles past the layer's edge zero-padded"
    )
    metadata["roadseg_outputs"] = json.dumps(
        f"probability: (batch, 1, {tile}, {tile}) mean road probability (sigmoid); a pixel "
        "is road at or above seg_thresh"
    )
    metadata["roadseg_min_side"] = json.dumps(min_px)
    metadata["roadseg_deepness"] = json.dumps(
        {"tile": tile, "overlap_percent": overlap, "keys_checked_against": DEEPNESS}
    )
    return metadata


def compare_tiles(models: list, sess, images: list[np.ndarray], tile: int) -> float:
    """Largest |ONNX Runtime - PyTorch| of the mean probability over the Deepness tiles of
    ``images`` (``(3, H, W)`` in [0, 1]), each fed as Deepness feeds it."""
    import torch

    worst = 0.0
    for image in images:
        x = deepness_input(deepness_tiles(to_uint8(image)[None], tile))
        with torch.inference_mode():
            t = torch.from_numpy(x)
            ref = torch.stack([torch.sigmoid(m(t)) for m in models]).mean(0).numpy()
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
    import onnx

    from roadseg.checkpoints import trained_root
    from roadseg.io import atomic_path
    from roadseg.task import RoadSegTask

    if options.merge == "vote":
        raise RoadsegError(
            "Deepness reads one probability map and thresholds it: export the members' "
            "mean (--merge mean), not a vote"
        )
    if not 0 <= overlap < 100:
        raise RoadsegError(f"--tile-overlap is a percentage of the tile: 0 to 99, got {overlap}")
    contents = options.read_checkpoints()
    models = [
        RoadSegTask.from_checkpoint(p, ckpt=c).model.eval()
        for p, c in zip(options.ckpt, contents, strict=True)
    ]
    min_px = max(int(min_side(m)) for m in models)
    if tile < min_px:
        raise RoadsegError(f"--tile-size {tile} is below what the network takes ({min_px} px)")
    metadata = deepness_metadata(options, contents, tile=tile, overlap=overlap, min_px=min_px)
    proto = deepness_graph(models, tile)
    images, checked = check_images(check_data or trained_root(contents[0]))
    checked = f"{tile}x{tile} Deepness tiles (zero-padded) of {checked}"
    worst = compare_tiles(models, session(proto), images, tile)
    metadata["roadseg_check"] = json.dumps(
        {"max_abs_diff": worst, "tolerance": TOLERANCE, "on": checked}
    )
    if not worst <= TOLERANCE:
        raise RoadsegError(
            f"the Deepness graph disagrees with PyTorch by {worst:.2e} in probability on "
            f"{checked} (tolerance {TOLERANCE:g}); nothing was written",
            out,
        )
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
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(out, suffix=".tmp.onnx") as tmp:
        onnx.save(proto, str(tmp))
    return DeepnessReport(Path(out), len(models), worst, checked, metadata, tuple(notes))
