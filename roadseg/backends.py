"""Where the network runs: PyTorch (eager, channels-last where trained so) or ONNX Runtime.

A backend maps a batch of images ``(B, 3, H, W)`` float32 in [0, 1] to road probabilities
``(B, K, H, W)``: each member's (``K`` = members, for a vote) or their mean (``K`` = 1),
averaged over the views of test-time augmentation. :class:`~roadseg.predict.Predictor`
does the rest (windows, blending, scenes) the same way for both.

``auto`` picks what ``make bench`` measured fastest on the device at hand: on a CPU,
ONNX Runtime when it is installed (1.6-1.9x PyTorch's channels-last path on 2 cores:
README, "Speed"); on a GPU, PyTorch (bf16 autocast; this package installs no CUDA build
of ONNX Runtime). ONNX Runtime runs fp32, its own threads set to PyTorch's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from roadseg.errors import RoadsegError

if TYPE_CHECKING:  # torch is imported by the torch backend only: exported files run without
    import torch

BACKENDS = ("auto", "torch", "onnx")
# A synthetic image both backends predict when an ONNX graph is built in memory: the
# graph is refused when they disagree (the exported file is checked on real tiles).
_PROBE_SHAPE = (1, 3, 150, 222)


def d4_forward(x, k: int):
    """The k-th of the 8 symmetries of the square (k // 4 flips, k % 4 quarter turns), of
    a tensor or an array ``(..., H, W)``."""
    if k == 0:
        return x
    if isinstance(x, np.ndarray):
        x = x[..., ::-1] if k >= 4 else x
        return np.ascontiguousarray(np.rot90(x, k % 4, axes=(-2, -1)))
    import torch

    x = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(x, k % 4, dims=(-2, -1))


def d4_inverse(x, k: int):
    """Undo :func:`d4_forward`."""
    if k == 0:
        return x
    if isinstance(x, np.ndarray):
        x = np.rot90(x, -(k % 4), axes=(-2, -1))
        return x[..., ::-1] if k >= 4 else x
    import torch

    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


@dataclass(frozen=True)
class Cpu:
    """The CPU where PyTorch is not installed (an exported file predicts without it)."""

    type: str = "cpu"

    def __str__(self) -> str:
        return "cpu"


def pick_device(device: str = "auto", *, exported: bool = False):
    """``auto`` -> CUDA when present, else CPU (a ``torch.device``, or :class:`Cpu` when
    torch is not installed). ``exported``: an exported file runs on the CPU only."""
    if exported:
        if device not in ("auto", "cpu"):
            raise RoadsegError(
                f"an exported file runs in ONNX Runtime on the CPU, not on {device}: leave out "
                "--device, or predict with its checkpoint"
            )
        return Cpu()
    try:
        import torch
    except ImportError:
        if device in ("auto", "cpu"):
            return Cpu()
        raise RoadsegError(
            f"--device {device} needs PyTorch: pip install 'roadseg[train]'"
        ) from None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def auto_precision(device, models: list | None = None, *, names=()) -> str:
    """``auto`` precision: bf16 on CUDA, fp32 on the CPU, and fp32 for scikit-learn's
    linear baselines anywhere (their coefficients were fit in float64: in bf16 0.4% of
    their patch labels flip), known from the networks ``models`` or the model ``names``
    checkpoints record (:data:`roadseg.models.SKLEARN_FITTED`)."""
    fitted = any(getattr(m, "sklearn_fitted", False) for net in models or [] for m in net.modules())
    if names and not fitted:
        from roadseg.models import SKLEARN_FITTED

        fitted = bool(set(names) & SKLEARN_FITTED)
    return "bf16" if device.type == "cuda" and not fitted else "fp32"


_THREADS: list[int] = []  # set_threads's, for ONNX Runtime sessions made after it


def set_threads(threads: int) -> None:
    """Threads each network may use in this process: PyTorch's (when installed) and ONNX
    Runtime's for the sessions made from now on."""
    _THREADS[:] = [threads]
    torch = sys.modules.get("torch")  # else TorchBackend sets it: an exported file needs none
    if torch is not None:
        torch.set_num_threads(threads)


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive whole number (PyTorch reads it when loaded;
    ONNX Runtime does not, so an exported file's session follows it here)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not (value.isascii() and value.isdigit()):  # "²" is a digit to isdigit
        return None
    return int(value) if 0 < int(value) <= MAX_THREADS else None


MAX_THREADS = 4096  # more is a typo (ONNX Runtime takes a 32-bit count)


def get_threads() -> int:
    """Threads a network uses in this process: :func:`set_threads`'s, else PyTorch's
    default when it is loaded, else ``OMP_NUM_THREADS``, else the CPUs this process may run
    on (torch is not imported for it: an exported file predicts without)."""
    if _THREADS:
        return _THREADS[0]
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return _omp_threads() or cpus


def onnx_threads() -> int | None:
    """ONNX Runtime's threads for an exported file: :func:`set_threads`'s (processes and Ray
    workers share the cores), else PyTorch's when it is loaded (what the torch backend
    uses), else ``OMP_NUM_THREADS`` (as PyTorch would), else ONNX Runtime's own default (the
    physical cores)."""
    if _THREADS:
        return _THREADS[0]
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else _omp_threads()


def choose_backend(backend: str, device) -> tuple[str, str]:
    """(backend, why) for ``auto``, ``torch`` or ``onnx`` on ``device`` (its ``type``)."""
    from roadseg.export import onnx_available

    if backend not in BACKENDS:
        raise RoadsegError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "onnx":
        if device.type != "cpu":
            raise RoadsegError(
                f"the onnx backend runs on the CPU; use --device cpu, or --backend torch on {device}"
            )
        return "onnx", "asked for"
    if backend == "torch":
        return "torch", "asked for"
    if device.type != "cpu":
        return "torch", f"auto: fastest measured on {device.type}"
    if onnx_available():
        return "onnx", "auto: fastest measured on CPUs"
    return "torch", "auto: onnxruntime is not installed (pip install 'roadseg[onnx]')"


class TorchBackend:
    """The networks run by PyTorch on ``device`` (bf16 autocast with ``precision`` bf16)."""

    name = "torch"

    def __init__(self, models: list[torch.nn.Module], device: torch.device, precision: str):
        import torch

        if _THREADS:  # set_threads before torch was loaded (a process of --processes, Ray)
            torch.set_num_threads(_THREADS[0])
        self.models = [m.to(device).eval() for m in models]
        self.device, self.precision = device, precision

    def __call__(self, images: np.ndarray, views: int, per_member: bool) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._views(images, views, per_member)

    def _views(self, images: np.ndarray, views: int, per_member: bool) -> np.ndarray:
        import torch

        x = torch.from_numpy(images).to(self.device, non_blocking=True)
        maps = len(self.models) if per_member else 1
        total = torch.zeros(x.shape[0], maps, *x.shape[-2:], device=self.device)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            for m, model in enumerate(self.models):
                slot = m if per_member else 0
                for k in range(views):
                    logits = model(d4_forward(x, k)).float()
                    total[:, slot] += torch.sigmoid(d4_inverse(logits, k))[:, 0]
        summed = views * len(self.models) // maps  # terms added into each map
        return (total / summed).cpu().numpy()


class OnnxBackend:
    """An ONNX graph of :mod:`roadseg.export` run by ONNX Runtime on the CPU."""

    name = "onnx"

    def __init__(self, model, members: int, threads: int | None = None, small=None):
        from roadseg.export import require_onnx, session

        require_onnx()
        import torch

        self.session = session(model, threads or torch.get_num_threads())
        self.members = members
        # (side, backend): images narrower than side go to PyTorch, which pads them by
        # replication where ONNX's reflect padding cannot (a scene's thin last chunk)
        self.small = small
        self.min_side = 0  # from_file's: narrower images are padded by replication to it

    @property
    def session(self):
        """ONNX Runtime's session; from_file's is made in a thread while the scene is read
        (in a forked child, made again: the parent's thread is not there)."""
        if self._session is None:
            if self._soon[0] != os.getpid():
                from roadseg.exported import session_soon

                self._soon = (os.getpid(), session_soon(*self._soon[2:]))
            self._session = self._soon[1].result()
        return self._session

    @session.setter
    def session(self, value) -> None:
        self._session = value

    def ready(self) -> None:
        """Wait for the session: a file ONNX Runtime cannot read is refused here, in one line."""
        self.session  # noqa: B018

    @classmethod
    def from_file(cls, exported) -> OnnxBackend:
        """The graph of an exported file (:class:`~roadseg.exported.ExportedModel`); images
        narrower than its smallest side are padded by replication to it, and cropped back."""
        from roadseg.exported import session_soon

        backend = cls.__new__(cls)
        threads = onnx_threads()
        soon = session_soon(exported.path, threads)
        backend._session, backend._soon = None, (os.getpid(), soon, exported.path, threads)
        backend.members, backend.small, backend.min_side = exported.members, None, exported.min_side
        return backend

    @classmethod
    def from_models(cls, models: list[torch.nn.Module], threads: int | None = None) -> OnnxBackend:
        """The graph of these models (tasks or :class:`SegmentationModel`), built in memory
        and checked against PyTorch on a probe image."""
        import torch

        from roadseg.export import TOLERANCE, build_graph, compare, min_side

        nets = [getattr(m, "model", m) for m in models]  # a RoadSegTask's network
        small = (
            max(int(min_side(n)) for n in nets),
            TorchBackend(nets, torch.device("cpu"), "fp32"),
        )
        backend = cls(build_graph(nets), len(nets), threads, small)
        probe = np.random.default_rng(0).random(_PROBE_SHAPE, dtype=np.float32)
        worst = compare(nets, backend.session, [probe[0]])
        if not worst <= TOLERANCE:
            raise RoadsegError(
                f"the ONNX graph disagrees with PyTorch by {worst:.1e}; use --backend torch"
            )
        return backend

    def __call__(self, images: np.ndarray, views: int, per_member: bool) -> np.ndarray:
        h, w = images.shape[-2:]
        if self.small and min(h, w) < self.small[0]:
            return self.small[1](images, views, per_member)
        if min(h, w) < self.min_side:
            if not getattr(self, "warned", False):  # once per model and process
                self.warned = True
                print(f"roadseg: warning: an image of {w} x {h} px, under the exported file's "
                      f"{self.min_side} px: padded by replication at full resolution, where its "
                      "checkpoint pads at the network's scale (road probability may differ by "
                      "up to about 0.3 on such thin images)", file=sys.stderr, flush=True)  # fmt: skip
            side = self.min_side
            pads = ((0, 0), (0, 0), (0, max(0, side - h)), (0, max(0, side - w)))
            padded = np.pad(images, pads, mode="edge")
            return self(padded, views, per_member)[..., :h, :w]
        name = "members" if per_member else "probability"
        total = None
        for k in range(views):
            (out,) = self.session.run([name], {"image": d4_forward(images, k)})
            out = d4_inverse(out, k)
            total = out if total is None else total + out
        return total / views if views > 1 else total
