"""Per-patch classifiers, the lectures' baselines: one road logit per 16x16 patch.

- :class:`PatchCNN` sees the 16x16 patch alone: conv -> pool -> conv -> pool -> fully
  connected (LeNet style), with dropout.
- :class:`ContextCNN` classifies each patch from a larger window centred on it (fully
  convolutional, so neighbouring windows share their computation).
- :class:`PatchFeatureLinear` is a linear classifier on hand-made patch features
  (trained by scikit-learn: logistic regression or a linear SVM).

Each maps ``(B, 3, H, W)`` (H, W multiples of 16; the wrapper pads) to logits
``(B, 1, H, W)`` that are constant over each patch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roadseg.patches import PATCH_SIZE


def _to_pixels(patch_logits: torch.Tensor) -> torch.Tensor:
    """``(B, 1, rows, cols)`` patch logits -> ``(B, 1, rows*16, cols*16)`` pixel logits."""
    return F.interpolate(patch_logits, scale_factor=PATCH_SIZE, mode="nearest")


def patch_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """Windows of side ``size`` centred on every 16x16 patch: ``(B*rows*cols, C, size, size)``.

    The image is reflect-padded so windows at the border have content.
    """
    b, c, h, w = x.shape
    margin = (size - PATCH_SIZE) // 2
    if margin:
        mode = "reflect" if margin < min(h, w) else "replicate"
        x = F.pad(x, (margin, margin, margin, margin), mode=mode)
    win = x.unfold(2, size, PATCH_SIZE).unfold(3, size, PATCH_SIZE)  # B, C, rows, cols, size, size
    rows, cols = win.shape[2], win.shape[3]
    return win.permute(0, 2, 3, 1, 4, 5).reshape(b * rows * cols, c, size, size)


class _WindowClassifier(nn.Module):
    """Classifies each patch from the window of side ``window`` centred on it."""

    window: int

    def classify(self, windows: torch.Tensor) -> torch.Tensor:  # (N, C, w, w) -> (N, 1)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        assert h % PATCH_SIZE == 0 and w % PATCH_SIZE == 0, (
            f"input {h}x{w} must be a multiple of 16"
        )
        logits = self.classify(patch_windows(x, self.window))
        return _to_pixels(logits.view(b, 1, h // PATCH_SIZE, w // PATCH_SIZE))


class PatchCNN(_WindowClassifier):
    """LeNet-style CNN on the 16x16 patch alone."""

    def __init__(self, *, width: int = 32, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.window = PATCH_SIZE
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 4x4
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 16, hidden),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1),
        )  # fmt: skip

    def classify(self, windows: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(windows))


class ContextCNN(nn.Module):
    """CNN that classifies each 16x16 patch from a window of about ``window`` pixels around it.

    Fully convolutional (the efficient form of a sliding-window classifier): four stages
    of two 3x3 convolutions and a 2x2 max-pool give one output per 16x16 patch, and the
    dilation of the last stage sets the receptive field, so each patch's logit sees a
    context of about ``window`` pixels centred on it; 1x1 convolutions play the fully
    connected layers, with dropout.
    """

    def __init__(
        self, *, window: int = 64, width: int = 32, hidden: int = 128, dropout: float = 0.5
    ):
        super().__init__()
        assert window % 16 == 0 and window >= 32, (
            f"window must be a multiple of 16, >= 32, got {window}"
        )
        self.window = window
        # the receptive field is 29 + 32 * d pixels for a last-stage dilation d
        last_dilation = max(1, round((window - 29) / 32))
        layers, cin = [], 3
        for stage in range(4):
            cout = width * 2 ** min(stage, 2)
            d = last_dilation if stage == 3 else 1
            for _ in range(2):
                layers += [
                    nn.Conv2d(cin, cout, 3, padding=d, dilation=d),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)  # (B, C, H/16, W/16)
        self.classifier = nn.Sequential(
            nn.Dropout2d(dropout), nn.Conv2d(cin, hidden, 1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.Conv2d(hidden, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        assert h % PATCH_SIZE == 0 and w % PATCH_SIZE == 0, (
            f"input {h}x{w} must be a multiple of 16"
        )
        # Output cell c is centred on input pixel 16c; padding 8 in front (and enough behind)
        # and taking cells 1.. centres each cell on its patch, 16i + 8.
        mode = "reflect" if min(h, w) > 24 else "replicate"
        logits = self.classifier(self.features(F.pad(x, (8, 24, 8, 24), mode=mode)))
        return _to_pixels(logits[..., 1 : 1 + h // PATCH_SIZE, 1 : 1 + w // PATCH_SIZE])


HISTOGRAM_BINS = 8


def patch_features(x: torch.Tensor) -> torch.Tensor:
    """Hand-made features of every 16x16 patch: ``(B, F, rows, cols)``.

    Per channel: mean and variance (6); a colour histogram of ``HISTOGRAM_BINS`` bins
    per channel, as shares of the patch's pixels (24); Sobel edge magnitude of the grey
    image: mean and variance (2); shares of horizontal- and vertical-dominant edges (2).
    ``x``: ``(B, 3, H, W)`` in [0, 1], H and W multiples of 16.
    """
    pool = lambda t: F.avg_pool2d(t, PATCH_SIZE)  # noqa: E731
    mean = pool(x)
    var = (pool(x * x) - mean * mean).clamp(min=0)
    bins = (x.clamp(0, 1 - 1e-6) * HISTOGRAM_BINS).long()  # B, 3, H, W
    onehot = F.one_hot(bins, HISTOGRAM_BINS).permute(0, 1, 4, 2, 3).float()  # B, 3, bins, H, W
    hist = pool(onehot.flatten(1, 2))
    grey = x.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device).view(1, 1, 3, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))
    mag = torch.sqrt(gx * gx + gy * gy)
    mag_mean = pool(mag)
    mag_var = (pool(mag * mag) - mag_mean * mag_mean).clamp(min=0)
    strong = mag > 0.1
    horizontal = pool((strong & (gx.abs() > gy.abs())).float())
    vertical = pool((strong & (gy.abs() >= gx.abs())).float())
    return torch.cat([mean, var, hist, mag_mean, mag_var, horizontal, vertical], dim=1)


N_PATCH_FEATURES = 6 + 3 * HISTOGRAM_BINS + 4


class PatchFeatureLinear(nn.Module):
    """A linear classifier on :func:`patch_features`, fit by scikit-learn.

    ``classifier``: ``logreg`` (logistic regression) or ``svm`` (linear SVM). The fitted
    coefficients (with the feature standardisation folded in) live in ``self.linear``,
    so the model is saved, loaded and predicted like any network.
    """

    sklearn_fitted = True  # RoadSegTask fits it with scikit-learn instead of gradient steps

    def __init__(self, *, classifier: str = "logreg", c: float = 1.0):
        super().__init__()
        assert classifier in ("logreg", "svm"), (
            f"classifier must be logreg or svm, got {classifier!r}"
        )
        self.classifier, self.c = classifier, c
        self.linear = nn.Conv2d(N_PATCH_FEATURES, 1, 1)  # a linear map applied to every patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_pixels(self.linear(patch_features(x)))

    def fit_sklearn(self, features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> None:
        """Fit on ``features`` ``(N, F)`` and patch ``labels`` ``(N,)`` in {0, 1}."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        x, y = features.double().numpy(), labels.numpy().astype(int)
        scaler = StandardScaler().fit(x)
        if self.classifier == "logreg":
            model = LogisticRegression(C=self.c, class_weight="balanced", max_iter=2000)
        else:
            model = LinearSVC(C=self.c, class_weight="balanced", random_state=seed, max_iter=5000)
        model.fit(scaler.transform(x), y)
        weight = model.coef_[0] / scaler.scale_
        bias = model.intercept_[0] - float(weight @ scaler.mean_)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight).view(1, -1, 1, 1))
            self.linear.bias.fill_(bias)
