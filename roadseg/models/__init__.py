"""Model registry: a plain dict of name -> builder; ``create_model`` fails listing the names.

Every model maps a float32 image batch ``(B, 3, H, W)`` in [0, 1] to road logits
``(B, 1, H, W)`` of the same size, whatever H and W: normalisation and padding to
the network's stride happen inside (:class:`roadseg.models.wrapper.SegmentationModel`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from roadseg.errors import RoadsegError
from roadseg.models.dilated import DilatedContextNet
from roadseg.models.dlinknet import DLinkNet
from roadseg.models.patch_cnn import ContextCNN, PatchCNN, PatchFeatureLinear
from roadseg.models.smp import build_smp, encoder_mean_std, smp_network
from roadseg.models.wrapper import IMAGENET_MEAN_STD, NO_NORMALISATION, SegmentationModel


def _dlinknet(
    *,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    dilations: tuple[int, ...] = (1, 2, 4, 8),
    input_scale: float = 1.0,
) -> SegmentationModel:
    base = smp_network("Linknet", encoder=encoder, encoder_weights=encoder_weights)
    mean, std = encoder_mean_std(encoder)
    return SegmentationModel(DLinkNet(base, dilations=tuple(dilations)), mean=mean, std=std, stride=32,
                             input_scale=input_scale)  # fmt: skip


def _wrapped(
    cls: type[nn.Module], *, stride: int, normalise: bool = True
) -> Callable[..., nn.Module]:
    mean, std = IMAGENET_MEAN_STD if normalise else NO_NORMALISATION

    def build(*, input_scale: float = 1.0, **kwargs) -> SegmentationModel:
        return SegmentationModel(
            cls(**kwargs), mean=mean, std=std, stride=stride, input_scale=input_scale
        )

    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    # encoder-decoders (segmentation-models-pytorch)
    "unet": lambda **kw: build_smp("Unet", **kw),
    "unetplusplus": lambda **kw: build_smp("UnetPlusPlus", **kw),
    "linknet": lambda **kw: build_smp("Linknet", **kw),
    "fpn": lambda **kw: build_smp("FPN", **kw),
    "deeplabv3plus": lambda **kw: build_smp("DeepLabV3Plus", **{"encoder_output_stride": 8, **kw}),
    # dilated-convolution networks
    "dlinknet": _dlinknet,
    "dilated": _wrapped(DilatedContextNet, stride=8),
    # per-patch baselines
    "patch_cnn": _wrapped(PatchCNN, stride=16),
    "context_cnn": _wrapped(ContextCNN, stride=16),
    "patch_logreg": _wrapped(
        lambda **kw: PatchFeatureLinear(classifier="logreg", **kw), stride=16, normalise=False
    ),
    "patch_svm": _wrapped(
        lambda **kw: PatchFeatureLinear(classifier="svm", **kw), stride=16, normalise=False
    ),
}


# models fit by scikit-learn (float64 coefficients): predicted in fp32 on any device
SKLEARN_FITTED = frozenset({"patch_logreg", "patch_svm"})


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name."""
    if name not in MODELS:
        raise RoadsegError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}"
        )
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        if "argument" not in str(err):  # a bug, not a wrong option: show it as it is
            raise
        raise RoadsegError(f"model {name!r}: {err}") from err
