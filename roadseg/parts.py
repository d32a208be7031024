"""A scene's prediction on disk: its chunks, the parts folder a rerun resumes from, the
merge into one GeoTIFF (or a Cloud-Optimized GeoTIFF), and the output profiles."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from roadseg.errors import RoadsegError, is_int
from roadseg.io import atomic_path
from roadseg.patches import PATCH_SIZE

# GDAL's block cache, in BYTES: rasterio hands GDAL_CACHEMAX to GDALSetCacheMax, which
# takes bytes (64 alone was a 64-byte cache: every read decompressed its blocks again,
# 5.7 s instead of 0.02 s for a decimated read of a 1,200 px scene)
GDAL_CACHE_BYTES = 64 * 1024 * 1024
PART_BLOCK = 256
PROB8_SCALE = 254  # prob8: probability x 254, rounded; 255 is nodata


def aligned_chunk(chunk: int, window: int, overlap: int) -> int:
    """The chunk side near ``chunk`` whose windows waste nothing: a chunk read with its
    margin is then exactly ``n`` windows spaced ``window - overlap`` apart (whole 16x16
    patches; ``chunk`` itself when no such side exists)."""
    step, margin = window - overlap, chunk_margin(overlap)
    n = max(1, round((chunk - overlap + 2 * margin) / step))
    side = (n * step + overlap - 2 * margin) // PATCH_SIZE * PATCH_SIZE
    return side if side >= PATCH_SIZE else chunk


def check_windows(window: int, overlap: int, batch_size: int) -> None:
    """One line for windows a predictor cannot run (a batch below 1 gave NaN maps: an
    all-background mask, silently)."""
    if not 0 <= overlap < window:
        raise RoadsegError(
            f"overlap ({overlap}) must be at least 0 and smaller than the window ({window})"
        )
    if not is_int(batch_size) or batch_size < 1:
        raise RoadsegError(f"batch size (--batch-size) must be at least 1, got {batch_size}")


def chunk_margin(overlap: int, factor: float = 1.0) -> int:
    """Context read around each chunk of a scene, in scene pixels: half the windows'
    overlap in the model's pixels, rounded up to whole 16x16 patches (the patch grid of a
    vote is then the scene's own). A scene finer than the model (``factor`` < 1: its
    pixels are read ``factor`` times smaller) gets as many scene pixels as make that
    context in the model's pixels (0.125 m for a 0.5 m model: 4 times the margin)."""
    half = overlap // 2 / (factor if factor < 1 else 1.0)
    return -(-math.ceil(half) // PATCH_SIZE) * PATCH_SIZE


@dataclass(frozen=True)
class ScenePlan:
    """How a scene is cut: its size, the side of its chunks and the context read around
    each (scene pixels), and the ``--chunk`` asked for. Planned once per scene
    (:meth:`make`), recorded in the parts folder; resume and merge read it from there."""

    width: int
    height: int
    chunk: int
    margin: int
    asked: int

    @classmethod
    def make(cls, width: int, height: int, *, chunk: int, window: int, overlap: int,
             factor: float = 1.0) -> ScenePlan:  # fmt: skip
        """The plan of a ``width`` x ``height`` scene read ``factor`` times its size for the
        network (:func:`~roadseg.reading.scene_factor`): chunks whose margins make whole
        windows (:func:`aligned_chunk`), about ``chunk`` px at the model's resolution."""
        from roadseg.reading import chunk_side

        side = chunk_side(aligned_chunk(chunk, window, overlap), factor)
        return cls(width, height, side, chunk_margin(overlap, factor), chunk)

    def chunks(self) -> list[Window]:
        return scene_chunks(self.width, self.height, self.chunk)

    def describe(self) -> str:
        n = len(self.chunks())
        said = f"{n} chunk{'s' if n > 1 else ''} of {self.chunk} px"
        if self.chunk != self.asked and n > 1:
            said += f" (--chunk {self.asked} rounded to whole windows; --window sets their size)"
        return f"{said}, {self.margin} px of context around each"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def scene_profile(src, output: str) -> dict:
    """GeoTIFF profile of a scene's prediction: one band, tiled, compressed (deflate with
    the predictor that suits the values, compressed by every core)."""
    floats = output == "prob"
    return {
        "driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
        "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate", "zlevel": 1, "predictor": 3 if floats else 2,
        "num_threads": "all_cpus", "BIGTIFF": "IF_SAFER",
        "dtype": "float32" if floats else "uint8", "nodata": -1.0 if floats else 255,
        "output": output,  # not a creation option: see _creation
        # georeferenced by control points or RPCs (no transform): carried to the output
        "gcps": src.gcps if src.gcps and src.gcps[0] else None,
        "rpcs": src.rpcs or None,
    }  # fmt: skip


def _creation(profile: dict) -> dict:
    """A scene profile as rasterio's creation options."""
    return {
        k: v for k, v in profile.items() if k not in ("output", "gcps", "rpcs") and v is not None
    }


OUTPUTS = ("prob", "prob8", "mask")


def scene_chunks(width: int, height: int, chunk: int) -> list[Window]:
    """The chunks of a scene in raster order."""
    return [
        Window(c, r, min(chunk, width - c), min(chunk, height - r))
        for r in range(0, height, chunk)
        for c in range(0, width, chunk)
    ]


def parts_dir(out_path: str | Path) -> Path:
    """Where the chunks of ``out_path`` wait until they are merged."""
    out = Path(out_path)
    return out.with_name(out.name + ".parts")


def part_path(parts: Path, k: int) -> Path:
    return parts / f"chunk_{k:06d}.tif"


def start_parts(out_path: str | Path, identity: dict, plan: ScenePlan, *,
                overwrite: bool = False) -> Path:  # fmt: skip
    """The parts folder of ``out_path``, its ``run.json`` holding the prediction's identity
    (:mod:`roadseg.identity`) and the scene's plan. Finished chunks are resumed only when
    both match; chunks of another content of the scene are removed and redone (said);
    chunks made with other options are refused in one line naming them, unless
    ``overwrite``."""
    from roadseg.identity import describe_differences, differences

    parts = parts_dir(out_path)
    stamp = parts / "run.json"
    record = {"identity": identity, "plan": plan.to_dict()}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if stamp.is_file():
        old = _read_record(stamp)
        if old == record:
            return parts
        changed = differences(old.get("identity", {}), identity) if old else ["format"]
        if old and not overwrite and set(changed) - {"scene"} and old.get("plan") is not None:
            raise RoadsegError(
                "holds the finished chunks of another prediction, made with other options: "
                f"{describe_differences(old['identity'], identity)}; run with those options "
                "to resume it, or add --overwrite to predict it again with these",
                parts,
            )
        what = "the scene changed since" if changed == ["scene"] else "other options made"
        print(f"{parts}: {what} its chunks; predicting them again", file=sys.stderr)
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:  # every process writes the same text
        tmp.write_text(text)
    return parts


def _read_record(stamp: Path) -> dict:
    """A parts folder's record, or {} when it is from an older roadseg or torn."""
    try:
        record = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) and "identity" in record else {}


def read_plan(out_path: str | Path) -> tuple[ScenePlan, dict]:
    """The plan and identity recorded in ``out_path``'s parts folder."""
    stamp = parts_dir(out_path) / "run.json"
    record = _read_record(stamp) if stamp.is_file() else {}
    if not record.get("plan"):
        raise RoadsegError("no plan of a prediction here: run the prediction first", stamp.parent)
    return ScenePlan(**record["plan"]), record["identity"]


def write_part(path: Path, values: np.ndarray, profile: dict, win: Window) -> None:
    """One finished chunk, atomically (a killed process leaves no half part)."""
    part = {**profile, "width": int(win.width), "height": int(win.height), "BIGTIFF": "NO",
            "compress": "none", "num_threads": None, "predictor": None, "zlevel": None}  # fmt: skip
    part = _creation(part)  # compressed once, when merged
    if win.width < PART_BLOCK or win.height < PART_BLOCK:
        part["tiled"] = False
        part.pop("blockxsize"), part.pop("blockysize")
    part["transform"] = rasterio.windows.transform(win, profile["transform"])
    with atomic_path(path, suffix=".tmp.tif") as tmp, rasterio.open(tmp, "w", **part) as dst:
        dst.write(values[None])


def _merge_into(path: Path, parts: Path, profile: dict, chunks: list[Window], tags: dict) -> None:
    with rasterio.open(path, "w", **_creation(profile)) as dst:
        if profile.get("output") == "prob8":  # GIS software reads probabilities back
            dst.scales = (1 / PROB8_SCALE,)
        if profile.get("gcps"):  # a scene georeferenced by control points keeps them
            dst.gcps = profile["gcps"]
        if profile.get("rpcs"):
            dst.rpcs = profile["rpcs"]
        dst.update_tags(roadseg_output=profile.get("output", ""), **tags)
        for k, win in enumerate(chunks):
            with rasterio.open(part_path(parts, k)) as part:
                dst.write(part.read(), window=win)


def output_tags(identity: dict) -> dict:
    """What an output says of how it was made (read back by :func:`output_identity`)."""
    from roadseg import __version__
    from roadseg.identity import identity_hash

    return {
        "roadseg_identity": identity_hash(identity),
        "roadseg_models": " ".join(identity.get("models") or []),
        "roadseg_decision": identity.get("decision") or "",
        "roadseg_version": __version__,
    }


def output_identity(path: str | Path) -> str | None:
    """The identity hash an output was tagged with (None: no output, or not roadseg's)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.tags().get("roadseg_identity")
    except rasterio.errors.RasterioIOError:
        return None


def _to_cog(src: Path, dst: Path, profile: dict) -> None:
    from rasterio.shutil import copy

    floats = profile["dtype"] == "float32"
    copy(src, dst, driver="COG", compress="DEFLATE", level=1, predictor="YES", blocksize=512,
         overview_resampling="AVERAGE" if profile.get("output") != "mask" else "NEAREST",
         num_threads="ALL_CPUS", bigtiff="IF_SAFER", **({"nodata": -1.0} if floats else {}))  # fmt: skip


def merge_parts(out_path: str | Path, profile: dict, *, cog: bool = False) -> None:
    """Join every chunk's part into ``out_path`` (atomically, synced), tagged with how it
    was made, then remove the parts; the chunks are those of the plan recorded in the
    parts folder (:func:`start_parts`).

    ``cog``: a Cloud-Optimized GeoTIFF, by GDAL's COG driver from the merged file (512-px
    tiles, overviews averaged for probabilities, nearest for masks; neither step holds
    the scene in memory)."""
    parts = parts_dir(out_path)
    plan, identity = read_plan(out_path)
    chunks = plan.chunks()
    missing = [k for k in range(len(chunks)) if not part_path(parts, k).exists()]
    if missing:
        raise RoadsegError(
            f"{len(missing)} of {len(chunks)} chunks are not predicted yet (first: chunk "
            f"{missing[0]}); run the same command again to predict them",
            parts,
        )
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with atomic_path(out_path) as tmp:
            merged = tmp.with_name(tmp.name + ".merged.tif") if cog else tmp
            try:
                _merge_into(merged, parts, profile, chunks, output_tags(identity))
                if cog:
                    _to_cog(merged, tmp, profile)
            finally:
                if cog:
                    merged.unlink(missing_ok=True)
    shutil.rmtree(parts)
