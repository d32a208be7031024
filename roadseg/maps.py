"""The maps the tiles were cut from: tile positions by edge matching, and tiles in context.

The cil-2022 tiles (training and test alike) are adjacent crops of two large maps. Two
tiles are neighbours when one's edge continues the other's: the mean absolute
difference between A's last column and B's first column is about as small as between
two neighbouring columns inside a tile, and much smaller than for any other tile.
Following right and below neighbours gives every tile a ``(map, col, row)`` place; a
tile that fits nowhere is a map of its own, so datasets without neighbours (cil-2020,
Massachusetts, a user's own tiles) behave exactly as single tiles.

Knowing the places, a tile can be predicted *in context*: cut out of its map with a
margin of its neighbours' pixels around it (:func:`context_image`), predicted, and
cropped back. Where a neighbour is missing (the map's real edge, or a tile nobody has)
the margin is the tile's own reflection, as the network's padding would be.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

from roadseg.index import TileFinder, distinct_roots, distinct_tiles, scan
from roadseg.io import image_to_rgb, read_image, read_raster
from roadseg.patches import PATCH_SIZE

# A match counts when it is within MATCH_FACTOR of the tile's own column-to-column
# difference and clearly better than the runner-up (measured on cil-2022: the best match
# is 1.07x the inner difference at the median, the runner-up 2.5x).
MATCH_FACTOR = 1.5
RUNNER_UP_RATIO = 0.7
LAYOUT_COLUMNS = ("map", "col", "row")
EDGE_BLOCK = 16  # tiles whose edges are compared with all others at once
CACHED_TILES = 512  # decoded tiles a MapIndex keeps: a tile is read again for each neighbour
CACHED_EDGES = 4096  # tiles whose edges are kept (19 KB for a 400x400 tile)
CONTEXT_OFF = "context: off (each tile predicted alone)"


def _edges(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    edges: dict[str, list[np.ndarray]] = {"left": [], "right": [], "top": [], "bottom": []}
    inner = []
    for path in frame["image"]:
        stat = os.stat(path)
        sides, within = _tile_edges(str(path), stat.st_size, stat.st_mtime_ns)
        for side, edge in zip(edges, sides, strict=True):
            edges[side].append(edge)
        inner.append(within)
    return edges, np.array(inner)


# runs of one process (make reproduce, a layout with and without other tiles) share the
# decoding; a file changed since it was read (size, time) is read again
@functools.lru_cache(maxsize=CACHED_EDGES)
def _tile_edges(path: str, size: int, mtime: int) -> tuple[tuple[np.ndarray, ...], float]:
    """A tile's left, right, top and bottom edges and its mean column-to-column difference
    (only these are kept of the decoded image)."""
    im = read_image(path)
    sides = (im[:, :, 0], im[:, :, -1], im[:, 0, :], im[:, -1, :])
    return tuple(e.copy() for e in sides), float(np.abs(np.diff(im, axis=2)).mean())


def _edge_distances(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Mean absolute difference of every edge in ``a`` with every edge in ``b`` (inf where
    their lengths differ: tiles of other sizes are never neighbours)."""
    dist = np.full((len(a), len(b)), np.inf)
    for length in {e.shape[-1] for e in a}:
        ia = [i for i, e in enumerate(a) if e.shape[-1] == length]
        ib = [j for j, e in enumerate(b) if e.shape[-1] == length]
        if ia and ib:
            ea, eb = np.stack([a[i] for i in ia]), np.stack([b[j] for j in ib])
            # a block of rows at a time: all pairs at once would hold len(a) x len(b) edges
            # (334 MB for the 264 cil-2022 tiles); the values are the same
            for start in range(0, len(ia), EDGE_BLOCK):
                rows = ia[start : start + EDGE_BLOCK]
                block = ea[start : start + EDGE_BLOCK]
                dist[np.ix_(rows, ib)] = np.abs(block[:, None] - eb[None]).mean(axis=(2, 3))
    return dist


def neighbour_pairs(frame: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    """(i, j, dx, dy): tile j lies one tile right of (dx=1) or below (dy=1) tile i."""
    edges, inner = _edges(frame)
    pairs = []
    for a, b, dx, dy in (("right", "left", 1, 0), ("bottom", "top", 0, 1)):
        dist = _edge_distances(edges[a], edges[b])
        np.fill_diagonal(dist, np.inf)
        ranked = np.sort(dist, axis=1)
        runner_up = ranked[:, 1] if dist.shape[1] > 1 else np.full(len(frame), np.inf)
        for i in range(len(frame)):
            j = int(np.argmin(dist[i]))
            if (
                dist[i, j] <= MATCH_FACTOR * inner[i]
                and dist[i, j] <= RUNNER_UP_RATIO * runner_up[i]
            ):
                pairs.append((i, j, dx, dy))
    return pairs


def tile_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """``map``, ``col``, ``row`` of every tile, in ``frame``'s row order.

    Columns and rows count from 0 at each map's top-left tile; maps are numbered by
    size, largest first (then by their first tile). A tile with no neighbour is a map of
    its own. Where the links disagree (two paths giving a tile different places) the
    first place found is kept.
    """
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=int) for c in LAYOUT_COLUMNS})
    links: dict[int, list[tuple[int, int, int]]] = {}
    for i, j, dx, dy in neighbour_pairs(frame):
        links.setdefault(i, []).append((j, dx, dy))
        links.setdefault(j, []).append((i, -dx, -dy))
    position: dict[int, tuple[int, int, int]] = {}
    for start in range(len(frame)):
        if start in position:
            continue
        position[start] = (start, 0, 0)
        queue = deque([start])
        while queue:
            i = queue.popleft()
            m, x, y = position[i]
            for j, dx, dy in links.get(i, []):
                if j not in position:
                    position[j] = (m, x + dx, y + dy)
                    queue.append(j)
    out = pd.DataFrame([position[i] for i in range(len(frame))], columns=["start", "col", "row"])
    out["col"] -= out.groupby("start")["col"].transform("min")
    out["row"] -= out.groupby("start")["row"].transform("min")
    sizes = out.groupby("start").size()
    order = sorted(sizes.index, key=lambda s: (-sizes[s], s))
    out["map"] = out["start"].map({s: k for k, s in enumerate(order)})
    return out[list(LAYOUT_COLUMNS)]


def place_tiles(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (reindexed) with ``map``, ``col``, ``row`` columns (see :func:`tile_positions`)."""
    frame = frame.reset_index(drop=True)
    return pd.concat([frame.drop(columns=list(LAYOUT_COLUMNS), errors="ignore"),
                      tile_positions(frame)], axis=1)  # fmt: skip


def has_neighbours(layout: pd.DataFrame) -> bool:
    """Whether any tile of a placed frame shares its map with another."""
    return bool(layout.groupby("map").size().max() > 1) if len(layout) else False


class MapIndex:
    """Looks tiles up by place: ``(map, col, row)`` -> image path, for context windows.

    Args:
        layout: a frame placed by :func:`place_tiles` (``image``, ``map``, ``col``, ``row``).
        cached_tiles: decoded tiles kept by :meth:`image` (raw pixels, 640 KB for a
            400x400 RGBA tile), so that a tile is decoded once, not once for itself and
            once for each of its up to 8 neighbours.
    """

    def __init__(self, layout: pd.DataFrame, *, cached_tiles: int = CACHED_TILES):
        self.layout = layout.reset_index(drop=True)
        self._raw = functools.lru_cache(maxsize=cached_tiles)(read_raster)
        self._at = {
            (int(m), int(c), int(r)): str(p)
            for m, c, r, p in zip(
                layout["map"], layout["col"], layout["row"], layout["image"], strict=True
            )
        }
        self._place: dict[str, tuple[int, int, int] | None] = {
            str(p): k for k, p in self._at.items()
        }
        self._finder: TileFinder | None = None

    def image(self, path: str | Path) -> np.ndarray:
        """A tile as float32 RGB ``(3, H, W)`` in [0, 1], decoded once (see ``cached_tiles``)."""
        return image_to_rgb(self._raw(str(path)), path)

    def place(self, image: str | Path) -> tuple[int, int, int] | None:
        """``(map, col, row)`` of the tile ``image``: by its path, else the tile of the layout
        it is under another path or as a copy (:class:`roadseg.index.TileFinder`); ``None``
        when it is not on the maps."""
        key = str(image)
        if key not in self._place:
            if self._finder is None:
                self._finder = TileFinder(list(self.layout["image"]))
            k = self._finder.find(key)
            row = None if k is None else self.layout.iloc[k]
            self._place[key] = (
                None if row is None else (int(row["map"]), int(row["col"]), int(row["row"]))
            )
        return self._place[key]

    def neighbour(self, image: str | Path, dx: int, dy: int) -> str | None:
        """The image ``dx`` tiles right and ``dy`` tiles down of ``image`` (None: no tile)."""
        place = self.place(image)
        if place is None:
            return None
        m, c, r = place
        return self._at.get((m, c + dx, r + dy))


def context_image(image: str | Path, maps: MapIndex, margin: int, *, read=None) -> np.ndarray:
    """The tile ``image`` as float32 ``(C, H + 2 margin, W + 2 margin)``: its own pixels in
    the centre and its neighbours' pixels around it, as far as they are known.

    Where the map ends (no tile on that side) the margin is the reflection of what lies
    inside it, the way a network pads an image: the whole map reflected at its edge. A
    missing neighbour is filled the same way from the tiles beside it. ``margin`` must
    be smaller than the tile. ``read``: how a tile is read (default: the map index's
    cached reader, :meth:`MapIndex.image`).
    """
    read = read or maps.image
    centre = read(image)
    _, h, w = centre.shape
    if margin <= 0:
        return centre
    if margin > min(h, w) - 2:
        raise ValueError(f"margin {margin} must be at most the tile's side - 2 ({h}x{w})")

    def tile(dx: int, dy: int) -> np.ndarray | None:
        path = maps.neighbour(image, dx, dy)
        pixels = read(path) if path is not None else None
        return pixels if pixels is not None and pixels.shape == centre.shape else None

    def column(middle: np.ndarray, dx: int) -> np.ndarray:
        """``middle`` (the tile at ``dx``) with the margin above and below: (C, H + 2m, W)."""
        above, below = tile(dx, -1), tile(dx, 1)
        top = above[:, h - margin :] if above is not None else middle[:, margin:0:-1]
        bottom = below[:, :margin] if below is not None else middle[:, h - 2 : h - 2 - margin : -1]
        return np.concatenate([top, middle, bottom], axis=1)

    middle = column(centre, 0)
    left_tile, right_tile = tile(-1, 0), tile(1, 0)
    left = (
        column(left_tile, -1)[:, :, w - margin :]
        if left_tile is not None
        else middle[:, :, margin:0:-1]
    )
    right = (
        column(right_tile, 1)[:, :, :margin]
        if right_tile is not None
        else middle[:, :, w - 2 : w - 2 - margin : -1]
    )
    return np.ascontiguousarray(np.concatenate([left, middle, right], axis=2))


def mosaic(
    layout: pd.DataFrame, map_id: int, *, column: str = "image", read=read_image
) -> np.ndarray:
    """One map's tiles put together: float32 ``(C, rows * H, cols * W)``, NaN where no tile
    is. ``column``, ``read``: the files that make it (images, or masks) and their reader."""
    tiles = layout[layout["map"] == map_id]
    first = read(tiles[column].iloc[0])
    c, h, w = first.shape
    cols, rows = int(tiles["col"].max()) + 1, int(tiles["row"].max()) + 1
    canvas = np.full((c, rows * h, cols * w), np.nan, np.float32)
    for path, col, row in zip(tiles[column], tiles["col"], tiles["row"], strict=True):
        canvas[:, row * h : (row + 1) * h, col * w : (col + 1) * w] = read(path)
    return canvas


def context_for(roots: list, tiles: pd.DataFrame, margin: int) -> tuple[MapIndex | None, int, str]:
    """Maps for predicting ``tiles`` in context: every tile of the dataset ``roots`` (the
    checkpoint's own data first, then the folder of the tiles to predict; ``None`` entries
    and folders that do not exist here are skipped) and ``tiles`` placed together. Returns
    the map index, the margin (0 and no index when ``margin`` is 0 or no tile has a
    neighbour) and a line that says so.

    Each folder and each tile counts once however it is reached (relative or absolute
    path, a link, a copy: :func:`roadseg.index.distinct_tiles`, first row kept), so the
    maps are the same whatever path the data is given by. When the other tiles cost the
    first root's tiles neighbours they have on their own maps, a second line says how many.
    """
    if margin <= 0:
        return None, 0, CONTEXT_OFF
    # a root that is not here (a checkpoint trained elsewhere) adds no neighbours
    found = [r for r in distinct_roots(roots) if Path(r).is_dir()]
    frames = [scan(r) for r in found]
    layout = place_tiles(distinct_tiles(pd.concat([*frames, tiles], ignore_index=True)))
    maps, margin, line = context_in(layout, tiles, margin)
    own_here = bool(roots) and roots[0] is not None and Path(roots[0]).is_dir()
    lost, had = _lost_links(frames[0], layout) if own_here else (0, 0)
    if lost:
        line += (
            f"\ncontext: {lost} of the {had} neighbour links of the checkpoint's own maps "
            f"({roots[0]}) are lost among the tiles added: tiles there are predicted with "
            "less of their map"
        )
    return maps, margin, line


def _links(layout: pd.DataFrame) -> set[tuple[int, int]]:
    """(i, j) for every tile j one place right of or below tile i on a placed frame."""
    at = {
        (m, c, r): i
        for i, (m, c, r) in enumerate(zip(layout["map"], layout["col"], layout["row"], strict=True))
    }
    return {
        (i, at[(m, c + dx, r + dy)])
        for (m, c, r), i in at.items()
        for dx, dy in ((1, 0), (0, 1))
        if (m, c + dx, r + dy) in at
    }


def _lost_links(own: pd.DataFrame, layout: pd.DataFrame) -> tuple[int, int]:
    """(lost, had): the neighbour links of the tiles of ``own`` (the first rows of
    ``layout``) on their own maps, and how many of them ``layout`` does not have."""
    own = distinct_tiles(own)
    if len(layout) == len(own):  # nothing added: the same tiles make the same maps
        return 0, 0
    had = _links(place_tiles(own))
    kept = _links(layout.iloc[: len(own)])
    return len(had - kept), len(had)


def context_in(
    layout: pd.DataFrame, tiles: pd.DataFrame, margin: int
) -> tuple[MapIndex | None, int, str]:
    """:func:`context_for` on a layout already made (:func:`place_tiles` of every tile
    known, ``tiles`` among them)."""
    if margin <= 0:
        return None, 0, CONTEXT_OFF
    if not has_neighbours(layout):
        return None, 0, "context: off (no tile has a neighbour on a map)"
    # The neighbours' pixels reach one tile far at most; whole 16x16 patches, so that the
    # patch grid of the context window is the tile's own (a vote labels patches there).
    smallest = int(min(tiles["height"].min(), tiles["width"].min()))
    margin = min(margin, smallest - 2) // PATCH_SIZE * PATCH_SIZE
    if margin <= 0:
        return None, 0, "context: off (tiles too small for a margin of whole patches)"
    maps = MapIndex(layout)
    sizes = layout.groupby("map").size()
    places = [maps.place(image) for image in tiles["image"]]  # by content, whatever the path
    placed = [p for p in places if p is not None]
    lonely = sum(int(sizes[m] == 1) for m, _, _ in placed)
    return (
        maps,
        margin,
        (
            f"context: {margin} px of neighbouring tiles around each tile ({len(layout)} tiles on "
            f"{(sizes > 1).sum()} maps of several tiles; {lonely} of the "
            f"{len(placed)} tiles predicted stand alone)"
        ),
    )


SPLIT_COLOURS = {"train": "#2ca02c", "val": "#ff7f0e", "test": "#1f77b4"}
SPLIT_NAMES = {"train": "labelled (training)", "val": "labelled (validation)", "test": "test"}


def write_maps(
    roots: list[str | Path], out: str | Path, *, val_fraction: float = 0.2, seed: int = 0,
    scale: int = 8,
) -> pd.DataFrame:  # fmt: skip
    """Place every tile of ``roots`` (the first is the main dataset; the others, such as a
    folder of test tiles released later, are placed among its tiles) and write, under
    ``out``: ``layout.csv``; ``map_<k>.png``, each map of several tiles at 1/``scale`` size
    with the tiles outlined by split; ``map_<k>_image.tif`` and ``map_<k>_labels.tif``,
    the map's pixels and its known labels (255 road, 0 background, 128 unknown), which a
    GIS program opens; where a map has no tile, the image is nodata (an internal mask)
    and the labels 128. The validation split is the one training configs make with the
    same ``val_fraction`` and ``seed``. Returns the layout."""
    import rasterio

    from roadseg.index import split_train_val
    from roadseg.io import atomic_path, read_mask_grey

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = distinct_tiles(pd.concat([scan(r) for r in distinct_roots(roots)], ignore_index=True))
    frame = split_train_val(frame, val_fraction=val_fraction, seed=seed)
    layout = place_tiles(frame).sort_values(["map", "row", "col"]).reset_index(drop=True)
    table = layout.drop(columns="split").rename(columns={"image": "file", "stage": "split"})[
        ["tile_id", "file", "split", "map", "col", "row", "source"]
    ]
    with atomic_path(out / "layout.csv") as tmp:
        table.to_csv(tmp, index=False)
    for m in sorted(layout["map"].unique()):
        tiles = layout[layout["map"] == m]
        if len(tiles) < 2:
            continue
        image = mosaic(tiles, m)
        labelled = tiles[tiles["mask"].notna()]
        labels = np.full(image.shape[1:], 128, np.uint8)
        if len(labelled):
            grey = mosaic(labelled, m, column="mask", read=lambda p: read_mask_grey(p)[None])[0]
            known = np.isfinite(grey)
            labels[: grey.shape[0], : grey.shape[1]][known] = np.where(grey[known] > 0.5, 255, 0)
        pixels = np.nan_to_num(image * 255).round().astype(np.uint8)
        for name, data, nodata in (("image", pixels, None), ("labels", labels[None], 128)):
            profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
                       "count": data.shape[0], "dtype": "uint8", "compress": "deflate",
                       "tiled": True, "nodata": nodata}  # fmt: skip
            with (
                atomic_path(out / f"map_{m}_{name}.tif") as tmp,
                warnings.catch_warnings(),  # pixel coordinates: no georeference to write
            ):
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(data)
                    if name == "image":  # missing tiles: an internal mask, as a GIS reads it
                        dst.write_mask(np.isfinite(image).all(axis=0).astype(np.uint8) * 255)
        _draw_map(tiles, pixels, out / f"map_{m}.png", m, scale)
    return table


def _draw_map(tiles: pd.DataFrame, pixels: np.ndarray, path: Path, m: int, scale: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    from roadseg.io import atomic_path

    small = pixels[:, ::scale, ::scale].transpose(1, 2, 0)
    h, w = int(tiles["height"].iloc[0]) / scale, int(tiles["width"].iloc[0]) / scale
    fig, ax = plt.subplots(figsize=(small.shape[1] / 60 + 1, small.shape[0] / 60 + 1.2))
    ax.imshow(small)
    for col, row, stage, tid in zip(tiles["col"], tiles["row"], tiles["stage"], tiles["tile_id"],
                                    strict=True):  # fmt: skip
        colour = SPLIT_COLOURS[stage]
        ax.add_patch(
            Rectangle((col * w + 1, row * h + 1), w - 2, h - 2, fill=False, ec=colour, lw=1.5)
        )
        ax.text(col * w + 3, row * h + 9, str(tid), color="white", fontsize=6,
                bbox={"fc": colour, "ec": "none", "pad": 0.5})  # fmt: skip
    counts = tiles["stage"].value_counts()
    ax.legend(
        handles=[
            Patch(fc="none", ec=c, lw=1.5, label=f"{SPLIT_NAMES[s]}: {counts.get(s, 0)}")
            for s, c in SPLIT_COLOURS.items()
        ],  # fmt: skip
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    cols, rows = int(tiles["col"].max()) + 1, int(tiles["row"].max()) + 1
    ax.set_title(f"map {m}: {len(tiles)} tiles on {cols} x {rows} (1/{scale} size)")
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
