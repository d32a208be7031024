"""Lists of scenes: paths and addresses, folders, text files, STAC Items and
ItemCollections, sorted by id; and the shares of array jobs (``--shard``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png")
# In a folder that holds GeoTIFFs (or other georeferenced formats), pictures are previews
# and quicklooks, not scenes: left out and named.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Scene:
    """One scene of a list: its id (output name) and where it is read from."""

    id: str
    path: str


def is_address(text: str) -> bool:
    return "://" in text or text.startswith("/vsi")


def _stem(text: str) -> str:
    """The id of a path or address: its file name without the suffix."""
    return Path(text.split("?")[0].rstrip("/")).stem


def _stac_asset(item: dict, asset: str | None, path: Path) -> str:
    """The key of the item's RGB asset: ``asset`` if given; else ``visual``, else the one
    asset whose roles say visual (or RGB); else refused listing the assets."""
    assets = item["assets"]
    if asset is None:
        visual = [k for k, a in assets.items() if k == "visual"] or [
            k for k, a in assets.items()
            if {"visual", "rgb"} & {str(r).lower() for r in a.get("roles", [])}
        ]  # fmt: skip
        asset = visual[0] if len(visual) == 1 else None
    if asset not in assets:
        listed = ", ".join(
            f"{k} ({'/'.join(a.get('roles', [])) or a.get('type', '?')})" for k, a in assets.items()
        )
        said = f"has no asset {asset!r}" if asset else "has no visual (RGB) asset"
        raise RoadsegError(
            f"item {item.get('id')!r} {said}; its assets: {listed}; choose one with --asset KEY",
            path,
        )
    return asset


def safe_id(text: str) -> str:
    """An id as a file name: characters other than letters, digits, ``.``, ``-`` and ``_``
    (a ``/`` or ``..`` in a STAC id) become ``_``, so an output stays in its folder."""
    import re

    return re.sub(r"[^\w.-]", "_", text).lstrip(".") or "scene"


def _stac_scenes(path: Path, asset: str | None) -> list[Scene]:
    """The scenes of a STAC Item or ItemCollection (a FeatureCollection of Items)."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RoadsegError(f"not JSON ({err})", path) from err
    if not isinstance(doc, dict):
        raise RoadsegError("not a STAC Item or ItemCollection (a JSON object)", path)
    items = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
    if not items or any(
        not isinstance(i, dict) or i.get("type") != "Feature" or "assets" not in i for i in items
    ):
        raise RoadsegError("not a STAC Item or ItemCollection (Features with assets)", path)
    scenes, chosen = [], set()
    for item in items:
        key = _stac_asset(item, asset, path)
        chosen.add(key)
        href = item["assets"][key]["href"]
        where = href if is_address(href) or href.startswith("/") else str(path.parent / href)
        scenes.append(Scene(safe_id(str(item.get("id") or _stem(href))), where))
    print(f"{path}: {len(items)} STAC item{'s' if len(items) > 1 else ''}, asset "
          f"{', '.join(sorted(chosen))}" + ("" if asset else " (its visual asset; --asset KEY for another)"))  # fmt: skip
    return scenes


def _folder_scenes(path: Path) -> list[Scene]:
    """The rasters of a folder; hidden files (``._*`` of macOS too) and, beside
    georeferenced rasters, pictures (previews) are left out and named."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    rasters = [p for p in files if p.suffix.lower() in RASTER_SUFFIXES]
    if any(p.suffix.lower() not in PICTURE_SUFFIXES for p in rasters):
        pictures = [p for p in rasters if p.suffix.lower() in PICTURE_SUFFIXES]
        rasters = [p for p in rasters if p not in pictures]
        if pictures:
            names = ", ".join(p.name for p in pictures[:3]) + (" ..." if len(pictures) > 3 else "")
            print(f"{path}: {len(pictures)} picture{'s' if len(pictures) > 1 else ''} left out "
                  f"beside its GeoTIFFs ({names}); list them by name to predict them")  # fmt: skip
    if not rasters:
        raise RoadsegError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in this folder", path)
    return [Scene(p.stem, str(p)) for p in rasters]


def _text_scenes(path: Path) -> list[Scene]:
    """The scenes of a text file: a path or address per line (relative paths from the
    file's folder; ``#`` comments)."""
    from roadseg.paths import read_text

    scenes = []
    for line in (
        ln.strip() for ln in read_text(path, "list of scenes").lstrip("\ufeff").splitlines()
    ):
        if not line or line.startswith("#"):
            continue
        where = line if is_address(line) or Path(line).is_absolute() else str(path.parent / line)
        scenes.append(Scene(_stem(line), where))
    return scenes


def scene_list(specs: list[str], asset: str | None = None) -> list[Scene]:
    """The scenes of ``specs``: raster paths or addresses (``https://``, ``s3://``,
    ``/vsicurl/``...), folders (their rasters), text files (a path per line, relative to
    the file; ``#`` comments) and STAC JSON; sorted by id, each id once."""
    scenes: list[Scene] = []
    for spec in specs:
        path = Path(spec)
        if is_address(spec):
            scenes.append(Scene(_stem(spec), spec))
        elif path.is_dir():
            scenes += _folder_scenes(path)
        elif path.suffix.lower() == ".txt":
            scenes += _text_scenes(path)
        elif path.suffix.lower() == ".json":
            scenes += _stac_scenes(path, asset)
        else:
            scenes.append(Scene(path.stem, str(path)))
    by_id: dict[str, Scene] = {}
    for scene in scenes:
        if scene.id in by_id and _same_file(by_id[scene.id].path, scene.path):
            continue
        if scene.id in by_id:
            raise RoadsegError(
                f"two scenes would write {scene.id}.tif: {by_id[scene.id].path} and "
                f"{scene.path}; rename one (or give each its own --out folder)"
            )
        by_id[scene.id] = scene
    return [by_id[k] for k in sorted(by_id)]


def _same_file(a: str, b: str) -> bool:
    """Whether two spellings of a scene are one file (relative and absolute, links)."""
    if a == b:
        return True
    if is_address(a) or is_address(b):
        return False
    return Path(a).resolve() == Path(b).resolve()


# (index variable, its base, count variable) of the schedulers --shard auto reads
SCHEDULERS = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"),
    ("AWS_BATCH_JOB_ARRAY_INDEX", 0, None),
    ("JOB_COMPLETION_INDEX", 0, None),  # Kubernetes indexed jobs
)


def parse_shard(text: str | None, base: int = 1, env=None) -> tuple[int, int]:
    """The shard ``(I, N)``, I 1-based, of ``--shard``: ``I/N`` (``base`` 1: I from 1 to N;
    ``--shard-base 0``: from 0 to N-1), or ``auto[/N]``: the index the scheduler set
    (Slurm's array task id from its minimum, AWS Batch's and Kubernetes' 0-based index),
    N from Slurm or given; None -> (1, 1)."""
    import os

    if text is None:
        return 1, 1
    env = os.environ if env is None else env
    if text.split("/")[0] == "auto":
        return _auto_shard(text, env)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not base <= i < n + base:
        hint = " (0-based? add --shard-base 0, or use --shard auto)" if i == 0 and base == 1 else ""
        raise RoadsegError(
            f"--shard must be I/N with {base} <= I <= {'N-1' if base == 0 else 'N'}, got {text!r}{hint}"
        )
    return i - base + 1, n


def _auto_shard(text: str, env) -> tuple[int, int]:
    given = text.split("/")[1] if "/" in text else None
    for index, base, count in SCHEDULERS:
        if env.get(index, "") == "":
            continue
        low = int(env.get(base, 0)) if isinstance(base, str) else base
        step = int(env.get("SLURM_ARRAY_TASK_STEP", 1)) if index.startswith("SLURM") else 1
        n = given or (env.get(count) if count else None)
        if n is None:
            raise RoadsegError(f"--shard auto: {index} is set but not the number of shards: "
                               "give it, --shard auto/N")  # fmt: skip
        return parse_shard(f"{(int(env[index]) - low) // step}/{n}", base=0, env=env)
    names = ", ".join(s[0] for s in SCHEDULERS)
    raise RoadsegError(f"--shard auto: none of {names} is set; give --shard I/N")


def shard(scenes: list[Scene], i: int, n: int) -> list[Scene]:
    """Scene I, I+N, I+2N, ... of the list (1-based): a deterministic share."""
    return scenes[i - 1 :: n]
