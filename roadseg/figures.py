"""The paper's figures: learning curves, predictions, and what a network learned.

Every figure is a PNG written atomically under one folder:

- ``learning_curves.png``: training loss per step and validation patch F1 per epoch of
  each method's run;
- ``overlays.png``: predictions on validation tiles, true positives green, false
  positives red, false negatives blue over the image;
- ``pr_curve.png``: precision-recall curve of patch labels (a patch's score is its mean
  road probability), with the operating point of the decision ``submit`` uses (the tuned
  thresholds when ``roadseg tune`` stored them, else 0.5/0.25);
- ``filters.png``: the first convolution layer's filters as RGB images;
- ``saliency.png``: the gradient of a patch's road score with respect to the input;
- ``occlusion.png``: how much that score drops while a grey square covers each place;
- ``tsne.png``: t-SNE of patch embeddings (the features the classifier layer sees,
  averaged over each 16x16 patch), coloured by the true label;
- ``class_model.png``: an input optimised by gradient ascent to maximise the road score
  of its centre patch (class-model visualisation).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from roadseg.io import atomic_path, read_image, read_mask_grey  # noqa: E402
from roadseg.patches import PATCH_SIZE, labels_to_mask, patch_labels, patch_means  # noqa: E402
from roadseg.postprocess import Decision  # noqa: E402

FIGURES = (
    "learning_curves.png", "overlays.png", "pr_curve.png", "filters.png", "saliency.png",
    "occlusion.png", "tsne.png", "class_model.png",
)  # fmt: skip


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(run_dirs: dict[str, Path], out: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, run_dir) in enumerate(run_dirs.items()):
        colour = plt.cm.tab20(2 * i % 20 + i // 10 % 2)  # dark shades first, then light
        metrics = pd.read_csv(Path(run_dir) / "metrics.csv")
        steps = metrics.dropna(subset=["train_loss_step"]) if "train_loss_step" in metrics else None
        if steps is not None and len(steps):
            ax_loss.plot(steps["step"], steps["train_loss_step"], label=name, lw=1, color=colour)
        val = metrics.dropna(subset=["val_patch_f1"])
        ax_f1.plot(val["epoch"], val["val_patch_f1"], marker="o", ms=3, label=name, color=colour)
    ax_f1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel="step", ylabel="training loss", title="training loss", yscale="log")
    ax_f1.set(xlabel="epoch", ylabel="patch F1", title="validation patch F1")
    ax_f1.legend(fontsize=7, ncol=2)
    ax_loss.grid(alpha=0.3)
    ax_f1.grid(alpha=0.3)
    return save(fig, out / "learning_curves.png")


# Okabe-Ito colours, told apart with every common colour-vision deficiency
HIT, FALSE_ROAD, MISSED = (0.0, 0.447, 0.698), (0.902, 0.624, 0.0), (0.8, 0.475, 0.655)
OUTCOMES = "blue: road found, orange: false road, purple: road missed"


def overlay(image: np.ndarray, prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)``: true positives blue, false positives orange, false negatives
    purple (:data:`OUTCOMES`)."""
    rgb = image.transpose(1, 2, 0).astype(np.float32) * 0.6
    pred, true = prob > 0.5, truth > 0.5
    colours = {(True, True): HIT, (True, False): FALSE_ROAD, (False, True): MISSED}
    for (p, t), colour in colours.items():
        where = (pred == p) & (true == t)
        rgb[where] = 0.4 * rgb[where] + 0.6 * np.array(colour, np.float32)
    return np.clip(rgb, 0, 1)


def overlays(
    frame: pd.DataFrame, probs: list[np.ndarray], out: Path, decision: Decision, n: int = 4
) -> Path:
    """Pixels and patches of ``n`` tiles as ``decision`` labels them, against the truth."""
    n = min(n, len(frame))
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6), squeeze=False)
    for i in range(n):
        image = read_image(frame["image"].iloc[i])
        truth = read_mask_grey(frame["mask"].iloc[i])
        axes[0, i].imshow(overlay(image, decision.mask(probs[i]).astype(np.float32), truth))
        axes[0, i].set_title(f"tile {frame['tile_id'].iloc[i]}: pixels", fontsize=9)
        h, w = truth.shape
        pred_p = labels_to_mask(decision.labels(probs[i]), h, w)
        true_p = labels_to_mask(patch_labels(truth), h, w)
        axes[1, i].imshow(overlay(image, pred_p.astype(np.float32), true_p.astype(np.float32)))
        axes[1, i].set_title("16x16 patches", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{decision.describe()}; {OUTCOMES}")
    return save(fig, out / "overlays.png")


def pr_curve(
    frame: pd.DataFrame, probs: list[np.ndarray], out: Path, label: str, decision: Decision
) -> Path:
    """Patch precision-recall curve, with the operating point of ``decision`` marked."""
    from sklearn.metrics import auc, precision_recall_curve

    scores = np.concatenate([patch_means(p).ravel() for p in probs])
    truth = np.concatenate([patch_labels(read_mask_grey(m)).ravel() for m in frame["mask"]])
    pred = np.concatenate([decision.labels(p).ravel() for p in probs])
    precision, recall, _ = precision_recall_curve(truth, scores)
    tp = float((pred * truth).sum())
    op_p, op_r = tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"{label} (area {auc(recall, precision):.3f})")
    f1 = 2 * op_p * op_r / max(op_p + op_r, 1e-9)
    accuracy = float((pred == truth).mean())
    ax.plot(
        op_r, op_p, "o", color="C3",
        label=f"{decision.describe()}: F1 {f1:.3f}, accuracy {accuracy:.3f}",
    )  # fmt: skip
    for level in (0.6, 0.7, 0.8, 0.9):  # iso-F1 lines
        r = np.linspace(level / (2 - level) + 1e-3, 1, 100)
        ax.plot(r, level * r / (2 * r - level), color="grey", lw=0.5, ls=":")
    ax.axhline(truth.mean(), color="grey", lw=0.8, ls="--", label="chance (road share)")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"road patches, {len(truth):,} validation patches")  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, out / "pr_curve.png")


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d | None:
    return next(
        (m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3), None
    )


def filters(model: torch.nn.Module, out: Path) -> Path:
    conv = first_conv(model)
    weight = conv.weight.detach().float().cpu().numpy()  # (n, 3, k, k)
    n = weight.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, w in enumerate(weight):
        w = (w - w.min()) / max(w.max() - w.min(), 1e-8)
        axes.ravel()[i].imshow(w.transpose(1, 2, 0), interpolation="nearest")
    k = weight.shape[-1]
    fig.suptitle(f"first layer: {n} filters of {k}x{k}x3", fontsize=10)
    return save(fig, out / "filters.png")


def road_patch(prob: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """Top-left pixel of the true road patch nearest the tile centre (the centre if none)."""
    labels = patch_labels(truth)
    rows, cols = np.nonzero(labels)
    centre = np.array(labels.shape) / 2 - 0.5
    if len(rows) == 0:
        r, c = (int(centre[0]), int(centre[1]))
    else:
        i = int(np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2))
        r, c = int(rows[i]), int(cols[i])
    return r * PATCH_SIZE, c * PATCH_SIZE


def patch_score(model, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """Mean road logit of the 16x16 patch at ``(r, c)`` of each image in ``x``: ``(B,)``."""
    return model(x)[:, 0, r : r + PATCH_SIZE, c : c + PATCH_SIZE].mean(dim=(-2, -1))


def saliency(model, image: np.ndarray, r: int, c: int, out: Path) -> Path:
    x = torch.from_numpy(image)[None].requires_grad_(True)
    patch_score(model, x, r, c).sum().backward()
    grad = x.grad[0].abs().amax(dim=0).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    axes[0].imshow(image.transpose(1, 2, 0))
    shown = axes[1].imshow(grad, cmap="inferno", vmax=np.percentile(grad, 99.5))
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="|d road logit / d pixel| (max of RGB)")
    for ax in axes:
        ax.add_patch(plt.Rectangle((c, r), PATCH_SIZE, PATCH_SIZE, fill=False, ec="cyan", lw=1.5))
        ax.axis("off")
    axes[0].set_title("input, and the patch explained (cyan)")
    axes[1].set_title("saliency: |d road score / d input|")
    return save(fig, out / "saliency.png")


@torch.no_grad()
def occlusion(
    model, image: np.ndarray, r: int, c: int, out: Path, *, size: int = 24, stride: int = 8,
    view: int = 160,
) -> Path:  # fmt: skip
    """Score drop of the patch at (r, c) as a square of the crop's mean colour slides over a
    ``view``-pixel crop. The mean colour carries no road evidence (a grey square looks like
    asphalt, so covering a road with it raised the road score: the map showed the occluder,
    not what the network uses)."""
    h, w = image.shape[1:]
    top = int(np.clip(r + PATCH_SIZE // 2 - view // 2, 0, max(h - view, 0)))
    left = int(np.clip(c + PATCH_SIZE // 2 - view // 2, 0, max(w - view, 0)))
    crop = torch.from_numpy(image[:, top : top + view, left : left + view].copy())
    pr, pc = r - top, c - left
    base = float(patch_score(model, crop[None], pr, pc)[0])
    mean = crop.mean(dim=(1, 2))[:, None, None]  # (3, 1, 1)
    positions = [
        (y, x) for y in range(0, view - size + 1, stride) for x in range(0, view - size + 1, stride)
    ]
    drops = np.zeros((view, view), np.float32)
    counts = np.zeros((view, view), np.float32)
    for start in range(0, len(positions), 32):
        chunk = positions[start : start + 32]
        batch = crop[None].repeat(len(chunk), 1, 1, 1)
        for i, (y, x) in enumerate(chunk):
            batch[i, :, y : y + size, x : x + size] = mean
        scores = patch_score(model, batch, pr, pc).numpy()
        for (y, x), s in zip(chunk, scores, strict=True):
            drops[y : y + size, x : x + size] += base - s
            counts[y : y + size, x : x + size] += 1
    drops /= np.maximum(counts, 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    axes[0].imshow(crop.numpy().transpose(1, 2, 0))
    limit = max(np.abs(drops).max(), 1e-6)
    im = axes[1].imshow(drops, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="road logit drop")
    for ax in axes:
        ax.add_patch(plt.Rectangle((pc, pr), PATCH_SIZE, PATCH_SIZE, fill=False, ec="lime", lw=1.5))
        ax.axis("off")
    axes[0].set_title(f"crop, patch explained (green); logit {base:.2f}")
    axes[1].set_title(f"occlusion: a {size}px square of the crop's\nmean colour, stride {stride}")
    return save(fig, out / "occlusion.png")


def classifier_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The last layer that maps features to the one road channel (its input: the embedding)."""
    last = None
    for m in model.modules():
        width = getattr(m, "out_channels", getattr(m, "out_features", None))
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and width == 1:
            last = m
    return last


@torch.no_grad()
def patch_embeddings(model, frame: pd.DataFrame, limit: int = 2000, seed: int = 0):
    """Features entering the classifier layer, averaged per 16x16 patch, with true labels."""
    layer = classifier_layer(model)
    if layer is None:
        return None, None
    captured = []
    hook = layer.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    feats, labels = [], []
    try:
        for _, row in frame.iterrows():
            image = read_image(row["image"])
            h, w = image.shape[1:]
            captured.clear()
            model(torch.from_numpy(image)[None])
            f = captured[-1].float()
            rows, cols = -(-h // PATCH_SIZE), -(-w // PATCH_SIZE)
            if f.ndim == 2:  # a per-patch classifier: one row per patch of the padded square
                side = math.isqrt(f.shape[0])
                if h != w or side * side != f.shape[0] or side < rows:
                    return None, None
                grid = f.T.reshape(1, -1, side, side)[..., :rows, :cols]
                feats.append(grid[0].flatten(1).T.numpy())
            elif f.ndim == 4:  # dense features: average over each patch's pixels
                pooled = F.adaptive_avg_pool2d(f, (rows, cols))[0]
                feats.append(pooled.flatten(1).T.numpy())
            else:
                return None, None
            labels.append(patch_labels(read_mask_grey(row["mask"])).ravel())
    finally:
        hook.remove()
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    if len(feats) > limit:
        keep = np.random.default_rng(seed).choice(len(feats), limit, replace=False)
        feats, labels = feats[keep], labels[keep]
    return feats, labels


def tsne(model, frame: pd.DataFrame, out: Path) -> Path | None:
    from sklearn.manifold import TSNE

    feats, labels = patch_embeddings(model, frame)
    if feats is None or len(feats) < 8:  # too few patches for a meaningful embedding
        return None
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    perplexity = min(30.0, (len(feats) - 1) / 3)  # t-SNE needs perplexity < samples
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=perplexity).fit_transform(
        feats
    )
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for value, colour, name in ((0, HIT, "background"), (1, FALSE_ROAD, "road")):
        sel = labels == value
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, c=colour, alpha=0.6, label=f"{name} ({sel.sum()})")
    ax.set(title=f"t-SNE of {len(feats)} patch embeddings ({feats.shape[1]} features)")
    ax.legend(markerscale=3)
    ax.set_xticks([])
    ax.set_yticks([])
    return save(fig, out / "tsne.png")


def class_model(
    model, out: Path, *, size: int = 128, steps: int = 150, seed: int = 0, progress: bool = True
) -> Path:
    """Gradient ascent on the input to maximise the centre patch's road logit."""
    gen = torch.Generator().manual_seed(seed)
    param = (torch.randn(1, 3, size, size, generator=gen) * 0.1).requires_grad_(True)
    optim = torch.optim.Adam([param], lr=0.05)
    r = c = size // 2 - PATCH_SIZE // 2
    with torch.no_grad():
        start = float(patch_score(model, torch.sigmoid(param), r, c)[0])
    for _ in tqdm(range(steps), desc="class model", unit="step", leave=False,
                  disable=not progress):  # fmt: skip
        dy, dx = torch.randint(-4, 5, (2,), generator=gen).tolist()  # jitter: smoother images
        x = torch.roll(torch.sigmoid(param), shifts=(dy, dx), dims=(-2, -1))
        loss = -patch_score(model, x, r, c).mean() + 0.05 * (param**2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        x = torch.sigmoid(param)
        prob = torch.sigmoid(model(x))[0, 0].numpy()
        score = float(patch_score(model, x, r, c)[0])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    axes[0].imshow(x[0].numpy().transpose(1, 2, 0))
    shown = axes[1].imshow(prob, cmap="gray", vmin=0, vmax=1)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="road probability")
    for ax in axes:
        ax.add_patch(plt.Rectangle((c, r), PATCH_SIZE, PATCH_SIZE, fill=False, ec="red", lw=1.5))
        ax.axis("off")
    if abs(score - start) < 0.05:  # e.g. a model whose score has no gradient to its input
        axes[0].set_title(
            f"FAILED: the optimisation did not move the centre patch's logit ({start:.2f} -> {score:.2f})",
            color="C3", fontsize=9,
        )  # fmt: skip
    else:
        axes[0].set_title(f"input maximising the centre patch (logit {start:.1f} -> {score:.1f})")
    axes[1].set_title("the network's road probability for it")
    return save(fig, out / "class_model.png")


def _explanations(model, sample: pd.DataFrame, probs: list, out: Path, bar) -> list[Path]:
    """Saliency, occlusion, t-SNE and class model of the sample tile with the most road
    (the clearest explanations); ``bar`` counts them."""
    shares = [float((read_mask_grey(m) > 0.5).mean()) for m in sample["mask"]]
    best = int(np.argmax(shares))
    image = read_image(sample["image"].iloc[best])
    r, c = road_patch(probs[best], read_mask_grey(sample["mask"].iloc[best]))
    written = []
    for name, draw in (
        ("saliency", lambda: saliency(model, image, r, c, out)),
        ("occlusion", lambda: occlusion(model, image, r, c, out)),
        ("t-SNE", lambda: tsne(model, sample, out)),
        ("class model", lambda: class_model(model, out, progress=not bar.disable)),
    ):
        bar.set_postfix_str(name)
        path = draw()
        if path is not None:
            written.append(path)
        bar.update()
    return written


def make_figures(
    out: str | Path,
    *,
    ckpt: str | Path,
    curves: dict[str, Path] | None = None,
    tiles: int = 8,
    decision: Decision | None = None,
    context: int = 96,
    progress: bool = True,
) -> list[Path]:
    """All figures for one trained checkpoint (and the learning curves of ``curves`` runs).

    ``decision``: the thresholds and clean-up the overlays and the PR curve's operating
    point use; by default the ones ``roadseg tune`` stored beside the checkpoint (the
    ones ``roadseg submit`` uses), else the competition's 0.5 / 0.25. ``context``: pixels
    of neighbouring tiles each tile is predicted with, as ``submit`` does (0: alone).
    """
    from roadseg.checkpoints import read_checkpoint
    from roadseg.evaluation import Validation
    from roadseg.predict import Predictor
    from roadseg.task import RoadSegTask
    from roadseg.thresholds import stored_decision

    out = Path(out)
    decision = decision or stored_decision(ckpt, tta=False)[0]  # figures predict without TTA
    torch.manual_seed(0)
    bar = tqdm(total=8, desc="figures", unit="figure", disable=not progress)
    written = []
    if curves:
        written.append(learning_curves(curves, out))
    bar.update()
    contents = read_checkpoint(ckpt)
    task = RoadSegTask.from_checkpoint(ckpt, ckpt=contents)
    model = task.model.float().eval()
    validation = Validation(contents, context)
    val = validation.tiles
    sample = val.iloc[: max(tiles, 1)].reset_index(drop=True)
    print(validation.context_line)
    bar.set_postfix_str("predicting the validation tiles")
    probs = validation.predict(Predictor([task], progress=False, device="cpu"))
    written.append(overlays(sample, probs, out, decision))
    written.append(
        pr_curve(val, probs, out, label=Path(ckpt).parent.parent.name, decision=decision)
    )
    if first_conv(model) is not None:
        written.append(filters(model, out))
    bar.update(3)
    written += _explanations(model, sample, probs, out, bar)
    bar.close()
    for path in written:
        print(f"wrote {path}")
    return written
