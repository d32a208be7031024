"""The one predictor: trained models -> road probabilities for tiles and scenes of any size.

Images go through overlapping windows (reflect-padded to the network's stride by the
model itself), batched, optionally with the 8 flips/rotations of test-time
augmentation, and blended with a smooth window weight, so overlaps leave no seams.
Several models form an ensemble, merged by mean probability or by majority vote of
their patch labels. Scenes are streamed chunk by chunk from and to GeoTIFF, so memory
stays flat however large the raster is.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from roadseg.backends import OnnxBackend, TorchBackend, auto_precision, choose_backend, pick_device
from roadseg.console import progress_bar
from roadseg.errors import RoadsegError
from roadseg.exported import ExportedModel
from roadseg.identity import prediction_identity
from roadseg.imagery import COMPETITION, Imagery, ensemble_imagery
from roadseg.io import open_scene, read_image
from roadseg.parts import (
    GDAL_CACHE_BYTES,
    OUTPUTS,
    PROB8_SCALE,
    ScenePlan,
    check_windows,
    merge_parts,
    part_path,
    scene_profile,
    start_parts,
    write_part,
)  # fmt: skip
from roadseg.patches import PATCH_SIZE, labels_to_mask
from roadseg.postprocess import Decision
from roadseg.reading import ReadOptions, SceneReader, scene_reader

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: exported files run without
    import pandas as pd  # tiles: pandas and the maps are imported by the commands of tiles
    import torch

    from roadseg.maps import MapIndex

WINDOW_MULTIPLE = 64


def fitted_windows(size: int, window: int, overlap: int) -> tuple[int, list[int]]:
    """(side, start offsets) of the fewest windows of at most ``window`` px that cover
    ``size`` px with at least ``overlap`` px between neighbours, spread evenly and no
    larger than they need to be (sides in multiples of 64, what a stride-32 network at
    half scale takes without padding): 4,800 px in windows of at most 1,024 overlapping
    by 128 are six of 960 (5,760 px run, not 6,144), 1,280 px two of 704, not of 1,024."""
    if size <= window:
        return size, [0]
    n = -(-(size - overlap) // (window - overlap))
    side = min(window, -(-(size + (n - 1) * overlap) // n // WINDOW_MULTIPLE) * WINDOW_MULTIPLE)
    side = max(side, -(-(size + (n - 1) * overlap) // n))  # a window not of that multiple
    return side, [round(i * (size - side) / (n - 1)) for i in range(n)]


def blend_weight(height: int, width: int) -> np.ndarray:
    """A smooth window weight ``(height, width)``, highest in the centre and never zero."""

    def ramp(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) + 1e-3

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


class Predictor:
    """Runs one or more trained models over images of any size.

    Args:
        models: trained networks mapping ``(B, 3, H, W)`` in [0, 1] to logits of the same size.
        window: side of the square windows; an image that fits in one is run whole.
        overlap: pixels shared by neighbouring windows (blended smoothly).
        batch_size: windows per forward pass.
        tta: average over the 8 flips/rotations (D4).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        progress: show progress bars.
        merge: how an ensemble's members are combined. ``mean``: the mean probability.
            ``vote``: each member's probabilities become patch labels by its own
            :class:`~roadseg.postprocess.Decision` (``decisions``), and the map returned is,
            at every pixel, the share of members that call its 16x16 patch road: a patch is
            road by strict majority when that share is above 0.5 (see :attr:`output_decision`).
        decisions: one Decision per model for ``vote`` (default: 0.5 / 0.25, no clean-up).
        imagery: what the models were trained on (:mod:`roadseg.imagery`): scenes are
            mapped to its radiometry and resampled to its resolution.
        backend: where the networks run: ``torch``, ``onnx`` (ONNX Runtime, CPU) or
            ``auto`` (:func:`roadseg.backends.choose_backend`); ``threads``: ONNX
            Runtime's (default: PyTorch's).
    """

    def __init__(
        self,
        models: list[torch.nn.Module],
        *,
        window: int = 1536,
        overlap: int = 128,
        batch_size: int = 4,
        tta: bool = False,
        device: str = "auto",
        precision: str = "auto",
        progress: bool = True,
        merge: str = "mean",
        decisions: list[Decision] | None = None,
        imagery: Imagery = COMPETITION,
        backend: str = "torch",
        threads: int | None = None,
    ):
        exported = models if isinstance(models, ExportedModel) else None
        if not models:
            raise RoadsegError("Predictor needs at least one model")
        if merge not in ("mean", "vote"):
            raise RoadsegError(f"unknown merge {merge!r}; use mean or vote")
        self.members = exported.members if exported else len(models)
        decisions = list(decisions) if decisions is not None else [Decision()] * self.members
        if len(decisions) != self.members:
            raise RoadsegError(f"{self.members} models but {len(decisions)} decisions for the vote")
        self.merge, self.decisions = merge, decisions
        check_windows(window, overlap, batch_size)
        self.device = pick_device(device, exported=exported is not None)
        self.window, self.overlap, self.batch_size, self.tta = window, overlap, batch_size, tta
        if precision == "auto":
            precision = auto_precision(self.device, None if exported else models)
        if precision not in ("bf16", "fp32"):
            raise RoadsegError(f"unknown precision {precision!r}; use auto, bf16 or fp32")
        self.precision = precision
        if exported:
            self._exported(exported, backend)
        else:
            self._networks(models, backend, threads)
        self.progress = progress
        self.imagery = imagery

    def _networks(self, models: list, backend: str, threads: int | None) -> None:
        """The backend that runs these networks (PyTorch modules)."""
        if backend == "auto" and self.precision == "bf16":  # ONNX Runtime runs fp32 only
            backend = "torch"
        self.backend_name, self.backend_why = choose_backend(backend, self.device)
        if self.backend_name == "onnx":
            if self.precision == "bf16":
                raise RoadsegError("the onnx backend runs fp32: leave out --precision bf16")
            self.network = OnnxBackend.from_models(models, threads)
        else:
            self.network = TorchBackend(models, self.device, self.precision)

    def _exported(self, exported: ExportedModel, backend: str) -> None:
        """ONNX Runtime over an exported file, fp32, on the CPU."""
        if backend == "torch" or self.precision != "fp32":
            raise RoadsegError(
                "an exported file runs in ONNX Runtime, fp32: leave out --backend torch and "
                "--precision bf16, or predict with its checkpoint",
                exported.path,
            )
        self.backend_name, self.backend_why = "onnx", f"the exported file {exported.path}"
        self.network = OnnxBackend.from_file(exported)

    def ready(self) -> None:
        """Wait until the network can run: an exported file's session is made in a thread
        (:meth:`OnnxBackend.from_file`); one ONNX Runtime cannot read is refused here."""
        getattr(self.network, "ready", lambda: None)()

    @classmethod
    def from_exported(cls, path: str | Path, **kwargs) -> Predictor:
        """A predictor over an exported file (:mod:`roadseg.exported`): its imagery from
        its metadata unless given."""
        from roadseg.exported import read_exported

        exported = read_exported(path)
        kwargs.setdefault("imagery", exported.imagery())
        kwargs.setdefault("backend", "onnx")  # the class's default is torch, for networks
        return cls(exported, **kwargs)

    @classmethod
    def from_checkpoints(
        cls, paths: list[str | Path], *, contents: list[dict] | None = None, **kwargs
    ) -> Predictor:
        """A predictor over the ensemble of these checkpoints (``contents``: theirs, when
        already read by :func:`roadseg.checkpoints.read_checkpoint`)."""
        from roadseg.task import RoadSegTask

        if contents is None:  # read here, so that the imagery they recorded is used
            from roadseg.checkpoints import read_checkpoint

            contents = [read_checkpoint(p) for p in paths]
        tasks = [
            RoadSegTask.from_checkpoint(p, ckpt=c) for p, c in zip(paths, contents, strict=True)
        ]
        if "imagery" not in kwargs:
            kwargs["imagery"] = ensemble_imagery(list(paths), contents)
        return cls(tasks, **kwargs)

    @property
    def models(self) -> list[torch.nn.Module]:
        """The networks PyTorch runs (none when another backend runs them)."""
        return getattr(self.network, "models", [])

    @property
    def output_decision(self) -> Decision | None:
        """The decision fixed by the merge: for ``vote``, strict majority of the members
        (their own thresholds and clean-up already applied); ``None`` for ``mean``."""
        return Decision(pixel=0.5, patch=0.5) if self.merge == "vote" else None

    @property
    def maps(self) -> int:
        """Maps per image that :meth:`member_probs` returns: one per model for ``vote``,
        their mean alone for ``mean``."""
        return self.members if self.merge == "vote" else 1

    def member_probs(self, images: np.ndarray) -> np.ndarray:
        """Road probabilities ``(B, K, H, W)`` of images ``(B, 3, H, W)``: for ``vote`` each
        model's (K = M), for ``mean`` their mean, taken by the backend (K = 1), so a mean
        ensemble moves and blends one map per image, not one per model."""
        if not isinstance(images, np.ndarray):  # a CPU tensor
            images = images.numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        views = 8 if self.tta else 1
        return self.network(images, views, self.merge == "vote")

    def merge_members(self, probs: np.ndarray) -> np.ndarray:
        """One image's maps ``(K, H, W)`` of :meth:`member_probs` -> the ensemble's map
        ``(H, W)`` float32.

        ``mean``: the mean probability (already taken). ``vote``: share of members whose
        patch label is road, patches counted from the image's top-left corner.
        """
        if self.merge == "mean":
            return probs[0]
        h, w = probs.shape[-2:]
        votes = [
            labels_to_mask(d.labels(p), h, w, PATCH_SIZE)
            for d, p in zip(self.decisions, probs, strict=True)
        ]
        return np.mean(votes, axis=0, dtype=np.float32)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """The ensemble's maps ``(B, H, W)`` of whole images ``(B, 3, H, W)`` in [0, 1]."""
        members = self.member_probs(images)
        return np.stack([self.merge_members(m) for m in members])

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """The ensemble's map ``(H, W)`` float32 of one image ``(3, H, W)`` in [0, 1]:
        road probabilities, or for ``vote`` the share of members voting road."""
        return self.merge_members(self.image_members(image))

    def image_members(self, image: np.ndarray) -> np.ndarray:
        """The maps ``(K, H, W)`` of :meth:`member_probs` for one image, windowed and blended."""
        _, h, w = image.shape
        if h <= self.window and w <= self.window:
            return self.member_probs(image[None])[0]
        win_h, rows = fitted_windows(h, self.window, self.overlap)
        win_w, cols = fitted_windows(w, self.window, self.overlap)
        boxes = [(r, c) for r in rows for c in cols]
        weight = blend_weight(win_h, win_w)
        total = np.zeros((self.maps, h, w), np.float32)
        norm = np.zeros((h, w), np.float32)
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            batch = np.stack([image[:, r : r + win_h, c : c + win_w] for r, c in chunk])
            probs = self.member_probs(batch)
            for (r, c), prob in zip(chunk, probs, strict=True):
                total[:, r : r + win_h, c : c + win_w] += prob * weight
                norm[r : r + win_h, c : c + win_w] += weight
        return total / norm

    def predict_index(
        self, frame: pd.DataFrame, *, context: MapIndex | None = None, margin: int = 0
    ) -> Iterator[tuple[pd.Series, np.ndarray]]:
        """``(index row, probabilities (H, W))`` for every tile of an index, in its order.

        ``context``, ``margin``: predict each tile in the context of its map, with
        ``margin`` pixels of its neighbours around it (the tile's reflection where it has
        none; :func:`roadseg.maps.context_image`), and crop back. Tiles of equal size
        that fit in one window are batched together.
        """
        rows = [row for _, row in frame.iterrows()]
        bar = progress_bar(
            total=len(rows), desc="predicting", unit="tile", disable=not self.progress
        )
        margin = margin if context is not None else 0
        if self.merge == "vote" and margin % PATCH_SIZE:
            raise RoadsegError(f"a vote needs a context margin of whole patches, got {margin}")
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            if margin:
                from roadseg.maps import context_image

                images = [context_image(r["image"], context, margin) for r in chunk]
            else:
                images = [read_image(r["image"]) for r in chunk]
            fits = all(im.shape[1] <= self.window and im.shape[2] <= self.window for im in images)
            if fits and len({im.shape for im in images}) == 1:
                probs = list(self.predict_batch(np.stack(images)))
            else:
                probs = [self.predict_image(im) for im in images]
            if margin:
                probs = [p[margin:-margin, margin:-margin] for p in probs]
            yield from zip(chunk, probs, strict=True)
            bar.update(len(chunk))
        bar.close()

    def predict_scene(
        self,
        src_path: str | Path,
        out_path: str | Path,
        *,
        output: str = "prob",
        decision: Decision | None = None,
        chunk: int = 2048,
        rank: int = 0,
        world: int = 1,
        merge: bool = True,
        run: dict | None = None,
        read: ReadOptions | None = None,
        cog: bool = False,
        overwrite: bool = False,
        digest: str | None = None,
    ) -> int:
        """Predict a raster of any size into a GeoTIFF, chunk by chunk (flat memory);
        returns the number of chunks this call predicted.

        The output keeps the input's CRS and transform, is tiled and compressed, and is
        nodata wherever the input is. ``output``: ``prob`` (float32 in [0, 1], nodata -1;
        for a ``vote`` ensemble the share of members voting road) or ``mask`` (uint8
        {0, 1}, nodata 255) made by ``decision``'s pixel threshold and post-processing
        (for ``vote``: by majority). Each chunk is predicted, and post-processed, with
        ``overlap // 2`` pixels (rounded up to whole 16x16 patches) of context on each
        side, so the patch grid of a vote is the scene's own, and no chunk depends on
        another.

        Chunks are written as files to ``<out>.parts/`` as they finish; process ``rank`` of
        ``world`` predicts every ``world``-th chunk from its rank on, and skips chunks
        already there, so a killed run resumes where it stopped. With ``merge``, the parts
        are then joined into ``out_path`` (atomically) and the folder removed; every part
        must be there by then (for ``world`` > 1, merge after all processes finished).
        ``run``: the run's identity (:func:`roadseg.identity.run_identity`): with the
        scene's content, what must match for parts of an earlier run to be reused; parts of
        another run are refused unless ``overwrite`` (:func:`roadseg.parts.start_parts`);
        ``digest``: the scene's (:func:`roadseg.identity.scene_digest`), when known.
        On any failure the chunks finished are kept for a rerun.

        ``read``: how the scene is read (:class:`~roadseg.reading.ReadOptions`: bands,
        radiometry, resolution); what is done is printed. A scene resampled to the model's
        resolution is chunked so that each chunk's resampled image is about ``chunk`` px.
        """
        if output not in OUTPUTS:
            raise RoadsegError(f"unknown output {output!r}; use {', '.join(OUTPUTS)}")
        if chunk <= 0 or chunk % PATCH_SIZE:
            raise RoadsegError(f"chunk ({chunk}) must be a positive multiple of {PATCH_SIZE}")
        decision = self.output_decision or decision or Decision()
        run = run or self._run_identity(output, chunk, decision)
        # GDAL's block cache grows to 5% of RAM by default; capped, memory stays flat.
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_scene(src_path) as src:
                reader = self._say_reading(src, read)
                profile = scene_profile(src, output)
                plan = ScenePlan.make(src.width, src.height, chunk=chunk, window=self.window,
                                      overlap=self.overlap, factor=reader.factor)  # fmt: skip
                if self.progress:
                    print(f"chunks: {plan.describe()}")
                identity = prediction_identity(src_path, run, digest)
                self.ready()  # the model refused before any output is made
                parts = start_parts(out_path, identity, plan, overwrite=overwrite)
                mine = [
                    (k, win)
                    for k, win in enumerate(plan.chunks())
                    if k % world == rank and not part_path(parts, k).exists()
                ]
                # gaps and areas were tuned in the model's pixels: in the scene's here
                scene_decision = decision.scaled(reader.factor) if output == "mask" else None
                try:
                    self._predict_parts(reader, mine, plan.margin, parts, profile, scene_decision)
                finally:  # finished chunks are kept for a rerun; a folder of none is not
                    if world == 1 and not any(parts.glob("chunk_*.tif")):
                        shutil.rmtree(parts, ignore_errors=True)
        if merge:
            merge_parts(out_path, profile, cog=cog)
        return len(mine)

    def _run_identity(self, output: str, chunk: int, decision: Decision) -> dict:
        """The run's identity when no options gave one (a Predictor used directly)."""
        return {
            "output": output, "chunk": chunk, "window": self.window, "overlap": self.overlap,
            "tta": bool(self.tta), "decision": decision.describe() if output == "mask" else None,
            "members": self.members, "merge": self.merge,
            "decisions": [d.describe() for d in self.decisions] if self.merge == "vote" else None,
        }  # fmt: skip

    def _say_reading(self, src, read: ReadOptions | None) -> SceneReader:
        """The scene's reader; what it does to the scene printed, a warning on stderr."""
        reader = scene_reader(src, self.imagery, read)
        for line in reader.lines():
            print(line)
        if reader.warning:
            print(f"roadseg: warning: {reader.warning}", file=sys.stderr, flush=True)
        return reader

    def _predict_parts(
        self, reader: SceneReader, mine: list, margin: int, parts: Path, profile: dict,
        decision: Decision | None,
    ) -> None:  # fmt: skip
        """Predict chunks ``mine`` (``(k, window)``) into their parts, the network kept busy:
        the next chunks are read by one thread while this one is predicted, and finished
        parts are written by another."""
        bar = progress_bar(
            total=len(mine), desc="predicting", unit="chunk", disable=not self.progress
        )
        with ThreadPoolExecutor(1) as reading, ThreadPoolExecutor(1) as writing:
            reads = deque(
                reading.submit(self._read_chunk, reader, w, margin) for _, w in mine[:READ_AHEAD]
            )
            writes: deque = deque()
            for i, (k, _) in enumerate(mine):
                image, valid, outer, inner = reads.popleft().result()
                if i + READ_AHEAD < len(mine):
                    reads.append(
                        reading.submit(self._read_chunk, reader, mine[i + READ_AHEAD][1], margin)
                    )
                members = reader.to_scene(self.image_members(image), outer.height, outer.width)
                while len(writes) >= WRITE_BEHIND:
                    writes.popleft().result()  # a failed write stops the run here
                writes.append(writing.submit(self._write_part, members, valid, inner, mine[i][1],
                                             part_path(parts, k), profile, decision))  # fmt: skip
                bar.update()
            for pending in writes:
                pending.result()
        bar.close()

    def _write_part(
        self, members: np.ndarray, valid: np.ndarray, inner: tuple, win: Window, path: Path,
        profile: dict, decision: Decision | None,
    ) -> None:  # fmt: skip
        """One chunk's part: its probabilities (float32 or 8-bit), or with ``decision``
        the mask; nodata where the scene is."""
        prob = self.merge_members(members)
        if decision is not None:
            values = decision.mask(prob)[inner]
        elif profile["output"] == "prob8":
            values = np.rint(prob[inner] * PROB8_SCALE).astype(np.uint8)
        else:
            values = prob[inner].astype(np.float32)
        values[~valid] = profile["nodata"]
        write_part(path, values, profile, win)

    def predict_raster(self, path: str | Path, read: ReadOptions | None = None) -> np.ndarray:
        """The map ``(H, W)`` of a whole raster held in memory (a tile), read as ``read``
        says (bands, radiometry, resampled to the models' resolution) and on its own grid;
        nodata pixels are predicted like the rest."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                reader = scene_reader(src, self.imagery, read)
                prob, _, _ = self._predict_chunk(reader, Window(0, 0, src.width, src.height), 0)
        return prob

    def _predict_chunk(self, reader: SceneReader, win: Window, margin: int):
        """One chunk read with ``margin`` of context: the map of the whole read window (on
        the scene's grid), the validity ``(h, w)`` of the chunk, and the slices of the
        chunk in that window."""
        image, valid, outer, inner = self._read_chunk(reader, win, margin)
        members = reader.to_scene(self.image_members(image), outer.height, outer.width)
        return self.merge_members(members), valid, inner

    @staticmethod
    def _read_chunk(reader: SceneReader, win: Window, margin: int):
        """(image at the model's resolution, validity of the chunk, the window read, the
        chunk's slices in it) of one chunk read with ``margin`` px of context."""
        src = reader.src
        r0, c0 = max(0, win.row_off - margin), max(0, win.col_off - margin)
        r1 = min(src.height, win.row_off + win.height + margin)
        c1 = min(src.width, win.col_off + win.width + margin)
        outer = Window(c0, r0, c1 - c0, r1 - r0)
        try:
            image, valid = reader.read(outer)
        except rasterio.errors.RasterioIOError as err:
            raise RoadsegError(f"truncated or corrupt raster ({err})", src.name) from err
        rs, cs = win.row_off - r0, win.col_off - c0
        inner = (slice(rs, rs + win.height), slice(cs, cs + win.width))
        return image, valid[inner], outer, inner


READ_AHEAD = 2  # chunks read while one is predicted
WRITE_BEHIND = 2  # finished parts waiting to be written
