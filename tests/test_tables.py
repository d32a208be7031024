"""README tables written from results files: rewritten, checked, and the README current."""

import subprocess
import sys
from pathlib import Path

import pytest

from roadseg.errors import RoadsegError
from roadseg.tables import update_tables

ROOT = Path(__file__).resolve().parents[1]


def test_blocks_are_rewritten_from_their_files_and_checked(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("| a |\n|---|\n| 0.5 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- table: results/t.md -->\n| a |\n|---|\n| 0.4 |\n<!-- /table -->\nend\n"
    )
    assert update_tables(readme, check=True) == ["results/t.md"]
    assert "0.4" in readme.read_text()  # a check changes nothing
    assert update_tables(readme) == ["results/t.md"]
    assert readme.read_text() == (
        "intro\n<!-- table: results/t.md -->\n| a |\n|---|\n| 0.5 |\n<!-- /table -->\nend\n"
    )
    assert update_tables(readme, check=True) == []

    readme.write_text("<!-- table: results/none.md -->\n<!-- /table -->\n")
    with pytest.raises(RoadsegError, match="results/none.md has no such file"):
        update_tables(readme)
    readme.write_text("<!-- table: results/t.md -->\nno end\n")
    with pytest.raises(RoadsegError, match="1 table blocks open but 0 close"):
        update_tables(readme)


def test_the_readme_tables_are_the_results_files():
    """Every results table of the README is the file make reproduce wrote, to the byte."""
    assert update_tables(ROOT / "README.md", check=True) == []
    assert "<!-- table: results/cpu/table.md -->" in (ROOT / "README.md").read_text()


def test_the_check_fails_with_a_line_naming_the_stale_block(tmp_path):
    (tmp_path / "t.md").write_text("new\n")
    readme = tmp_path / "R.md"
    readme.write_text("<!-- table: t.md -->\nold\n<!-- /table -->\n")
    done = subprocess.run(
        [sys.executable, "-m", "roadseg", "tables", str(readme), "--check"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"roadseg: error: {readme}: tables out of date: t.md; run roadseg tables {readme}"
    )
