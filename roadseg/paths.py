"""The files a command reads and writes: checked before any work starts, read with one-line errors.

Every command names its inputs and outputs to :func:`check_io` before it loads a model or
reads a tile, so a bad output path costs nothing and can never destroy an input:

- an output must not be an existing folder (or, for an output folder, an existing file);
- an output must not be one of the command's inputs: the same file by path, through a
  link, or by inode (a hard link);
- the folder an output goes into must exist or be creatable, and be writable.

Every text file (CSV, YAML, JSON) is read through :func:`read_text`, which turns OS and
decoding errors into a :class:`~roadseg.errors.RoadsegError` that names the file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from roadseg.errors import RoadsegError

PathLike = str | Path


def describe_os_error(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found (was it moved or deleted while roadseg ran?)"
    if isinstance(err, IsADirectoryError):
        return "is a folder; expected a file"
    if isinstance(err, NotADirectoryError):
        return "a part of this path is a file, not a folder"
    if isinstance(err, PermissionError):
        return "permission denied (check the file's owner and mode)"
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"cannot be written ({err.strerror}): free some space or write elsewhere; "
            "an earlier file of this name is unchanged"
        )
    return f"cannot be read ({err.strerror or type(err).__name__})"


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def read_text(path: PathLike, what: str = "file") -> str:
    """The UTF-8 text of a file; a missing, binary or unreadable file is a RoadsegError."""
    path = check_input(path, what=what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RoadsegError(
            f"not a text {what} (byte {err.object[err.start]:#04x} at offset {err.start} is not "
            "UTF-8): is it the file you meant?",
            path,
        ) from err
    except OSError as err:  # removed, replaced by a folder or made unreadable just now
        raise RoadsegError(describe_os_error(err), path) from err


def load_yaml(path: PathLike, what: str = "YAML file"):
    """A YAML file's content, with one-line errors for unreadable files and bad syntax."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise RoadsegError(f"not valid YAML{where} ({problem})", path) from err


def check_input(path: PathLike, *, folder: bool = False, what: str | None = None) -> Path:
    """``path`` if it exists as a file (or a folder); else a RoadsegError naming it."""
    if not str(path).strip():
        raise RoadsegError(f"an empty path where {_a(what or 'file')} belongs")
    path = Path(path)
    what = what or ("folder" if folder else "file")
    if not path.exists():
        hint = " (a broken link)" if path.is_symlink() else ""
        raise RoadsegError(f"{what} not found{hint}", path)
    if folder and not path.is_dir():
        raise RoadsegError(f"is a file; expected {_a(what)}", path)
    if not folder and path.is_dir():
        raise RoadsegError(f"is a folder; expected {_a(what)}", path)
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise RoadsegError("permission denied (check the owner and mode)", path)
    return path


def _inode(path: PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file a path leads to (links followed); None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _writable_ancestor(path: Path) -> None:
    """Raise unless the folder ``path`` exists or can be created, and can be written."""
    ancestor = path
    while not ancestor.exists() and not ancestor.is_symlink():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RoadsegError(f"cannot be created: {ancestor} is a file, not a folder", path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RoadsegError(f"cannot write into {ancestor} (permission denied)", path)


def check_output(path: PathLike, inputs: Iterable[PathLike] = (), *, folder: bool = False) -> Path:
    """``path`` if a command may write it (a file, or a folder of outputs); see module doc."""
    path = Path(path)
    if not str(path).strip():
        raise RoadsegError("an empty output path; name a file to write")
    if folder and path.exists() and not path.is_dir():
        raise RoadsegError("is a file; name a folder for the outputs", path)
    if not folder and path.is_dir():
        raise RoadsegError("is a folder; name a file to write (e.g. a path inside it)", path)
    # An output that does not exist yet cannot be an input; one that does is the same file
    # as an input when both lead to one inode: the same path, a symbolic or a hard link.
    target = _inode(path)
    if target is not None:
        for source in inputs:
            if _inode(source) == target:
                shown = "" if Path(source) == path else f" ({source})"
                raise RoadsegError(
                    f"is also an input of this command{shown}; writing it would destroy it: "
                    "choose another output path",
                    path,
                )
    _writable_ancestor(path if folder else path.parent)
    return path


def check_io(
    *,
    inputs: Iterable[PathLike] = (),
    input_folders: Iterable[PathLike] = (),
    outputs: Iterable[PathLike] = (),
    output_folders: Iterable[PathLike] = (),
    protected: Iterable[PathLike] = (),
) -> None:
    """Check a command's paths before it starts work (module doc).

    ``protected``: further files the command reads (the tiles of a dataset, say) that no
    output may overwrite; they are not checked for existence.
    """
    inputs = [check_input(p) for p in inputs]
    folders = [check_input(p, folder=True) for p in input_folders]
    sources = [*inputs, *(Path(p) for p in protected)]
    for out in outputs:
        check_output(out, sources)
    for out in output_folders:
        check_output(out, [*inputs, *folders], folder=True)
