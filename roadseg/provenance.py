"""What a result came from: the seed, the library versions and the git commit of a run.

Written as ``provenance.json`` into every training run's folder (``roadseg fit``), so a
number in a table can be traced to the code and the environment that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from roadseg.io import atomic_path

PACKAGES = (
    "roadseg", "torch", "torchvision", "pytorch-lightning", "segmentation-models-pytorch",
    "timm", "albumentations", "rasterio", "numpy", "pandas", "scikit-learn", "scipy",
    "onnx", "onnxruntime", "opencv-python-headless",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


CODE = ("roadseg", "configs", "pyproject.toml")  # what a change to makes results differ


def git_commit(
    where: Path | None = None, paths: tuple[str, ...] = ()
) -> dict[str, str | bool | None]:
    """The commit of the roadseg checkout (``None`` outside git) and whether it had changes
    (to ``paths`` of the checkout when given: results and docs written by a run are not)."""
    where = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=where, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    top = git("rev-parse", "--show-toplevel") if commit and paths else None
    scope = ["--", *(str(Path(top) / p) for p in paths)] if top else []
    status = git("status", "--porcelain", "--untracked-files=no", *scope) if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def provenance(seed: int | None, argv: list[str] | None = None) -> dict:
    import torch

    return {
        "seed": seed,
        "argv": list(argv or []),
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": package_versions(),
    }


def cpu() -> dict:
    """The CPU's model and the vector instructions its float kernels pick (the last digits
    of a float sum depend on them), from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or None, "flags": None}
    first = info.split("\n\n", 1)[0]  # the first core's
    fields = {
        k.strip(): v.strip()
        for k, v in (ln.split(":", 1) for ln in first.splitlines() if ":" in ln)
    }
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
    model = fields.get("model name")
    return {"model": model, "flags": [f for f in wanted if f in flags]}


def environment(backend: str) -> dict:
    """What a table's figures depend on beyond the plan and the seeds: the code, the
    libraries, the machine and the backend that predicted its evaluation rows."""
    import torch

    return {
        "git": git_commit(paths=CODE),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "evaluation_backend": backend,
        "packages": package_versions(),
    }


def file_stamps(paths) -> list[list]:
    """``[path, size, mtime_ns]`` of each file: what a cached result records of the
    checkpoints it came from, so that it is made again once one of them is rewritten."""
    stamps = []
    for path in map(Path, paths):
        stat = path.stat()
        stamps.append([str(path), stat.st_size, stat.st_mtime_ns])
    return stamps


def write_provenance(run_dir: str | Path, seed: int | None, argv: list[str] | None = None) -> Path:
    """Write ``provenance.json`` into ``run_dir`` atomically; returns its path."""
    path = Path(run_dir) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(provenance(seed, argv), indent=2) + "\n")
    return path
