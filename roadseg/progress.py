"""A progress bar for logs: what ``roadseg fit`` uses when its output is not a terminal."""

from __future__ import annotations

from pytorch_lightning.callbacks import TQDMProgressBar


class LogProgressBar(TQDMProgressBar):
    """Lightning's progress bar for output that goes to a file or a pipe: the training bar
    ends each epoch with one line (its metrics); the validation and sanity-check bars,
    which print a line per refresh there, are off."""

    def init_sanity_tqdm(self):
        bar = super().init_sanity_tqdm()
        bar.disable = True
        return bar

    def init_validation_tqdm(self):
        bar = super().init_validation_tqdm()
        bar.disable = True
        return bar
