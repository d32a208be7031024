"""Raster input and output: every image and mask goes through these functions.

Images come back as float32 ``(3, H, W)`` in [0, 1]; training masks as float32
``(1, H, W)`` in {0, 1}; grey masks (for the competition's patch rule) as float32
``(H, W)`` in [0, 1]. Outputs are written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from roadseg.errors import RoadsegError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Training masks: road where grey > 127 of 255. 0.5 lies between 127/255 and 128/255,
# so float rounding cannot move a pixel of value 127 or 128 across it.
MASK_THRESHOLD = 0.5


# (signature, end marker) of formats GDAL reads leniently: a truncated PNG comes back
# without a word (the missing rows are garbage), so look at both ends of the file first.
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"),
    ".jpg": (b"\xff\xd8", b"\xff\xd9"),
    ".jpeg": (b"\xff\xd8", b"\xff\xd9"),
}


def _check_complete(path: Path) -> None:
    magic = _MAGIC.get(path.suffix.lower())
    if magic is None or not path.is_file():
        return
    kind = path.suffix.lstrip(".").upper()
    with open(path, "rb") as f:
        head = f.read(len(magic[0]))
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read()
    if head != magic[0]:
        raise RoadsegError(f"not a readable raster image (the file is not a {kind} inside)", path)
    if magic[1] not in tail:
        raise RoadsegError(
            f"truncated or corrupt {kind} file (no end marker); download or export it again", path
        )


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    _check_complete(Path(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                yield src
        except RasterioIOError as err:
            if not Path(path).exists():
                raise RoadsegError("file not found", path) from err
            raise RoadsegError(f"not a readable raster image ({err})", path) from err


def gdal_path(path: str | Path) -> str:
    """A scene's path as GDAL reads it: ``https://``, ``s3://`` and ``gs://`` addresses
    through its network file systems (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``)."""
    text = str(path)
    for scheme, vsi in (("http://", "/vsicurl/"), ("https://", "/vsicurl/"),
                        ("s3://", "/vsis3/"), ("gs://", "/vsigs/")):  # fmt: skip
        if text.startswith(scheme):
            return vsi + (text if vsi == "/vsicurl/" else text[len(scheme) :])
    return text


def unreadable(path: str, err: Exception) -> str:
    """Why a scene cannot be opened, in words a user can act on."""
    if path.startswith(("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/")):
        return f"could not be read over the network ({err}); check the address and access, then run again"
    if path.startswith("/vsi"):
        return f"could not be read through GDAL's {path.split('/')[1]} ({err}): check the path inside it"
    if not Path(path).exists():
        return "file not found"
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        return "an empty file (0 bytes: an interrupted download or copy?)"
    return f"not a readable raster ({err})"


@contextlib.contextmanager
def open_scene(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    """A scene opened for reading by rasterio (addresses through :func:`gdal_path`); a
    file that cannot be opened is one line naming it."""
    where = gdal_path(path)
    with warnings.catch_warnings():  # a scene without georeference is said where it is read
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(where)
        except RasterioIOError as err:
            raise RoadsegError(unreadable(where, err), path) from err
    with src:
        yield src


def raster_shape(path: str | Path) -> tuple[int, int, int]:
    """(bands, height, width) of a raster, reading only its header."""
    with _open(path) as src:
        return src.count, src.height, src.width


def raster_dtype(path: str | Path) -> str:
    """The pixel type of a raster's first band, reading only its header."""
    with _open(path) as src:
        return src.dtypes[0]


def read_raster(
    path: str | Path, window: Window | None = None, *, out_shape=None, resampling=None
) -> np.ndarray:
    """Raw pixels ``(bands, H, W)`` in the file's own dtype, whole or one window;
    ``out_shape`` ``(H, W)``: resampled to that size (``resampling``, a rasterio one)."""
    with _open(path) as src:
        try:
            if out_shape is not None:
                return src.read(window=window, out_shape=(src.count, *out_shape),
                                resampling=resampling)  # fmt: skip
            return src.read(window=window, boundless=False)
        except (RasterioIOError, rasterio.errors.RasterioError) as err:
            raise RoadsegError(f"truncated or corrupt raster ({err})", path) from err


def _scale_to_unit(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """Pixel values of any supported dtype as float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise RoadsegError(
                f"float raster with values in [{finite.min():g}, {finite.max():g}]; "
                "roadseg expects floats in [0, 1] (rescale it, or save it as 8/16-bit)",
                path,
            )
        return np.nan_to_num(arr.astype(np.float32), nan=0.0)
    raise RoadsegError(f"unsupported pixel type {arr.dtype}; use 8-bit, 16-bit or float", path)


def image_to_rgb(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """Reduce raw ``(bands, H, W)`` pixels to float32 RGB ``(3, H, W)`` in [0, 1]."""
    bands = arr.shape[0]
    if bands == 1:  # greyscale: the same value in all three channels
        arr = np.repeat(arr, 3, axis=0)
    elif bands == 4:  # RGBA (the 2022 competition tiles): drop alpha
        arr = arr[:3]
    elif bands != 3:
        raise RoadsegError(
            f"image has {bands} bands; roadseg reads greyscale (1), RGB (3) or RGBA (4)", path
        )
    return _scale_to_unit(arr, path)


def read_image(path: str | Path, window: Window | None = None) -> np.ndarray:
    """An image (or one window of it) as float32 RGB ``(3, H, W)`` in [0, 1]."""
    return image_to_rgb(read_raster(path, window), path)


def mask_to_grey(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """Raw mask pixels ``(bands, H, W)`` as float32 grey ``(H, W)`` in [0, 1].

    Refuses masks that would silently train on nothing: 0/1-valued 8-bit masks (every
    pixel below the > 127 road rule) and colour masks whose channels differ.
    """
    if arr.shape[0] not in (1, 3, 4):
        raise RoadsegError(f"mask has {arr.shape[0]} bands; expected a single grey band", path)
    if arr.shape[0] > 1 and not (np.array_equal(arr[0], arr[1]) and np.array_equal(arr[0], arr[2])):
        raise RoadsegError(
            "colour mask (its red, green and blue differ); save it as grey, white = road", path
        )
    if arr.dtype == np.uint8 and arr.max() == 1:
        raise RoadsegError(
            "mask holds only the values 0 and 1; roadseg reads white (255) as road: "
            "multiply it by 255 (e.g. mask * 255) before training",
            path,
        )
    return _scale_to_unit(arr[0], path)


def read_mask_grey(path: str | Path, window: Window | None = None) -> np.ndarray:
    """A mask's raw grey levels ``(H, W)`` in [0, 1], as the competition's patch rule uses them."""
    return mask_to_grey(read_raster(path, window), path)


def binarize_mask(grey: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Grey mask in [0, 1] -> float32 ``(1, H, W)`` in {0, 1}: road where grey > threshold."""
    return (grey > threshold).astype(np.float32)[None]


def read_mask(
    path: str | Path, window: Window | None = None, threshold: float = MASK_THRESHOLD
) -> np.ndarray:
    """A training mask as float32 ``(1, H, W)`` in {0, 1} (road where grey > 127 of 255)."""
    return binarize_mask(read_mask_grey(path, window), threshold)


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (ending in ``suffix``, for writers that go by
    it); rename it onto ``path`` only on success, the file and the rename synced to disk
    first (a power cut leaves the old file or the new one, never a torn or empty one).

    The file gets the permissions a plain ``open(path, "w")`` would give it (those of the
    file it replaces, else 0666 less the umask), not the private 0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, path.stat().st_mode & 0o777 if path.exists() else _new_file_mode())
            fsync_path(tmp_path)  # on disk before it takes the name: a crash leaves old or new
        os.replace(tmp_path, path)
        fsync_path(path.parent)  # the rename itself
    except OSError as err:
        if err.filename is None:  # a full disk, a quota: say which output it was writing
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 ``(H, W)`` or ``(bands, H, W)`` array as a PNG, atomically."""
    arr = array[None] if array.ndim == 2 else array
    with (
        atomic_path(path) as tmp,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            tmp,
            "w",
            driver="PNG",
            width=arr.shape[2],
            height=arr.shape[1],
            count=arr.shape[0],
            dtype="uint8",
        ) as dst:
            dst.write(arr.astype(np.uint8))
        # GDAL's PNG driver writes an .aux.xml sidecar for some inputs; it is not wanted.
        Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
