"""The wrapper that lets any network take any image size: normalise, rescale, pad, crop."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class SegmentationModel(nn.Module):
    """Normalises, optionally rescales, pads to the network's stride (reflect), runs it, crops back.

    Input ``(B, 3, H, W)`` in [0, 1]; output logits ``(B, 1, H, W)``. With
    ``input_scale`` < 1 the network sees a downsampled image (cheaper, more context per
    pixel) and its logits are upsampled back to the input's size.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        stride: int = 32,
        input_scale: float = 1.0,
    ):
        super().__init__()
        assert 0 < input_scale <= 1, f"input_scale must be in (0, 1], got {input_scale}"
        self.net = net
        self.stride = stride
        self.input_scale = input_scale
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_size = x.shape[-2:]
        x = (x - self.mean) / self.std
        if self.input_scale != 1:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", antialias=True)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            # reflect needs pad < size; replicate covers tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        logits = self.net(x)[..., :h, :w]
        if self.input_scale != 1:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits
