"""What determines a scene's prediction: the one answer to "is this earlier work mine?".

Every place that reuses earlier work asks :func:`prediction_identity` and compares:

- a scene's parts folder (``<out>.parts/run.json``): finished chunks are resumed only when
  the identity matches; parts of another content of the scene are redone, parts made with
  other options are refused in one line naming the options (``--overwrite`` redoes them);
- a folder of many scenes (``run.json``): the run's part of the identity (:func:`run_identity`:
  everything but the scene); another run's folder is refused naming what differs;
- the manifest: a scene is done when its last line's identity hash is this run's for the
  scene's *content* and its output carries the same hash in its tags;
- each output GeoTIFF: ``roadseg_identity``, ``roadseg_models``, ``roadseg_decision`` and
  ``roadseg_version`` tags.

The identity holds content, not places: the scene's and each model's SHA-256 (a copy of a
model elsewhere, or a ``touch``, is the same model; another file under the same name is
not), every option that changes a pixel (per-member decisions, clean-up, bands, input
range, resolution, windows, chunks, output kind, TTA, merge, backend, precision) and
:data:`OUTPUT_FORMAT`, the version of what roadseg writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from roadseg.errors import RoadsegError

# Bump when the pixels or layout roadseg writes for the same identity change, so that
# outputs of an older roadseg are redone instead of reused.
OUTPUT_FORMAT = 2
_DIGESTS: dict[tuple, str] = {}  # (real path, size, mtime, inode) -> digest, per process
REMOTE_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/")


def is_remote(path: str) -> bool:
    """Whether ``path`` is read through one of GDAL's virtual file systems (network
    addresses, ``/vsicurl/``, ``/vsis3/``, ``/vsizip/``...) rather than as a local file."""
    return str(path).startswith("/vsi") or "://" in str(path)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a local file's bytes (``sha256:<hex>``), cached per process while the file
    (its path, size, time and inode) is unchanged."""
    path = str(path)
    try:
        st = os.stat(path)
    except OSError as err:
        from roadseg.paths import describe_os_error

        raise RoadsegError(describe_os_error(err), path) from err
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
        except OSError as err:
            from roadseg.paths import describe_os_error

            raise RoadsegError(describe_os_error(err), path) from err
        _DIGESTS[key] = f"sha256:{h.hexdigest()}"
    return _DIGESTS[key]


def scene_digest(path: str | Path) -> str:
    """What a scene's pixels are made of: the SHA-256 of every local file GDAL reads for it
    (the file, a VRT's sources, sidecars such as ``.aux.xml``, ``.ovr``, ``.msk``); for a
    scene read through a virtual file system (a URL, a zip), its address without the
    query (signed URLs change their token) and its header (size, type, georeference),
    as its bytes would have to be read a second time."""
    from roadseg.io import gdal_path, open_scene

    if is_remote(gdal_path(path)):
        return _remote_digest(str(path))
    with open_scene(path) as src:
        files = sorted({str(Path(f).resolve()) for f in src.files} | {str(Path(path).resolve())})
    if len(files) == 1:
        return file_digest(files[0])
    h = hashlib.sha256("".join(file_digest(f) for f in files).encode())
    return f"sha256-files:{h.hexdigest()}"


def _remote_digest(path: str) -> str:
    from roadseg.io import open_scene

    with open_scene(path) as src:
        header = [path.split("?")[0], src.width, src.height, src.count, list(src.dtypes),
                  str(src.crs), list(src.transform)[:6], src.nodata]  # fmt: skip
    return "remote:" + hashlib.sha256(json.dumps(header, default=str).encode()).hexdigest()


def run_identity(options, *, output: str, chunk: int, cog: bool = False) -> dict:
    """Everything but the scene that determines an output of ``options``
    (:class:`~roadseg.options.PredictOptions`): models by content, per-member decisions,
    every reading and prediction option, the output kind and format."""
    decisions = [d.describe() for d, _ in options.member_decisions()]
    mask_like = output == "mask" or options.merge == "vote"
    device, precision, backend = options.engine()
    return {
        "format": OUTPUT_FORMAT,
        "models": [file_digest(c) for c in options.ckpt],
        # a vote's probability is the share of members voting road: their decisions
        # count; a mask is made by the output decision
        "decisions": decisions if options.merge == "vote" else None,
        "decision": options.output_decision().describe() if mask_like else None,
        "tta": bool(options.tta), "merge": options.merge if options.networks > 1 else None,
        "window": options.window, "overlap": options.overlap,
        "device": device, "precision": precision, "backend": backend,
        "read": dataclasses.asdict(options.read_options()),
        "output": output, "chunk": chunk, "cog": bool(cog),
    }  # fmt: skip


def prediction_identity(scene: str | Path, run: dict, digest: str | None = None) -> dict:
    """The identity of ``scene``'s prediction by a run of :func:`run_identity` ``run``
    (``digest``: the scene's :func:`scene_digest`, when known)."""
    return {"scene": digest or scene_digest(scene), **run}


def identity_hash(identity: dict) -> str:
    """A short, stable hash of an identity (what manifests and output tags record)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two identities, in a readable order."""
    return [k for k in sorted({*old, *new}) if old.get(k) != new.get(k)]


def describe_differences(old: dict, new: dict, prefix: str = "") -> str:
    """``"decision (pixel 0.55 ... -> pixel 0.2 ...), read.resolution (auto -> 0.6)"``:
    what differs, nested options key by key."""
    parts = []
    for key in differences(old, new):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            parts.append(describe_differences(a, b, f"{prefix}{key}."))
        elif key in ("models", "scene"):
            parts.append(f"{prefix}{key} (other content)")
        else:
            parts.append(f"{prefix}{key} ({_short(a)} -> {_short(b)})")
    return ", ".join(parts) or "nothing"


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
