"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

from pathlib import Path


def squash(err: BaseException, limit: int = 300) -> str:
    """A multi-line error message as one line, cut at ``limit`` characters."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value) -> bool:
    """A whole number as a user's file or option gives one (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A number as a user's file or option gives one (``True`` is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class RoadsegError(Exception):
    """A problem with the user's input, configuration or environment.

    The CLI prints it as one line (``path: problem``) and exits with status 2.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and how to go on (the CLI prints it after
    ``roadseg: interrupted:``)."""
