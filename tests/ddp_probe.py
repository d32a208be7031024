"""A callback for the DDP test: each process records the samples it trained on and its weights."""

import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch


class RecordSamples(pl.Callback):
    """Writes ``rank<r>.json`` (the (tile, seed) keys of every training batch) and
    ``rank<r>.pt`` (the final weights) to ``$ROADSEG_PROBE_DIR``."""

    def __init__(self):
        self.keys: list[list[int]] = []
        self.out = Path(os.environ["ROADSEG_PROBE_DIR"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys += [[int(i), int(s)] for i, s in zip(batch["index"], batch["seed"], strict=True)]

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        (self.out / f"rank{rank}.json").write_text(
            json.dumps({"world": trainer.world_size, "keys": self.keys})
        )
        torch.save(pl_module.state_dict(), self.out / f"rank{rank}.pt")
