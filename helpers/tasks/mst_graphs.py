"""Chapter 05 judged as graphs: which points did the drawing join, and is that their MST?

Pixel scores say how much ink lies where the tree's ink lies; they cannot say whether the drawing
*is* a tree. Here a drawing becomes a graph on its points, then it is compared edge by edge with
the minimum spanning tree, and with simple rules a drawing could follow instead of solving the task:

* ``drawn_graph``        the point pairs joined by ink (straight, not through a third point)
* ``graph_scores``       edge precision and recall against the MST, exact-MST, tree and cycle
* ``recall_by_length``   how often MST edges of each length are drawn; ``edge_rates`` the same for
                         MST edges against non-MST pairs of matched length (does the rule know which?)
* ``nearest_neighbour_graph``, ``relative_neighbourhood_graph``, ``gabriel_graph``, ``close_pairs``:
  the baselines. MST ⊆ relative neighbourhood graph ⊆ Gabriel graph, so a rule that drew the
  Gabriel graph would find every MST edge and some more.
"""
from __future__ import annotations

import itertools

import numpy as np

from .mst_geometry import find_root, segment_distance
from .mst_metrics import THRESHOLD, check_tasks, check_threshold, edges_drawn

#: Edge-length bins (pixels) of ``recall_by_length``.
LENGTH_BINS = (0.0, 10.0, 20.0, 30.0, float("inf"))


def pairs(count: int) -> list[tuple[int, int]]:
    """All point pairs ``(i, j)``, ``i < j``."""
    return list(itertools.combinations(range(count), 2))


def distances(points) -> np.ndarray:
    """The matrix of Euclidean distances between the points ``[n, 2]``."""
    points = np.asarray(points, dtype=np.float64)
    return np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))


def passes_through_a_point(points, i: int, j: int, radius: float) -> bool:
    """Does the segment i-j pass through the disc of a third point? Then ink along it joins i to
    that point and that point to j: two edges, not one."""
    points = np.asarray(points, dtype=np.float64)
    others = np.delete(points, [i, j], axis=0)
    if not len(others):
        return False
    return bool((segment_distance(others[:, 0], others[:, 1], points[i], points[j]) <= radius + 1.0).any())


def drawn_graph(drawing, points, radius: float, threshold: float = THRESHOLD) -> set[tuple[int, int]]:
    """The edges ``(i, j)`` a drawing makes: pairs whose straight segment is inked over its length
    (``mst_metrics.edges_drawn``) and does not pass through a third point's disc."""
    candidates = [(i, j) for i, j in pairs(len(points)) if not passes_through_a_point(points, i, j, radius)]
    joined = edges_drawn(drawing, points, candidates, radius, threshold)
    return {edge for edge, is_drawn in zip(candidates, joined) if is_drawn}


def components(count: int, edges) -> int:
    """The number of connected components of the graph with ``count`` nodes and ``edges`` (union-find)."""
    parent = list(range(count))
    for i, j in edges:
        parent[find_root(parent, i)] = find_root(parent, j)
    return len({find_root(parent, node) for node in range(count)})


def graph_scores(drawn: set, tree: list, count: int) -> dict:
    """A drawn graph against the MST ``tree`` of ``count`` points.

    Edge precision (drawn edges that are MST edges) and recall (MST edges drawn); ``exact``: the
    drawing is the MST; ``tree``: it is some spanning tree (connected, no cycle); ``cycle``: it
    has a cycle (more edges than a forest on its components can have). Fewer than 2 points, or a
    ``tree`` without ``count - 1`` edges, is refused: with no tree edge to find, recall is undefined."""
    tree = set(map(tuple, tree))
    if not (isinstance(count, (int, np.integer)) and count >= 2 and len(tree) == count - 1):
        raise ValueError(f"need at least 2 points and their minimum spanning tree of count - 1 edges, got count "
                         f"{count!r} and {len(tree)} tree edges: with no edge to draw there is nothing to score")
    right = len(drawn & tree)
    parts = components(count, drawn)
    return {"edge_precision": right / len(drawn) if drawn else 1.0, "edge_recall": right / len(tree),
            "exact": drawn == tree, "tree": parts == 1 and len(drawn) == count - 1,
            "cycle": len(drawn) > count - parts, "drawn_edges": len(drawn), "right_edges": right}


def score_graphs(drawings, tasks, threshold: float = THRESHOLD) -> dict:
    """``graph_scores`` for every drawing ``[N, 1, H, W]`` of ``tasks`` (a ``TaskBatch``), pooled:
    edge precision and recall over all edges, and the rates of exact MSTs, spanning trees and cycles."""
    threshold = check_threshold(threshold)
    check_tasks(drawings, tasks)
    per_task = [graph_scores(drawn_graph(drawing[0], points, tasks.point_radius, threshold), edges, len(points))
                for drawing, points, edges in zip(drawings, tasks.points, tasks.edges)]
    drawn = sum(scores["drawn_edges"] for scores in per_task)
    right = sum(scores["right_edges"] for scores in per_task)
    tree_edges = sum(len(edges) for edges in tasks.edges)
    return {"edge_precision": right / drawn if drawn else 1.0, "edge_recall": right / tree_edges,
            "exact_mst_rate": float(np.mean([s["exact"] for s in per_task])),
            "spanning_tree_rate": float(np.mean([s["tree"] for s in per_task])),
            "cycle_rate": float(np.mean([s["cycle"] for s in per_task])), "tasks": len(tasks)}


def length_bin(length: float, bins=LENGTH_BINS) -> int:
    return int(np.searchsorted(bins, length, side="right") - 1)


def edge_rates(drawings, tasks, threshold: float = THRESHOLD, bins=LENGTH_BINS) -> dict:
    """Per length bin: the fraction of MST edges drawn, and of NON-MST pairs drawn (pairs not through
    a third point). A rule that knows the tree draws the first often and the second rarely at the
    same length; one that joins every near pair draws both alike."""
    threshold = check_threshold(threshold)
    check_tasks(drawings, tasks)
    counts = np.zeros((2, len(bins) - 1, 2), dtype=int)     # [mst?, bin, (drawn, all)]
    for drawing, points, edges in zip(drawings, tasks.points, tasks.edges):
        drawn = drawn_graph(drawing[0], points, tasks.point_radius, threshold)
        tree, lengths = set(edges), distances(points)
        for i, j in pairs(len(points)):
            if passes_through_a_point(points, i, j, tasks.point_radius):
                continue
            row = counts[int((i, j) in tree), length_bin(lengths[i, j], bins)]
            row += (int((i, j) in drawn), 1)
    labels = [f"{low:g}-{high:g}" for low, high in zip(bins[:-1], bins[1:])]

    def rates(table):
        return {label: (float(drawn / total) if total else None) for label, (drawn, total) in zip(labels, table)}

    return {"mst_edges_drawn": rates(counts[1]), "other_pairs_drawn": rates(counts[0]),
            "mst_edges": dict(zip(labels, counts[1, :, 1].tolist())),
            "other_pairs": dict(zip(labels, counts[0, :, 1].tolist()))}


def recall_by_length(drawings, tasks, threshold: float = THRESHOLD, bins=LENGTH_BINS) -> dict:
    """The fraction of MST edges drawn, per edge-length bin (pixels)."""
    return edge_rates(drawings, tasks, threshold, bins)["mst_edges_drawn"]


# ------------------------------------------------------------------------------------ baselines

def nearest_neighbour_graph(points) -> list[tuple[int, int]]:
    """Every point joined to its nearest neighbour (a subgraph of the MST, often not connected)."""
    lengths = distances(points)
    np.fill_diagonal(lengths, np.inf)
    return sorted({tuple(sorted((i, int(np.argmin(lengths[i]))))) for i in range(len(lengths))})


def relative_neighbourhood_graph(points) -> list[tuple[int, int]]:
    """Pairs with no third point closer to both of them than they are to each other (contains the MST)."""
    lengths = distances(points)
    others = range(len(lengths))
    return [(i, j) for i, j in pairs(len(lengths))
            if not any(max(lengths[i, k], lengths[j, k]) < lengths[i, j] for k in others if k not in (i, j))]


def gabriel_graph(points) -> list[tuple[int, int]]:
    """Pairs whose diametral circle holds no third point (contains the relative neighbourhood graph)."""
    lengths = distances(points)
    return [(i, j) for i, j in pairs(len(lengths))
            if not any(lengths[i, k] ** 2 + lengths[j, k] ** 2 < lengths[i, j] ** 2
                       for k in range(len(lengths)) if k not in (i, j))]


def close_pairs(points, distance: float) -> list[tuple[int, int]]:
    """Every pair closer than ``distance`` pixels."""
    lengths = distances(points)
    return [(i, j) for i, j in pairs(len(lengths)) if lengths[i, j] < distance]


BASELINES = {"nearest neighbour": nearest_neighbour_graph, "relative neighbourhood": relative_neighbourhood_graph,
             "Gabriel": gabriel_graph}
