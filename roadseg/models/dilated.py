"""A pure dilated-convolution context network (after Yu & Koltun, 2016).

A small front end (optionally downsampling by 8) is followed by a context module of
3x3 convolutions whose dilations grow exponentially (1, 1, 2, 4, 8, 16, 1), so the
receptive field grows to hundreds of pixels without pooling; a 1x1 convolution gives
the road logit, upsampled back to the input's size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(
    cin: int, cout: int, *, stride: int = 1, dilation: int = 1, dropout: float = 0.0
) -> nn.Sequential:
    layers = [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class DilatedContextNet(nn.Module):
    """Front end + exponentially dilated context module; logits ``(B, 1, H, W)``.

    Args:
        width: channels of the context module.
        downsample: 8 (front end of three stride-2 convolutions) or 1 (full resolution).
        dilations: dilations of the context module.
        dropout: spatial dropout after each context layer.
    """

    def __init__(
        self,
        *,
        width: int = 64,
        downsample: int = 8,
        dilations: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1),
        dropout: float = 0.1,
    ):
        super().__init__()
        assert downsample in (1, 8), f"downsample must be 1 or 8, got {downsample}"
        stride = 2 if downsample == 8 else 1
        self.front = nn.Sequential(
            _conv(3, width // 2, stride=stride),
            _conv(width // 2, width, stride=stride),
            _conv(width, width, stride=stride),
        )
        self.context = nn.Sequential(
            *(_conv(width, width, dilation=d, dropout=dropout) for d in dilations)
        )
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits = self.head(self.context(self.front(x)))  # (B, 1, H/ds, W/ds)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
