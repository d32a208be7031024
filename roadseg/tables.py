"""README tables that cannot drift: blocks of the README copied from ``results/`` files.

A block in a markdown file is an opening comment naming a file, then the text that
``roadseg tables`` writes, then a closing comment::

    <!-- table: results/cpu/table.md -->
    (the contents of results/cpu/table.md)
    <!-- /table -->

``roadseg tables README.md`` rewrites every block from its file (atomically);
``--check`` changes nothing and fails, naming the blocks, when one differs from its file.
The paths are relative to the markdown file. ``make reproduce`` writes those files, and the
test suite runs the check, so a number in the README is a number a command wrote.
"""

from __future__ import annotations

import re
from pathlib import Path

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path

BLOCK = re.compile(
    r"(?P<open><!-- table: (?P<path>[^ ]+?) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)",
    re.DOTALL,
)


def render(markdown: Path) -> tuple[str, list[str]]:
    """The markdown file's text with every block rewritten from its file, and the paths of
    the blocks that changed."""
    text = markdown.read_text()
    opened = text.count("<!-- table: ")
    blocks = list(BLOCK.finditer(text))
    if len(blocks) != opened:
        raise RoadsegError(
            f"{opened} table blocks open but {len(blocks)} close with <!-- /table -->", markdown
        )
    changed: list[str] = []

    def fill(match: re.Match) -> str:
        source = markdown.parent / match["path"]
        if not source.is_file():
            raise RoadsegError(
                f"the table block of {match['path']} has no such file (make reproduce writes it)",
                markdown,
            )
        body = source.read_text()
        body = body if body.endswith("\n") else body + "\n"
        if body != match["body"]:
            changed.append(match["path"])
        return match["open"] + body + match["close"]

    return BLOCK.sub(fill, text), changed


def update_tables(markdown: str | Path, *, check: bool = False) -> list[str]:
    """Rewrite the blocks of ``markdown`` (unless ``check``); the paths of the blocks that
    were (or would be) changed."""
    markdown = Path(markdown)
    if not markdown.is_file():
        raise RoadsegError("no such markdown file", markdown)
    text, changed = render(markdown)
    if changed and not check:
        with atomic_path(markdown) as tmp:
            tmp.write_text(text)
    return changed
