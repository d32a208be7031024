"""From road probabilities to road masks and patch labels: thresholds and post-processing.

A :class:`Decision` is everything that turns a probability map into the competition's
answer: a pixel threshold, optional clean-up of the binary mask, and the patch
threshold of the 16x16 rule. The clean-up steps are off by default and a config (or
the command line) switches them on:

- ``close_gaps``: bridge breaks of up to this many pixels along a road. For each of
  four directions (0, 45, 90 and 135 degrees) the runs of road at least ``close_gaps +
  1`` pixels long in that direction are kept (an opening with a line segment), and the
  gaps between collinear runs are closed with the same segment; the bridges of all
  directions are added to the mask. A gap is thus filled only along a road that runs
  across it, and a round closing's side effects stay away: roads are not fattened,
  the corners of crossings are not filled, and parallel roads are not merged (unless
  they are wider than the segment).
- ``min_area``: remove connected road components (8-connected) smaller than this many
  pixels: isolated false detections such as roofs and car parks.

Gaps are closed first, so fragments of one road are joined before they are judged
by size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from roadseg.errors import RoadsegError
from roadseg.patches import PATCH_THRESHOLD, patch_labels


def line_elements(length: int) -> list[np.ndarray]:
    """Line structuring elements of ``length`` pixels at 0, 45, 90 and 135 degrees."""
    horizontal = np.ones((1, length), dtype=bool)
    diagonal = np.eye(length, dtype=bool)
    return [horizontal, horizontal.T, diagonal, diagonal[::-1]]


def close_gaps(mask: np.ndarray, length: int) -> np.ndarray:
    """Fill breaks of up to ``length`` pixels along straight runs of road (see module doc)."""
    if length <= 1 or not mask.any():
        return mask.astype(bool)
    size = length + 1  # a segment spanning the gap and one pixel of road on each side
    pad = size
    padded = np.pad(mask.astype(bool), pad)  # zeros beyond the edge: closing stays extensive
    out = padded.copy()
    from scipy import ndimage  # clean-up only: its import is 0.7 s of a command

    for element in line_elements(size):
        runs = ndimage.binary_opening(padded, structure=element)  # road running this way
        out |= ndimage.binary_closing(runs, structure=element)
    return out[pad:-pad, pad:-pad]


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components of fewer than ``min_area`` pixels."""
    mask = mask.astype(bool)
    if min_area <= 1 or not mask.any():
        return mask
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


@dataclass(frozen=True)
class Decision:
    """Probabilities -> mask -> patch labels.

    Args:
        pixel: a pixel is road when its probability is above this.
        patch: a 16x16 patch is road when its share of road pixels is above this.
        close_gaps: bridge breaks along roads up to this many pixels (0: off).
        min_area: remove road components smaller than this many pixels (0: off).
    """

    pixel: float = 0.5
    patch: float = PATCH_THRESHOLD
    close_gaps: int = 0
    min_area: int = 0

    def __post_init__(self):
        for name in ("pixel", "patch"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RoadsegError(f"{name} threshold must be in [0, 1], got {getattr(self, name)}")
        for name in ("close_gaps", "min_area"):
            if getattr(self, name) < 0:
                raise RoadsegError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")

    @property
    def postprocessing(self) -> bool:
        return self.close_gaps > 1 or self.min_area > 1

    def describe(self) -> str:
        steps = [f"pixel {self.pixel:g}", f"patch {self.patch:g}"]
        if self.close_gaps > 1:
            steps.append(f"close gaps {self.close_gaps} px")
        if self.min_area > 1:
            steps.append(f"min area {self.min_area} px")
        return ", ".join(steps)

    def clean(self, mask: np.ndarray) -> np.ndarray:
        """The post-processing steps alone, on a binary mask ``(H, W)``."""
        mask = close_gaps(mask, self.close_gaps)
        return remove_small_components(mask, self.min_area)

    def mask(self, prob: np.ndarray) -> np.ndarray:
        """Binary road mask ``(H, W)`` uint8 of a probability map, post-processed."""
        return self.clean(prob > self.pixel).astype(np.uint8)

    def labels(self, prob: np.ndarray) -> np.ndarray:
        """Patch labels ``(rows, cols)`` uint8 of a probability map."""
        return patch_labels(self.mask(prob).astype(np.float32), threshold=self.patch)

    def scaled(self, factor: float) -> Decision:
        """The decision for maps whose pixels are ``factor`` times the model's on the
        ground (a scene read resampled): gaps and areas tuned in the model's pixels."""
        if factor == 1:
            return self
        return Decision(pixel=self.pixel, patch=self.patch,
                        close_gaps=round(self.close_gaps / factor),
                        min_area=round(self.min_area / factor**2))  # fmt: skip

    def replace(self, **changes) -> Decision:
        return Decision(**{**asdict(self), **{k: v for k, v in changes.items() if v is not None}})
