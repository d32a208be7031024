"""Augmentation presets by name, as the lectures list them.

- ``none``: no augmentation (evaluation);
- ``d4``: mirroring and 90-degree rotations (the 8 symmetries of the square);
- ``geometric``: ``d4`` + any-angle rotation with reflected borders, scaling 0.8-1.2
  and small translations;
- ``full``: ``geometric`` + brightness, contrast, hue, blur, noise and elastic distortion.

Every preset keeps the crop's size; the random window itself is chosen by the dataset.
"""

from __future__ import annotations

import albumentations as A
import cv2

from roadseg.errors import RoadsegError


def _d4() -> list[A.BasicTransform]:
    return [A.SquareSymmetry(p=1.0)]


def _geometric() -> list[A.BasicTransform]:
    return _d4() + [
        A.Affine(
            scale=(0.8, 1.2),
            rotate=(-180, 180),
            translate_percent=(-0.05, 0.05),
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.7,
        )
    ]


def _full() -> list[A.BasicTransform]:
    return _geometric() + [
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.01, 0.05))], p=0.3),
        A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_REFLECT_101, p=0.2),
    ]


PRESETS = {"none": list, "d4": _d4, "geometric": _geometric, "full": _full}


def build_transform(name: str) -> A.Compose:
    """The albumentations pipeline of a preset; images are float32 HxWx3 in [0, 1]."""
    if name not in PRESETS:
        raise RoadsegError(
            f"unknown augmentation preset {name!r}; choose one of {', '.join(PRESETS)}"
        )
    return A.Compose(PRESETS[name]())
