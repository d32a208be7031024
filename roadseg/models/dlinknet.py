"""D-LinkNet: LinkNet on a ResNet encoder with a dilated centre block (Zhou et al., 2018).

The centre block chains 3x3 convolutions of dilation 1, 2, 4 and 8 on the encoder's
deepest features and sums the input with every intermediate output, so the decoder sees
context from receptive fields of several sizes at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class DilatedCentre(nn.Module):
    """x + d1(x) + d2(d1(x)) + ...: chained dilated 3x3 convolutions, outputs summed."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.ReLU(inplace=True)
            )
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, y = x, x
        for conv in self.convs:
            y = conv(y)
            out = out + y
        return out


class DLinkNet(nn.Module):
    """An smp LinkNet with :class:`DilatedCentre` between encoder and decoder; logits ``(B, 1, H, W)``."""

    def __init__(self, base: nn.Module, *, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.base = base
        self.centre = DilatedCentre(self.encoder.out_channels[-1], tuple(dilations))

    @property
    def encoder(self) -> nn.Module:
        """The LinkNet's encoder (a property, so its weights are not registered twice)."""
        return self.base.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.encoder(x))
        features[-1] = self.centre(features[-1])
        return self.base.segmentation_head(self.base.decoder(features))
