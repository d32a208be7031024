"""RoadDataModule: the tile index, a seeded validation split, and the data loaders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from roadseg.checkpoints import datamodule_arguments, split_record
from roadseg.dataset import RandomWindowDataset, SeededSampler, TileDataset
from roadseg.errors import RoadsegError
from roadseg.folds import split_stages
from roadseg.index import scan_many
from roadseg.io import MASK_THRESHOLD
from roadseg.patches import CONTEXT_MARGIN
from roadseg.pseudo import with_pseudo_labels


class RoadDataModule(pl.LightningDataModule):
    """Road tiles from one main dataset root (plus optional extra training roots).

    Args:
        root: the main dataset (any layout :func:`roadseg.index.scan` knows); its
            labelled tiles are split into training and validation.
        extra_roots: more labelled datasets used for training only.
        split: ``random`` (a seeded ``val_fraction`` of the tiles) or ``geographic`` (fold
            ``fold`` of ``folds`` spatial-block folds, so neighbouring tiles stay together).
        val_fraction: share of the main dataset's labelled tiles held out (random split).
        folds: number of geographic folds.
        fold: the geographic fold used for validation.
        seed: seed of the training windows, and of the split unless ``split_seed`` is given.
        split_seed: seed of the validation split or fold assignment alone, so runs with
            different seeds can share one set of folds.
        crop_size: side of the random training windows.
        batch_size: training windows per batch (validation uses whole tiles).
        samples_per_epoch: training windows per epoch (default: one per training tile).
        augment: augmentation preset (``none``, ``d4``, ``geometric``, ``full``).
        num_workers: data loader worker processes.
        cache: keep decoded tiles (up to 4096x4096) in memory.
        mask_threshold: a mask pixel is road when its grey level in [0, 1] is above this.
        context: training windows may reach across tile edges into neighbouring training
            tiles of the same map (:mod:`roadseg.maps` places the tiles, test and
            validation tiles included, but a window never covers a validation, test or
            missing tile, so their labels are never used; pseudo-labelled tiles are
            training tiles, with their teacher's maps); validation tiles are predicted
            with 96 px of the map around them (imagery only), as ``submit`` predicts.
        pseudo_labels: self-training: a folder of a teacher's probability maps of the
            unlabelled tiles (``roadseg pseudo-label``); those tiles then train on these soft
            targets (and, with ``context``, windows may cover them). Validation tiles never
            train on their labels.
        resolution: ground resolution of ``root``'s tiles, metres per pixel, which is the
            model's (recorded in its checkpoints; scenes are resampled to it). Default: from
            the tiles' georeference, else the CIL competitions' 0.5 m (docs/imagery.md).
        resolutions: metres per pixel of extra roots (by path or folder name), e.g.
            ``{data/massachusetts-400: 1.0}``; their tiles are resampled to ``resolution``
            (images by cubic convolution, masks bilinearly, then the road rule). Default:
            their georeference, else read as they are.
        pseudo_validation: the validation tiles train on their pseudo-labels too (the
            teacher's maps of them, ``roadseg pseudo-label --validation``; never their
            labels), as the test tiles do: the student is then validated on imagery it has
            self-trained on, which is the leaderboard's situation for a self-trained model.
        pseudo_confidence: pseudo-labelled pixels whose teacher probability p has
            max(p, 1 - p) below this are left out of the loss (0: all count).
    """

    def __init__(
        self,
        *,
        root: str = "data/cil-2022",
        extra_roots: list[str] | None = None,
        split: str = "random",
        val_fraction: float = 0.2,
        folds: int = 5,
        fold: int = 0,
        seed: int = 0,
        split_seed: int | None = None,
        crop_size: int = 256,
        batch_size: int = 8,
        samples_per_epoch: int | None = None,
        augment: str = "d4",
        num_workers: int = 2,
        cache: bool = True,
        mask_threshold: float = MASK_THRESHOLD,
        context: bool = False,
        pseudo_labels: str | None = None,
        pseudo_confidence: float = 0.0,
        pseudo_validation: bool = False,
        resolution: float | None = None,
        resolutions: dict[str, float] | None = None,
        scenes: list[dict] | str | None = None,
        block: float = 256.0,
        holdout: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.index: pd.DataFrame | None = None
        self._layout: pd.DataFrame | None = None
        self.radiometry: dict = {}
        self.resolution: float | None = None
        self._imagery = None
        self._split: dict | None = None
        self.scenes = None  # roadseg.scenedata.SceneData, when trained on scenes

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None or self.scenes is not None:
            return
        hp = self.hparams
        if hp.get("scenes"):
            self._setup_scenes()
            return
        frame = self._read_sources(scan_many([hp.root, *(hp.extra_roots or [])]))
        split_seed = hp.seed if hp.get("split_seed") is None else hp.split_seed
        self.index = split_stages(frame, split=hp.split, val_fraction=hp.val_fraction,
                                  seed=split_seed, folds=hp.folds, fold=hp.fold)  # fmt: skip
        if hp.get("pseudo_labels"):
            if not 0.0 <= hp.pseudo_confidence <= 1.0:
                raise RoadsegError(
                    f"data.pseudo_confidence must be in [0, 1], got {hp.pseudo_confidence}"
                )
            self.index = with_pseudo_labels(
                self.index, hp.pseudo_labels, validation=bool(hp.get("pseudo_validation"))
            )
        elif hp.get("pseudo_validation"):
            raise RoadsegError(
                "data.pseudo_validation needs data.pseudo_labels (a folder written by "
                "roadseg pseudo-label --validation)"
            )
        if self.frame("train").empty:
            raise RoadsegError("no labelled training tiles here", Path(hp.root))

    def _setup_scenes(self) -> None:
        from roadseg.checkpoints import read_checkpoint
        from roadseg.imagery import imagery_of
        from roadseg.scenedata import SceneData

        hp = self.hparams
        if hp.get("pseudo_labels") or hp.get("extra_roots") or hp.get("context"):
            raise RoadsegError("data.scenes trains on scenes alone: leave out pseudo_labels, "
                               "extra_roots and context (scenes are their own context)")  # fmt: skip
        imagery, init = None, self._init_from()
        if init:
            imagery = imagery_of(read_checkpoint(init))
            if hp.get("resolution") and imagery.resolution != hp.resolution:
                import dataclasses

                imagery = dataclasses.replace(imagery, resolution=float(hp.resolution))
        split_seed = hp.seed if hp.get("split_seed") is None else hp.split_seed
        self.scenes = SceneData(hp.scenes, block=hp.block, val_fraction=hp.val_fraction,
                                seed=split_seed, holdout=hp.get("holdout"), imagery=imagery,
                                resolution=hp.get("resolution"), crop_size=hp.crop_size)  # fmt: skip
        self.resolution = self.scenes.imagery.resolution
        self._imagery = self.scenes.imagery
        for line in self.scenes.lines:
            print(line)
        if init:
            print(f"data: scenes mapped onto the imagery of {init}: "
                  f"{self.scenes.imagery.describe()}")  # fmt: skip

    def _init_from(self) -> str | None:
        """The checkpoint the model starts from (``model.init_from``), when training."""
        trainer = getattr(self, "trainer", None)
        task = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return (getattr(task, "hparams", None) or {}).get("init_from") if task else None

    def _read_sources(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each source's resolution and radiometry: rows of sources at another resolution
        than the model's get a ``scale`` and their resampled size; non-8-bit sources a
        :class:`~roadseg.imagery.Radiometry` (said in one line each)."""
        from roadseg.imagery import COMPETITION, COMPETITION_RESOLUTION
        from roadseg.reading import source_radiometry, source_resolution

        hp = self.hparams
        given = {str(k): v for k, v in (hp.get("resolutions") or {}).items()}
        roots = [hp.root, *(hp.extra_roots or [])]
        frame = frame.assign(scale=1.0)
        for k, root in enumerate(roots):
            name = Path(root).resolve().name
            rows = frame["source"] == name
            images = list(frame.loc[rows, "image"])
            if not images:  # scan_many counts a tile once, however it is reached
                print(f"data: {root}: its tiles are tiles of an earlier root (the same files, "
                      "or copies): each is used once")  # fmt: skip
                continue
            own = hp.get("resolution") if k == 0 else given.get(str(root), given.get(name))
            res, how = source_resolution(images[0], own)
            if k == 0:
                self.resolution = res or COMPETITION_RESOLUTION
            elif res is not None and abs(res / self.resolution - 1) > 0.05:
                scale = res / self.resolution
                frame.loc[rows, "scale"] = scale
                frame.loc[rows, "height"] = (frame.loc[rows, "height"] * scale).round().astype(int)
                frame.loc[rows, "width"] = (frame.loc[rows, "width"] * scale).round().astype(int)
                print(f"data: {root}: {res:g} m/px ({how}), resampled x{scale:.3g} to the "
                      f"model's {self.resolution:g} m/px")  # fmt: skip
            radiometry = source_radiometry(images, COMPETITION, root)
            if radiometry is not None:
                self.radiometry[name] = radiometry
                print(f"data: {root}: {radiometry.how}")
        return frame

    def imagery(self):
        """The training imagery as the network sees it (:class:`~roadseg.imagery.Imagery`),
        measured once on up to 32 training tiles; recorded in every checkpoint."""
        if self._imagery is None:
            import numpy as np

            from roadseg.dataset import TileReader
            from roadseg.imagery import PERCENTILES, Imagery
            from roadseg.io import raster_dtype

            frame = self.frame("train")
            frame = frame[~frame.get("pseudo", pd.Series(False, index=frame.index)).astype(bool)]
            picked = frame.iloc[:: max(1, len(frame) // 32)].iloc[:32]
            reader = TileReader(picked, cache=False, radiometry=self.radiometry)
            pixels = np.concatenate(
                [reader.image(i)[:, ::4, ::4].reshape(3, -1) for i in range(len(picked))], axis=1
            )
            low, high = np.percentile(pixels, PERCENTILES, axis=1)
            pooled = np.percentile(pixels, PERCENTILES)
            dtype = raster_dtype(self.frame("train")["image"].iloc[0])
            self._imagery = Imagery(
                low=tuple(map(float, low)), high=tuple(map(float, high)),
                pooled=tuple(map(float, pooled)), dtype=str(dtype), resolution=self.resolution,
                origin=f"measured on {len(picked)} training tiles",
            )  # fmt: skip
        return self._imagery

    def split_record(self) -> dict:
        """The split by content (:func:`roadseg.checkpoints.split_record`), made once;
        every checkpoint records it, so that the tiles it never trained on are known later."""
        if self._split is None and self.scenes is not None:
            self._split = self.scenes.split_record()
        if self._split is None:
            assert self.index is not None, "call setup() first"
            self._split = split_record(self.index, self.hparams.root)
        return self._split

    @classmethod
    def from_checkpoint(cls, ckpt: dict, **overrides) -> RoadDataModule:
        """The datamodule a checkpoint (its contents) was trained with, set up, so that
        its split is made again from the files present (for a checkpoint that records no
        split: :func:`roadseg.evaluation.validation_tiles` reads a recorded one);
        ``overrides`` replace saved arguments. Pseudo-labels are left out unless given:
        they only ever train, and their folder may be gone."""
        arguments = {
            **datamodule_arguments(ckpt), "pseudo_labels": None, "pseudo_validation": False,
            **overrides,
        }  # fmt: skip
        datamodule = cls(**arguments)
        datamodule.setup()
        return datamodule

    def layout(self) -> pd.DataFrame:
        """Every tile of the index placed on its map (:func:`roadseg.maps.place_tiles`),
        made once: training windows and validation context share it."""
        if self._layout is None:
            from roadseg.maps import place_tiles

            assert self.index is not None, "call setup() first"
            # one row per tile: a validation tile that also trains on its pseudo-label
            # (data.pseudo_validation) has a second, training row in the index
            self._layout = place_tiles(self.index.drop_duplicates("image"))
        return self._layout

    def frame(self, stage: str) -> pd.DataFrame:
        """Index rows of one stage: ``train``, ``val`` or ``test``."""
        assert self.index is not None, "call setup() first"
        return self.index[self.index["stage"] == stage].reset_index(drop=True)

    def _loader(self, dataset, **kwargs) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        if self.scenes is not None:
            from roadseg.scenedata import SceneWindows

            data = SceneWindows(self.scenes.scenes, self.scenes.train, crop_size=hp.crop_size,
                                augment=hp.augment)  # fmt: skip
            sampler = SeededSampler(len(data), samples_per_epoch=hp.samples_per_epoch or 256,
                                    seed=hp.seed)  # fmt: skip
            return self._loader(data, sampler=sampler, batch_size=hp.batch_size, drop_last=True)
        frame = self.frame("train")
        places = None
        if hp.get("context"):
            # every tile of the main dataset helps link the maps; only training rows are used
            at = self.layout().set_index("image")[["map", "col", "row"]]
            places = at.loc[frame["image"]].reset_index(drop=True)
        dataset = RandomWindowDataset(
            frame,
            crop_size=hp.crop_size,
            augment=hp.augment,
            mask_threshold=hp.mask_threshold,
            cache=hp.cache,
            places=places,
            pseudo_confidence=hp.get("pseudo_confidence") or 0.0,
            radiometry=self.radiometry,
        )
        sampler = SeededSampler(len(frame), samples_per_epoch=hp.samples_per_epoch, seed=hp.seed)
        return self._loader(dataset, sampler=sampler, batch_size=hp.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        if self.scenes is not None:
            from roadseg.scenedata import SceneBlocks

            blocks = SceneBlocks(self.scenes.scenes, self.scenes.val)
            return self._loader(blocks, batch_size=1) if len(blocks) else []
        frame = self.frame("val")
        if frame.empty:
            return []
        same_size = frame[["height", "width"]].drop_duplicates().shape[0] == 1
        maps, margin = None, 0
        if self.hparams.get("context"):  # validated as submit predicts: in the map's context
            from roadseg.maps import context_in

            maps, margin, _ = context_in(self.layout(), frame, CONTEXT_MARGIN)
        dataset = TileDataset(frame, mask_threshold=self.hparams.mask_threshold,
                              cache=self.hparams.cache, maps=maps, margin=margin,
                              radiometry=self.radiometry)  # fmt: skip
        return self._loader(dataset, batch_size=self.hparams.batch_size if same_size else 1)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
