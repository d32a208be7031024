"""roadseg: road segmentation of aerial and satellite imagery, from tiles to leaderboard CSVs."""

from roadseg.errors import RoadsegError

__version__ = "0.1.0"
__all__ = ["RoadsegError", "__version__"]
