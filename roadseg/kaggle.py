"""Send a submission to a Kaggle competition and print the leaderboard's answer.

Needs the ``kaggle`` package (``pip install roadseg[kaggle]``) and an API token
(``~/.kaggle/kaggle.json``, ``~/.kaggle/access_token``, or ``KAGGLE_USERNAME`` and
``KAGGLE_KEY``). Without them, or offline, it says so and prints the command to run later.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from roadseg.errors import RoadsegError


def submit_command(csv: str | Path, competition: str, message: str) -> str:
    """The kaggle CLI command that sends this submission."""
    return shlex.join(
        ["kaggle", "competitions", "submit", "-c", competition, "-f", str(csv), "-m", message]
    )


def has_credentials() -> bool:
    """Whether a Kaggle API token is configured for this user."""
    home = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    env = (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or os.environ.get(
        "KAGGLE_API_TOKEN"
    )
    return bool(env) or (home / "kaggle.json").is_file() or (home / "access_token").is_file()


def upload(csv: str | Path, competition: str, message: str) -> str:
    """Submit ``csv``; return the leaderboard's answer for it (status and public score)."""
    later = submit_command(csv, competition, message)
    if not has_credentials():
        raise RoadsegError(
            "no Kaggle API token (kaggle.com > Settings > API > Create New Token, saved as "
            f"~/.kaggle/kaggle.json); to send it later: {later}",
            csv,
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise RoadsegError(
            f"the kaggle package is not installed (pip install kaggle); then: {later}", csv
        ) from err
    api = KaggleApi()
    try:
        api.authenticate()
        api.competition_submit(str(csv), message, competition, quiet=True)
        latest = api.competition_submissions(competition)[0]
    except Exception as err:  # network and API errors come in many types
        raise RoadsegError(
            f"could not submit to Kaggle ({type(err).__name__}: {err}); offline? later: {later}",
            csv,
        ) from err
    status = getattr(latest, "status", "submitted")
    score = getattr(latest, "public_score", None) or getattr(latest, "publicScore", None)
    return f"Kaggle {competition}: {status}" + (
        f", public score {score}" if score else " (score pending)"
    )
