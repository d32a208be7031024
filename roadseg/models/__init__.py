"""Model registry: a plain dict of name -> builder; ``create_model`` fails listing the names.

Every model maps a float32 image batch ``(B, 3, H, W)`` in [0, 1] to road logits
``(B, 1, H, W)`` of the same size, whatever H and W: normalisation and padding to
the network's stride happen inside (see :class:`roadseg.models.smp.SegmentationModel`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from roadseg.errors import RoadsegError
from roadseg.models.smp import build_smp

MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": lambda **kw: build_smp("Unet", **kw),
    "unetplusplus": lambda **kw: build_smp("UnetPlusPlus", **kw),
    "linknet": lambda **kw: build_smp("Linknet", **kw),
    "fpn": lambda **kw: build_smp("FPN", **kw),
    "deeplabv3plus": lambda **kw: build_smp("DeepLabV3Plus", **{"encoder_output_stride": 8, **kw}),
}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name."""
    if name not in MODELS:
        raise RoadsegError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        raise RoadsegError(f"model {name!r}: {err}") from err
