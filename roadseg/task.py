"""RoadSegTask: the LightningModule that trains any registered model on road masks."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from roadseg.checkpoints import (
    SPLIT_KEY,
    network_weights,
    read_checkpoint,
    recorded_split,
    task_arguments,
    weights_mismatch,
)
from roadseg.errors import RoadsegError
from roadseg.losses import get_loss, supports_weights
from roadseg.metrics import RoadMetrics
from roadseg.models import create_model


def _numpy_state_to_plain(state: tuple) -> tuple:
    """numpy's RNG state with its key array as a tensor (checkpoints load with weights_only)."""
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


class RoadSegTask(pl.LightningModule):
    """Trains a segmentation model; one shared step for training, validation and test.

    Args:
        model: registered model name (``roadseg models`` lists them).
        model_args: keyword arguments of the model (encoder, encoder_weights, ...).
        loss: loss name (``bce``, ``dice``, ``bce+dice``).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear warm-up before the cosine decay.
        schedule_epochs: epochs the cosine decay spans (default: ``trainer.max_epochs``). Set
            it with a smaller ``max_epochs`` to stop a run where a validated run of the same
            recipe peaked, on the same learning-rate curve: how the submission model that
            trains on every labelled tile (``data.val_fraction 0``) follows an early-stopped
            run.
        init_from: a checkpoint whose network weights this run starts from (weights only:
            the learning rate, epochs and optimizer start afresh; ``--ckpt_path`` is what
            resumes a run). Its network must be this config's. How a self-training student
            starts from its teacher instead of from ImageNet.
        channels_last: run the network in channels-last memory format (faster convolutions
            on recent CPUs and on GPUs with mixed precision).
        compile: compile the network with ``torch.compile`` (in place, so checkpoints keep
            their plain parameter names); pays off on long GPU runs.
    """

    def __init__(
        self,
        *,
        model: str = "unet",
        model_args: dict[str, Any] | None = None,
        loss: str = "bce+dice",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: int = 0,
        schedule_epochs: int | None = None,
        init_from: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model, **(model_args or {}))
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()
        self.loss_fn = get_loss(loss)
        self.weighted_loss = supports_weights(loss)
        self.train_metrics = RoadMetrics()
        self.val_metrics = RoadMetrics()
        self.test_metrics = RoadMetrics()

    def on_fit_start(self) -> None:
        # A resumed run (--ckpt_path) has its own weights, already restored by now, and does
        # not need the file; a checkpoint loaded for prediction never gets here.
        if self.hparams.get("init_from") and self.trainer.ckpt_path is None:
            self.load_network(self.hparams.init_from)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, ckpt: dict | None = None) -> RoadSegTask:
        """A trained task from its checkpoint, on the CPU in eval mode (no pretrained weights
        fetched).

        ``ckpt``: the checkpoint's contents when already read (:func:`read_checkpoint`).
        """
        ckpt = read_checkpoint(path) if ckpt is None else ckpt
        task = cls(**task_arguments(ckpt))
        mismatch = weights_mismatch(task.state_dict(), ckpt["state_dict"])
        if mismatch:
            raise RoadsegError(
                f"checkpoint's weights do not fit the model it names ({mismatch}); was it "
                "trained with another model?",
                path,
            )
        task.load_state_dict(ckpt["state_dict"])
        return task.eval()

    def load_network(self, path: str) -> None:
        """Copy the network weights of the training checkpoint ``path`` (its averaged
        weights where it kept an EMA) into this task's network."""
        weights = network_weights(read_checkpoint(path))
        mismatch = weights_mismatch(self.model.state_dict(), weights)
        if mismatch:
            raise RoadsegError(
                f"model.init_from: its network is not this config's {self.hparams.model!r} "
                f"network ({mismatch}); start from a checkpoint of the same model "
                "and model_args",
                path,
            )
        self.model.load_state_dict(weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Road logits ``(B, 1, H, W)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        if self.hparams.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        margin = int(batch["margin"][0]) if "margin" in batch else 0
        if margin:  # a tile seen in the context of its map: score the tile alone
            logits = logits[..., margin:-margin, margin:-margin]
        if "weight" in batch:  # self-training: the teacher's unsure pixels 0; scenes: unlabelled
            if not self.weighted_loss:
                raise RoadsegError(
                    f"loss {self.hparams.loss!r} cannot weight pixels, which self-training "
                    "(data.pseudo_labels) and scenes (data.scenes) need: use bce, dice or "
                    "bce+dice"
                )
            loss = self.loss_fn(logits, batch["mask"], batch["weight"])
        else:
            loss = self.loss_fn(logits, batch["mask"])
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(torch.sigmoid(logits.detach()), batch["mask"], batch.get("patches"),
                       batch.get("weight"))  # fmt: skip
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=on_step,
            batch_size=batch["image"].shape[0],
        )
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        if not metrics.update_called:  # e.g. no training steps (scikit-learn baselines)
            return
        values = {f"{stage}_{name}": value.float() for name, value in metrics.compute().items()}
        shown = {f"{stage}_patch_f1", f"{stage}_patch_accuracy"} if stage == "val" else set()
        self.log_dict({k: v for k, v in values.items() if k in shown}, prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if k not in shown})
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_epoch_metrics("val")
        else:
            self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    @property
    def sklearn_net(self) -> torch.nn.Module | None:
        """The network when scikit-learn fits it (the linear patch baselines), else None."""
        net = getattr(self.model, "net", self.model)
        return net if getattr(net, "sklearn_fitted", False) else None

    def on_train_start(self) -> None:
        if self.sklearn_net is not None and self.current_epoch == 0:
            self._fit_sklearn(self.sklearn_net)

    def _fit_sklearn(self, net: torch.nn.Module) -> None:
        """Fit a linear patch classifier on the patch features of every whole training tile."""
        from roadseg.dataset import TileDataset
        from roadseg.models.patch_cnn import patch_features

        dataset = TileDataset(self.trainer.datamodule.frame("train"))
        features, labels = [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            h, w = (s // 16 * 16 for s in sample["image"].shape[-2:])
            feats = patch_features(sample["image"][None, :, :h, :w])[0]  # F, rows, cols
            features.append(feats.flatten(1).T)
            labels.append(sample["patches"][0, : h // 16, : w // 16].flatten())
        net.fit_sklearn(
            torch.cat(features), torch.cat(labels), seed=self.trainer.datamodule.hparams.seed
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if self.sklearn_net is not None:  # fitted once by scikit-learn: no gradient steps
            return None
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not restore random states on resume; stochastic layers (dropout, the
        # encoders' drop-path) would then draw other numbers than an uninterrupted run.
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
        }
        # the imagery the model trains on (roadseg.imagery): prediction maps scenes to its
        # radiometry and resamples them to its resolution
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "imagery"):
            checkpoint["roadseg_imagery"] = datamodule.imagery().to_dict()
        # the split by content: evaluate, tune and pseudo-label read which tiles it never
        # trained on from here, whatever files are added to its folder later
        if datamodule is not None and hasattr(datamodule, "split_record"):
            checkpoint[SPLIT_KEY] = datamodule.split_record()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._check_split(checkpoint)
        states = checkpoint.get("rng_states")
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        np.random.set_state(_numpy_state_from_plain(states["numpy"]))
        random.setstate(states["python"])

    def _check_split(self, checkpoint: dict) -> None:
        """A run resumed (or validated) on files whose split is not the one its checkpoint
        recorded would train on its validation tiles, or score others: refused in one line."""
        recorded = recorded_split(checkpoint)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if recorded is None or not hasattr(datamodule, "split_record"):
            return
        was = {entry["sha256"] for entry in recorded["val"]}
        now = {entry["sha256"] for entry in datamodule.split_record()["val"]}
        if was != now and recorded.get("kind") == "scenes":
            raise RoadsegError(
                f"the held-out blocks made from the scenes present are not the {len(was)} the "
                f"checkpoint recorded ({len(was & now)} shared): a scene, its labels, its AOI, "
                "the widths or the blocks changed; put them back as the run started, or start "
                "a new run",
                datamodule.hparams.scenes if isinstance(datamodule.hparams.scenes, str) else None,
            )
        if was != now:
            raise RoadsegError(
                "the split made from the files present is not the one the checkpoint recorded "
                f"(its {len(was)} validation tiles and the {len(now)} made now share "
                f"{len(was & now)}: labelled tiles were added, removed or changed): put the "
                "files back as the run started with them, or start a new run",
                datamodule.hparams.root,
            )

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        if hp.get("schedule_epochs"):
            total = max(1, round(per_epoch * hp.schedule_epochs))
        warmup = min(int(hp.warmup_epochs * per_epoch), total - 1)

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 0
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
