"""Two small pieces of geometry that the MST task and its graph measurements share.

``helpers.tasks.mst`` draws the task's pictures and finds the tree; ``helpers.tasks.mst_graphs``
reads drawings back as graphs. Both need the distance from pixels to a segment and a union-find,
which live here so that neither module has to import the other.
"""
from __future__ import annotations

import numpy as np


def find_root(parent: list[int], node: int) -> int:
    """The representative of ``node``'s set, halving the path on the way (union-find)."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def segment_distance(xs: np.ndarray, ys: np.ndarray, start, end) -> np.ndarray:
    """Distance from every pixel centre (xs, ys) to the segment ``start``-``end``."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    # position of the closest point along the segment, as a fraction 0..1 of its length
    along = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(xs - (x0 + along * dx), ys - (y0 + along * dy))
