"""APLS, average path length similarity (SpaceNet roads; Van Etten et al., 2018).

A road graph is scored by the routes it allows, not by its pixels: a gap of a few pixels
that cuts a road costs little pixel F1 but breaks every route across it. For control
points of the true graph (its junctions and ends, and points every ``interval`` pixels
along its lines), each pair joined by a path of length L there is compared with the
path between the same places in the proposal (each control point snapped to the
proposal's nearest point within ``snap`` pixels): the pair scores
1 - min(1, |L - L'| / L), and 0 when a point has no proposal within ``snap`` or the
proposal has no path. The mean over pairs is one direction; APLS is the harmonic mean of
true -> proposal (missed roads) and proposal -> true (false roads).

Simplifications, documented: control points are snapped to the nearest node of the other
graph densified every ``snap / 4`` pixels rather than inserted into its edges exactly,
and all pairs are used (SpaceNet samples them on large graphs). Both graphs are built
from centre lines (:mod:`roadseg.vectors`), in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy.spatial import cKDTree

INTERVAL = 20.0  # pixels between control points along a line
SNAP = 8.0  # pixels: how far a control point may lie from the other graph


def _densify(line: np.ndarray, spacing: float) -> np.ndarray:
    """The line's vertices plus points at most ``spacing`` apart between them."""
    out = [line[:1]]
    for a, b in zip(line[:-1], line[1:], strict=True):
        n = max(1, math.ceil(math.hypot(*(b - a)) / spacing))
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def road_graph(lines: Sequence[np.ndarray], *spacings: float) -> nx.Graph:
    """Lines ``(n, 2)`` as a graph: nodes are points (lines sharing an end share the node),
    edges carry their length; points are added every ``spacing`` along each line, for
    each spacing in turn (so the points of the first are nodes of the finer ones too)."""
    graph = nx.Graph()
    for line in lines:
        pts = np.asarray(line, np.float64)
        for spacing in spacings:
            pts = _densify(pts, spacing)
        keys = [tuple(np.round(p, 6)) for p in pts]
        for a, b, pa, pb in zip(keys[:-1], keys[1:], pts[:-1], pts[1:], strict=True):
            if a != b:
                graph.add_edge(a, b, length=float(math.hypot(*(pb - pa))))
        if len(keys) == 1:
            graph.add_node(keys[0])
    return graph


def _one_way(truth: nx.Graph, proposal: nx.Graph, snap: float) -> float | None:
    """Mean pair score of the truth's control points routed through the proposal; None
    when the truth has no pair of connected points."""
    controls = list(truth.nodes)
    if len(controls) < 2:
        return None
    prop_nodes = list(proposal.nodes)
    snapped: list[tuple | None] = [None] * len(controls)
    if prop_nodes:
        tree = cKDTree(np.array(prop_nodes))
        dist, idx = tree.query(np.array(controls), distance_upper_bound=snap)
        snapped = [
            prop_nodes[i] if math.isfinite(d) else None for d, i in zip(dist, idx, strict=True)
        ]
    scores = []
    prop_cache: dict[tuple, dict] = {}
    for i, a in enumerate(controls):
        true_len = nx.single_source_dijkstra_path_length(truth, a, weight="length")
        for j in range(i + 1, len(controls)):
            b = controls[j]
            length = true_len.get(b)
            if not length:
                continue  # not connected in the truth: no route to compare
            sa, sb = snapped[i], snapped[j]
            if sa is None or sb is None:
                scores.append(0.0)
                continue
            if sa not in prop_cache:
                prop_cache[sa] = nx.single_source_dijkstra_path_length(
                    proposal, sa, weight="length"
                )
            other = prop_cache[sa].get(sb)
            scores.append(0.0 if other is None else 1 - min(1.0, abs(length - other) / length))
    return float(np.mean(scores)) if scores else None


def apls(
    truth: Sequence[np.ndarray],
    proposal: Sequence[np.ndarray],
    *,
    interval: float = INTERVAL,
    snap: float = SNAP,
) -> float:
    """APLS of proposal lines against true lines (both lists of ``(n, 2)`` pixel points).
    Two graphs without routes score 1; one without the other 0."""
    t_controls, p_controls = road_graph(truth, interval), road_graph(proposal, interval)
    t_dense, p_dense = (
        road_graph(truth, interval, snap / 4),
        road_graph(proposal, interval, snap / 4),
    )
    missed = _one_way(t_controls, p_dense, snap)
    false = _one_way(p_controls, t_dense, snap)
    if missed is None and false is None:
        return 1.0
    if missed is None or false is None:
        return 0.0
    if missed == 0 or false == 0:
        return 0.0
    return 2 / (1 / missed + 1 / false)


def mask_apls(truth: np.ndarray, predicted: np.ndarray, **kw) -> float:
    """APLS between the centre lines of two road masks ``(H, W)`` of one tile."""
    from roadseg.vectors import vectorize_array

    lines = [[p.pixels.astype(np.float64) for p in vectorize_array(m)] for m in (truth, predicted)]
    return apls(*lines, **kw)
