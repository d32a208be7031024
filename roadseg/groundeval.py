"""Scores on ground, not tiles: a scene-trained checkpoint's held-out blocks, predicted by
any model (the fine-tuned one and the one it started from) and scored side by side.

The held-out blocks are those the checkpoint recorded (:mod:`roadseg.scenedata`), made
again from its data arguments and checked against the record by content. Each block is
read as ``predict`` reads a scene (onto the predicting model's imagery and resolution)
with ``margin`` pixels of the scene around it, predicted, and scored on its labelled
pixels: pixel road F1, and patch F1 and accuracy over the 16 px patches whose pixels are
all labelled. Intervals: the middle 95% of a bootstrap over blocks; the difference of two
models is bootstrapped paired (the same blocks drawn for both).
"""

from __future__ import annotations

import numpy as np

from roadseg.errors import RoadsegError
from roadseg.labels import IGNORE, ROAD
from roadseg.patches import PATCH_SIZE

COUNTS = ("tp", "fp", "fn", "patch_tp", "patch_fp", "patch_fn", "patch_tn")
MARGIN = 64  # pixels of the scene around a block, at the model's resolution


def is_scene_checkpoint(ckpt: dict) -> bool:
    from roadseg.checkpoints import recorded_split

    record = recorded_split(ckpt)
    return bool(record and record.get("kind") == "scenes")


def scene_record(ckpt: dict, path) -> dict:
    """The scenes, block parameters and held-out blocks a scene-trained checkpoint (or its
    exported file) recorded; refused when it holds no held-out block."""
    from roadseg.checkpoints import recorded_split

    record = recorded_split(ckpt)
    if not record.get("val"):
        raise RoadsegError("trained without held-out blocks (every labelled block trained): "
                           "nothing it has not seen to score it on", path)  # fmt: skip
    return record


def scene_inputs(record: dict) -> list[str]:
    """The files a scene-trained checkpoint read: scenes, labels, AOIs, holdout."""
    files = [s[k] for s in record["scenes"] for k in ("image", "labels", "aoi") if s.get(k)]
    return [*files, *(record[k] for k in ("holdout", "list") if record.get(k))]


def held_out(ckpt: dict, path, imagery):
    """The checkpoint's held-out blocks (:class:`~roadseg.scenedata.SceneData`), made again
    from its record, the scenes read onto ``imagery``; refused when they are not the ones
    it recorded (a scene or its labels changed)."""
    from roadseg.scenedata import SceneData

    record = scene_record(ckpt, path)
    data = SceneData(record["scenes"], block=record["block"], seed=record["seed"],
                     val_fraction=record["val_fraction"], holdout=record.get("holdout"),
                     imagery=imagery, crop_size=record.get("crop_size", 256))  # fmt: skip
    was = {e["sha256"] for e in record["val"]}
    now = {e["sha256"] for e in data.split_record()["val"]}
    if was != now:
        raise RoadsegError(
            f"the held-out blocks made from the scenes present are not the {len(was)} the "
            f"checkpoint recorded ({len(was & now)} shared): a scene, its labels or its AOI "
            "changed; put the files back as it trained on them",
            path,
        )
    return data


def block_maps(predictor, data, margin: int = MARGIN):
    """Each held-out block's (probabilities, target) on the model's grid: the block read
    with ``margin`` px of its scene around it, predicted, and cut back to the block."""
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    for block in tqdm(data.val, desc="held-out blocks", unit="block",
                      disable=not predictor.progress):  # fmt: skip
        scene = data.scenes[block.scene]
        down, across = scene.reader.scales
        my, mx = round(margin / down), round(margin / across)
        w = block.window
        y0, x0 = max(0, int(w.row_off) - my), max(0, int(w.col_off) - mx)
        y1 = min(scene.src.height, int(w.row_off + w.height) + my)
        x1 = min(scene.src.width, int(w.col_off + w.width) + mx)
        image, target = scene.read(Window(x0, y0, x1 - x0, y1 - y0))
        prob = predictor.predict_image(image)
        h, wd = target.shape  # the block inside, on the model's grid
        rows = slice(round((w.row_off - y0) * h / (y1 - y0)),
                     round((w.row_off + w.height - y0) * h / (y1 - y0)))  # fmt: skip
        cols = slice(round((w.col_off - x0) * wd / (x1 - x0)),
                     round((w.col_off + w.width - x0) * wd / (x1 - x0)))  # fmt: skip
        yield prob[rows, cols], target[rows, cols]


def block_counts(predictor, decision, data, margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Each held-out block's :data:`COUNTS` ``(blocks, 7)`` and APLS ``(blocks,)`` (the
    centre lines of its predicted roads against those of its labels, on labelled ground;
    :mod:`roadseg.apls`)."""
    from roadseg.apls import mask_apls

    rows, routes = [], []
    for prob, target in block_maps(predictor, data, margin):
        mask, keep = decision.mask(prob).astype(bool), target != IGNORE
        rows.append(counts(mask, target, decision.patch))
        routes.append(mask_apls((target == ROAD) & keep, mask & keep))
    return np.array(rows, dtype=np.float64), np.array(routes, dtype=np.float64)


def grid_counts(maps: list, pixels, patches) -> np.ndarray:
    """Summed :data:`COUNTS` ``(len(pixels), len(patches), 7)`` of stored block maps at
    every pair of thresholds (no clean-up); what :func:`counts` gives pair by pair."""
    out = np.zeros((len(pixels), len(patches), len(COUNTS)))
    for prob, target in maps:
        keep = target != IGNORE
        truth = (target == ROAD) & keep
        whole = _patches(keep) == 1
        true_p = (_patches(truth) > 0.25)[whole]
        for i, p in enumerate(pixels):
            pred = (prob > p) & keep
            out[i, :, :3] += [(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()]
            means = _patches(pred)[whole]
            for j, q in enumerate(patches):
                pred_p = means > q
                out[i, j, 3:] += [(pred_p & true_p).sum(), (pred_p & ~true_p).sum(),
                                  (~pred_p & true_p).sum(), (~pred_p & ~true_p).sum()]  # fmt: skip
    return out


def _patches(a: np.ndarray) -> np.ndarray:
    """Means of the whole 16 px patches of ``a`` from its top-left corner."""
    h, w = (s // PATCH_SIZE * PATCH_SIZE for s in a.shape)
    blocks = a[:h, :w].astype(np.float32)
    return blocks.reshape(h // PATCH_SIZE, PATCH_SIZE, w // PATCH_SIZE, PATCH_SIZE).mean((1, 3))


def counts(pred: np.ndarray, target: np.ndarray, patch_threshold: float) -> list[float]:
    """The :data:`COUNTS` of a predicted mask against a target with :data:`IGNORE`."""
    keep = target != IGNORE
    truth, pred = (target == ROAD) & keep, pred.astype(bool) & keep
    whole = _patches(keep) == 1
    true_p = (_patches(truth) > 0.25)[whole]
    pred_p = (_patches(pred) > patch_threshold)[whole]
    return [
        (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum(),
        (pred_p & true_p).sum(), (pred_p & ~true_p).sum(), (~pred_p & true_p).sum(),
        (~pred_p & ~true_p).sum(),
    ]  # fmt: skip


def scores(total: np.ndarray) -> dict[str, float]:
    """Pixel F1, patch F1 and patch accuracy of summed :data:`COUNTS` (last axis)."""
    tp, fp, fn, ptp, pfp, pfn, ptn = np.moveaxis(np.asarray(total, np.float64), -1, 0)
    return {
        "patch_f1": 2 * ptp / np.maximum(2 * ptp + pfp + pfn, 1),
        "patch_accuracy": (ptp + ptn) / np.maximum(ptp + ptn + pfp + pfn, 1),
        "pixel_f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1),
    }


def intervals(per_block: list[np.ndarray], routes: list[np.ndarray] | None = None, *,
              draws: int = 2000, seed: int = 0) -> list[dict]:  # fmt: skip
    """For each model's ``(blocks, 7)`` counts (and per-block APLS): each score's middle 95%
    over a bootstrap of blocks; the same draws for every model, so differences are paired
    (last entry: the last model minus the first, when there are two or more)."""
    rng = np.random.default_rng(seed)
    n = per_block[0].shape[0]
    picks = rng.integers(0, n, size=(draws, n))
    drawn = [scores(c[picks].sum(axis=1)) for c in per_block]
    for d, r in zip(drawn, routes or [], strict=False):
        d["apls"] = r[picks].mean(axis=1)
    out = [{k: tuple(np.percentile(v, [2.5, 97.5]).tolist()) for k, v in d.items()} for d in drawn]
    if len(drawn) > 1:
        out.append({k: tuple(np.percentile(drawn[-1][k] - drawn[0][k], [2.5, 97.5]).tolist())
                    for k in drawn[0]})  # fmt: skip
    return out
