"""roadseg export --deepness: an ONNX file for QGIS's Deepness plugin.

Deepness is checked against as PUTvision/qgis-plugin-deepness documents and reads it:
docs/source/creators/creators_add_metadata_to_model.rst (the table of metadata keys, their
types and units), docs/source/creators/creators_description_classes.rst (square input
``[BATCH, CHANNELS, SIZE, SIZE]``, one output ``[BATCH, CLASSES, SIZE, SIZE]``, uint8 input,
tiles zero-padded at the layer's border) and src/deepness/processing/models/model_base.py
with preprocessing_utils.py (how each key is parsed; input = uint8 / 255, then
``(x - standardization_mean) / standardization_std``, NHWC -> NCHW). Where the zeros go:
processing/extent_utils.py (calculate_extended_processing_extent grows the extent's
yMaximum and xMaximum, north and east, to whole tiles) and processing/tile_params.py
(tiles cut from the extent's north-west corner): zero rows above the layer, zero columns
to its right. :func:`deepness_reads` and :func:`as_deepness_feeds` below repeat those
steps here, independently of roadseg.deepness.
"""

import ast
import json

import numpy as np
import rasterio
import torch

from roadseg import export
from roadseg.cli import main
from roadseg.deepness import deepness_graph, valid_box
from roadseg.export import min_side, session
from roadseg.io import read_image
from roadseg.models import create_model
from roadseg.predict import Predictor
from roadseg.task import RoadSegTask
from tests.conftest import smooth_map, write_small_checkpoint

SMALL = {"encoder": "resnet18", "encoder_weights": None, "encoder_depth": 3,
         "decoder_channels": [16, 8, 8]}  # fmt: skip
# Largest |Deepness graph - roadseg's Predictor| over a padded tile's valid part: the graph
# crops the padding off, so only float noise is left (about 1e-6)
TOLERANCE = 1e-4


def write_half_scale_checkpoint(path):
    """An untrained small U-Net that sees its input at half scale, as a roadseg checkpoint."""
    torch.manual_seed(1)
    args = {**SMALL, "input_scale": 0.5}
    weights = create_model("unet", **args).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()},
                "hyper_parameters": {"model": "unet", "model_args": args}}, path)  # fmt: skip
    return path


def deepness_reads(path) -> dict:
    """The metadata as Deepness's ModelBase parses it (get_metadata_model_type,
    get_outputs_channel_names, get_metadata_resolution, get_metadata_tile_size,
    get_metadata_tiles_overlap, get_metadata_segmentation_threshold,
    get_metadata_segmentation_small_segment, get_metadata_standarization_parameters)."""
    meta = session(path).get_modelmeta().custom_metadata_map
    try:
        names = json.loads(meta["class_names"])
    except json.JSONDecodeError:
        names = ast.literal_eval(meta["class_names"])
    names = [names] if isinstance(names, dict) else names
    heads = []
    for head in names:
        ordered = sorted(head.items(), key=lambda kv: int(kv[0]))
        assert [int(k) for k, _ in ordered] == list(range(len(ordered)))  # consecutive ids
        heads.append([v for _, v in ordered])
    return {
        "model_type": str(json.loads(meta["model_type"])).capitalize(),
        "class_names": heads,
        "resolution": float(json.loads(meta["resolution"])),
        "tile_size": int(json.loads(meta["tile_size"])),
        "tiles_overlap": int(json.loads(meta["tiles_overlap"])),
        "seg_thresh": float(json.loads(meta["seg_thresh"])),
        "seg_small_segment": int(json.loads(meta["seg_small_segment"])),
        "mean": [float(v) for v in json.loads(meta["standardization_mean"])],
        "std": [float(v) for v in json.loads(meta["standardization_std"])],
    }


def as_deepness_feeds(rgb8: np.ndarray, size: int, mean, std, *, north=True) -> np.ndarray:
    """One tile ``(1, 3, size, size)`` of an 8-bit layer ``(H, W, C)`` no larger than it, as
    Deepness builds it: zeros where the layer ends (above it and to its right, as Deepness
    grows the extent; below and to the right with ``north=False``), channels cut to the
    model's 3, / 255, standardised, NHWC -> NCHW."""
    tile = np.zeros((1, size, size, rgb8.shape[2]), np.uint8)
    h, w = rgb8.shape[:2]
    top = size - h if north else 0
    tile[0, top : top + h, :w] = rgb8
    tile = tile[:, :, :, :3]
    x = np.float32(tile * 1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.transpose(x, (0, 3, 1, 2))


def mean_prob(models, x: np.ndarray) -> np.ndarray:
    """PyTorch's mean probability ``(B, 1, H, W)`` of ``models`` on ``x`` ``(B, 3, H, W)``."""
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x))
        return torch.stack([torch.sigmoid(m(t)) for m in models]).mean(0).numpy()


def test_graph_takes_square_tiles_and_gives_one_probability_map():
    torch.manual_seed(0)
    models = [create_model("unet", **SMALL).eval(), create_model("unet", **SMALL).eval()]
    sess = session(deepness_graph(models, 128))
    (inp,), outs = sess.get_inputs(), sess.get_outputs()
    assert inp.shape == ["batch", 3, 128, 128]
    assert [(o.name, o.shape) for o in outs] == [("probability", ["batch", 1, 128, 128])]
    x = smooth_map(128, 256, seed=1).astype(np.float32) / 255
    x = np.stack([x[:, :, :128], x[:, :, 128:]])  # a batch of two tiles
    (prob,) = sess.run(None, {"image": x})
    with torch.inference_mode():
        ref = torch.stack([torch.sigmoid(m(torch.from_numpy(x))) for m in models]).mean(0)
    assert prob.shape == (2, 1, 128, 128)
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert np.abs(prob - ref.numpy()).max() < 1e-4


def test_each_tile_of_a_batch_is_cropped_to_its_valid_part():
    """Zeros above / right / both, a strip narrower than the network takes, an all-zero
    tile and an inner tile in one batch: each is PyTorch's prediction of its valid part
    (widened to the network's minimum side), zeros around it."""
    torch.manual_seed(0)
    half = {**SMALL, "input_scale": 0.5}
    models = [create_model("unet", **SMALL).eval(), create_model("unet", **half).eval()]
    least = max(int(min_side(m)) for m in models)
    assert least == 64
    sess = session(deepness_graph(models, 128))
    full = smooth_map(128, 128, seed=2).astype(np.float32) / 255
    x = np.zeros((6, 3, 128, 128), np.float32)
    x[0, :, 40:, :] = full[:, 40:]  # the first row of tiles: zeros above
    x[1, :, :, :90] = full[:, :, :90]  # the last column: zeros to the right
    x[2, :, 30:, :100] = full[:, 30:, :100]  # a layer smaller than the tile
    x[3, :, 100:, :] = full[:, 100:]  # 28 rows: narrower than the network takes
    x[5] = full  # an inner tile; x[4] is all zeros
    boxes = [valid_box(t, least) for t in x]
    assert boxes == [(40, 128, 0, 128), (0, 128, 0, 90), (30, 128, 0, 100),
                     (64, 128, 0, 128), (0, 128, 0, 128), (0, 128, 0, 128)]  # fmt: skip
    (prob,) = sess.run(None, {"image": x})
    assert prob.shape == (6, 1, 128, 128)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        ref = np.zeros((1, 1, 128, 128), np.float32)
        ref[:, :, r0:r1, c0:c1] = mean_prob(models, x[i : i + 1, :, r0:r1, c0:c1])
        assert np.abs(prob[i : i + 1] - ref).max() < TOLERANCE, i
    (alone,) = sess.run(None, {"image": x[:1]})  # the same tile alone
    assert np.abs(alone - prob[:1]).max() < 1e-6


def test_export_fills_deepness_metadata_and_a_fed_tile_is_roadsegs_prediction(
    cil_root, tmp_path, capsys
):
    a = write_small_checkpoint(tmp_path / "a.ckpt")
    b = write_half_scale_checkpoint(tmp_path / "b.ckpt")
    out = tmp_path / "roads.onnx"
    args = ["export", "--deepness", "--tile-size", "256", "--ckpt", str(a), "--ckpt", str(b),
            "--out", str(out), "--check-data", str(cil_root), "--pixel-threshold", "0.4"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "for QGIS Deepness: 2 members (mean), 256x256 tiles" in printed
    for line in ('  model_type: "Segmentor"', '  class_names: {"0": "road"}', "  resolution: 50.0",
                 "  tiles_size: 256", "  tiles_overlap: 25", "  seg_thresh: 0.4"):  # fmt: skip
        assert line in printed.splitlines()

    raw = session(out).get_modelmeta().custom_metadata_map
    assert json.loads(raw["model_type"]) == "Segmentor"  # documented: str
    assert json.loads(raw["class_names"]) == {"0": "road"}  # dict id -> name, one channel
    assert json.loads(raw["resolution"]) == 50.0  # float, cm/px: the checkpoints' 0.5 m/px
    assert json.loads(raw["tiles_size"]) == 256  # documented spelling, int px
    assert json.loads(raw["tile_size"]) == 256  # the spelling model_base.py reads
    assert json.loads(raw["tiles_overlap"]) == 25  # int, percent
    assert json.loads(raw["seg_thresh"]) == 0.4  # float: the decision's pixel threshold
    assert json.loads(raw["seg_small_segment"]) == 0  # int: Deepness's median filter off
    assert json.loads(raw["roadseg_decision"])["pixel"] == 0.4  # roadseg's own kept
    assert json.loads(raw["roadseg_check"])["max_abs_diff"] <= 1e-4
    assert len(json.loads(raw["roadseg_sources"])) == 2
    assert deepness_reads(out) == {
        "model_type": "Segmentor", "class_names": [["road"]], "resolution": 50.0,
        "tile_size": 256, "tiles_overlap": 25, "seg_thresh": 0.4, "seg_small_segment": 0,
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
    }  # fmt: skip
    sess = session(out)
    assert sess.get_inputs()[0].shape == ["batch", 3, 256, 256]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [
        ("probability", ["batch", 1, 256, 256])
    ]

    # a 200 x 230 layer: one tile, zero-padded above and to the right, as Deepness feeds it
    rgb8 = smooth_map(200, 230, seed=4).transpose(1, 2, 0)
    read = deepness_reads(out)
    (prob,) = sess.run(None, {"image": as_deepness_feeds(rgb8, 256, read["mean"], read["std"])})
    models = [RoadSegTask.from_checkpoint(str(p)).model.eval() for p in (a, b)]
    ours = Predictor(models, backend="torch", progress=False).predict_image(
        rgb8.transpose(2, 0, 1).astype(np.float32) / 255
    )
    assert np.abs(prob[0, 0, 56:, :230] - ours).max() < TOLERANCE  # all the valid part
    assert not prob[0, 0, :56].any() and not prob[0, 0, :, 230:].any()  # zeros off the layer


def test_deepness_options_are_checked(cil_root, tmp_path, capsys, monkeypatch):
    a = write_small_checkpoint(tmp_path / "a.ckpt")
    b = write_small_checkpoint(tmp_path / "b.ckpt")
    base = ["export", "--ckpt", str(a), "--check-data", str(cil_root)]
    assert main([*base, "--out", str(tmp_path / "x.onnx"), "--tile-size", "256"]) == 2
    assert "--tile-size and --tile-overlap are for --deepness" in capsys.readouterr().err
    vote = [
        *base,
        "--ckpt",
        str(b),
        "--merge",
        "vote",
        "--deepness",
        "--out",
        str(tmp_path / "v.onnx"),
    ]
    assert main(vote) == 2
    assert "not a vote" in capsys.readouterr().err
    small = [*base, "--deepness", "--tile-size", "16", "--out", str(tmp_path / "s.onnx")]
    assert main(small) == 2
    assert "below what the network takes" in capsys.readouterr().err
    monkeypatch.setattr(export, "TOLERANCE", 0.0)  # the one self-check's (export.write_checked)
    refused = [*base, "--deepness", "--tile-size", "64", "--out", str(tmp_path / "r.onnx")]
    assert main(refused) == 2
    assert "disagrees with PyTorch" in capsys.readouterr().err
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tmp*"))
    # 100 px tiles every 90 px: off the network's 32 px grid, said
    odd = [*base, "--deepness", "--tile-size", "100", "--tile-overlap", "10",
           "--out", str(tmp_path / "odd.onnx")]  # fmt: skip
    assert main(odd) == 0
    assert "not a multiple of the network's 32 px grid" in capsys.readouterr().out


def test_a_real_tile_fed_as_deepness_feeds_it_is_roadsegs_prediction(shared_data, tmp_path, capsys):
    """A cil-2022 tile (400 x 400 RGBA) in a 512 px Deepness tile, zero-padded above and
    to the right (and below and to the right): roadseg's probability over all of it."""
    training = shared_data / "cil-2022" / "training"
    ckpt = write_small_checkpoint(tmp_path / "a.ckpt")
    out = tmp_path / "roads.onnx"
    args = ["export", "--deepness", "--ckpt", str(ckpt), "--out", str(out),
            "--check-data", str(training)]  # fmt: skip
    assert main(args) == 0
    assert "512x512 Deepness tiles (zero-padded, cropped to the valid part) of 3 images" in (
        capsys.readouterr().out
    )
    read = deepness_reads(out)
    assert (read["tile_size"], read["seg_thresh"], read["resolution"]) == (512, 0.5, 50.0)

    path = sorted((training / "images").glob("*.png"))[0]
    with rasterio.open(path) as src:
        rgba8 = src.read().transpose(1, 2, 0)  # (400, 400, 4) uint8, as QGIS holds the layer
    assert rgba8.shape == (400, 400, 4) and rgba8.dtype == np.uint8
    feeds = [
        as_deepness_feeds(rgba8, 512, read["mean"], read["std"], north=n) for n in (True, False)
    ]
    (prob,) = session(out).run(None, {"image": np.concatenate(feeds)})
    model = RoadSegTask.from_checkpoint(str(ckpt)).model.eval()
    ours = Predictor([model], backend="torch", progress=False).predict_image(read_image(path))
    assert np.abs(prob[0, 0, 112:, :400] - ours).max() < TOLERANCE  # zeros above, right
    assert np.abs(prob[1, 0, :400, :400] - ours).max() < TOLERANCE  # zeros below, right
