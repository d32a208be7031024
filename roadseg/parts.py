"""A scene's prediction on disk: its chunks, the parts folder a rerun resumes from, the
merge into one GeoTIFF (or a Cloud-Optimized GeoTIFF), and the output profiles."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path
from roadseg.patches import PATCH_SIZE
from roadseg.postprocess import Decision

GDAL_CACHE_MB = 64
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


def chunk_margin(overlap: int) -> int:
    """Context read around each chunk of a scene: half the windows' overlap, rounded up to
    whole 16x16 patches (the patch grid of a vote is then the scene's own)."""
    return -(-(overlap // 2) // PATCH_SIZE) * PATCH_SIZE


def scene_key(
    src_path: str | Path, src, *, chunk: int, output: str, margin: int, decision: Decision,
    run_key: dict | None,
) -> dict:  # fmt: skip
    """What the parts of a scene's prediction belong to (``run.json`` of the parts folder):
    the scene (its path and the open raster), its chunks, the output, and ``run_key``
    (models, options)."""
    return {
        "scene": str(Path(src_path).resolve()), "size": [src.width, src.height],
        "chunk": chunk, "output": output, "margin": margin,
        "decision": decision.describe() if output == "mask" else None, **(run_key or {}),
    }  # fmt: skip


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
    }  # fmt: skip


def _creation(profile: dict) -> dict:
    """A scene profile as rasterio's creation options."""
    return {k: v for k, v in profile.items() if k != "output" and v is not None}


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


def start_parts(out_path: str | Path, key: dict) -> Path:
    """The parts folder of ``out_path``, with ``run.json`` saying which run it belongs to;
    refused when it holds parts of another run (another scene, model or options)."""
    parts = parts_dir(out_path)
    stamp = parts / "run.json"
    text = json.dumps(key, indent=2, sort_keys=True) + "\n"
    if stamp.is_file():
        if stamp.read_text() != text:
            raise RoadsegError(
                "holds the finished chunks of another prediction (other scene, models or "
                "options): delete it, or run that prediction again to resume it",
                parts,
            )
        return parts
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:  # every process writes the same text
        tmp.write_text(text)
    return parts


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


def _merge_into(path: Path, parts: Path, profile: dict, chunks: list[Window]) -> None:
    with rasterio.open(path, "w", **_creation(profile)) as dst:
        if profile.get("output") == "prob8":  # GIS software reads probabilities back
            dst.scales = (1 / PROB8_SCALE,)
        dst.update_tags(roadseg_output=profile.get("output", ""))
        for k, win in enumerate(chunks):
            with rasterio.open(part_path(parts, k)) as part:
                dst.write(part.read(), window=win)


def _to_cog(src: Path, dst: Path, profile: dict) -> None:
    from rasterio.shutil import copy

    floats = profile["dtype"] == "float32"
    copy(src, dst, driver="COG", compress="DEFLATE", level=1, predictor="YES", blocksize=512,
         overview_resampling="AVERAGE" if profile.get("output") != "mask" else "NEAREST",
         num_threads="ALL_CPUS", bigtiff="IF_SAFER", **({"nodata": -1.0} if floats else {}))  # fmt: skip


def merge_parts(
    out_path: str | Path, profile: dict, chunks: list[Window], *, cog: bool = False
) -> None:
    """Join every chunk's part into ``out_path`` (atomically), then remove the parts.

    ``cog``: a Cloud-Optimized GeoTIFF, by GDAL's COG driver from the merged file (512-px
    tiles, overviews averaged for probabilities, nearest for masks; neither step holds
    the scene in memory)."""
    parts = parts_dir(out_path)
    missing = [k for k in range(len(chunks)) if not part_path(parts, k).exists()]
    if missing:
        raise RoadsegError(
            f"{len(missing)} of {len(chunks)} chunks are not predicted yet (first: chunk "
            f"{missing[0]}); run the same command again to predict them",
            parts,
        )
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with atomic_path(out_path) as tmp:
            merged = tmp.with_name(tmp.name + ".merged.tif") if cog else tmp
            try:
                _merge_into(merged, parts, profile, chunks)
                if cog:
                    _to_cog(merged, tmp, profile)
            finally:
                if cog:
                    merged.unlink(missing_ok=True)
    shutil.rmtree(parts)
