"""Prediction: trained checkpoints -> road probability maps of whole tiles.

The model pads each tile to its stride (reflect) and crops back, so a tile of any
size is predicted at full resolution in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from roadseg.errors import RoadsegError
from roadseg.io import read_image
from roadseg.task import RoadSegTask


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file (on the CPU), with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise RoadsegError("checkpoint not found (train first: make train, or pass CKPT=...)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a bad file
        raise RoadsegError(f"not a readable checkpoint ({type(err).__name__})", path) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise RoadsegError("not a roadseg training checkpoint (no state_dict/hyper_parameters)", path)
    return ckpt


def load_task(path: str | Path, device: str | torch.device = "cpu") -> RoadSegTask:
    """A trained RoadSegTask from its checkpoint, in eval mode (no pretrained weights fetched)."""
    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    model_args = dict(hparams.get("model_args") or {})
    if "encoder_weights" in model_args:
        model_args["encoder_weights"] = None  # the checkpoint holds the trained weights
    hparams["model_args"] = model_args
    hparams.pop("_instantiator", None)
    try:
        task = RoadSegTask(**{k: v for k, v in hparams.items() if not k.startswith("_")})
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise RoadsegError(f"checkpoint does not fit its model ({str(err).splitlines()[0]})", path) from err
    return task.to(pick_device(str(device)) if isinstance(device, str) else device).eval()


class Predictor:
    """Runs one or more trained models over whole tiles; averages their probabilities.

    Args:
        models: trained networks mapping ``(B, 3, H, W)`` in [0, 1] to logits.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: tiles of equal size predicted together.
    """

    def __init__(self, models: list[torch.nn.Module], *, device: str = "auto", batch_size: int = 4):
        if not models:
            raise RoadsegError("Predictor needs at least one model")
        self.device = pick_device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.batch_size = batch_size

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], **kwargs) -> Predictor:
        return cls([load_task(p) for p in paths], **kwargs)

    @torch.inference_mode()
    def predict_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Road probabilities ``(B, H, W)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        x = images.to(self.device, non_blocking=True)
        prob = torch.stack([torch.sigmoid(m(x)) for m in self.models]).mean(0)
        return prob[:, 0].float().cpu()

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Road probabilities ``(H, W)`` float32 of one image ``(3, H, W)`` in [0, 1]."""
        return self.predict_batch(torch.from_numpy(image)[None])[0].numpy()

    def predict_index(self, frame: pd.DataFrame, *, progress: bool = True) -> Iterator[tuple[pd.Series, np.ndarray]]:
        """``(index row, probabilities (H, W))`` for every tile of an index, in its order."""
        bar = tqdm(total=len(frame), desc="predicting", unit="tile", disable=not progress)
        rows = [row for _, row in frame.iterrows()]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            images = [read_image(r["image"]) for r in chunk]
            if len({im.shape for im in images}) == 1:
                probs = self.predict_batch(torch.from_numpy(np.stack(images))).numpy()
            else:
                probs = [self.predict_image(im) for im in images]
            for row, prob in zip(chunk, probs, strict=True):
                yield row, prob
            bar.update(len(chunk))
        bar.close()
