"""Tests of helpers.tasks.mst_graphs: drawings read as graphs, scored against the MST, and baselines."""
import networkx as nx
import numpy as np
import pytest
import torch

from helpers.tasks import mst, mst_graphs

CANVAS = 60


def drawing(points, edges) -> np.ndarray:
    return mst.draw_tree(points, edges, canvas=CANVAS)


TRIANGLE = np.array([[10.0, 10.0], [45.0, 12.0], [20.0, 45.0]])


def test_the_target_reads_back_as_exactly_its_tree():
    points = TRIANGLE
    tree = mst.minimum_spanning_tree(points, CANVAS)
    graph = mst_graphs.drawn_graph(drawing(points, tree), points, mst.POINT_RADIUS)
    assert graph == set(tree)
    scores = mst_graphs.graph_scores(graph, tree, 3)
    assert scores["exact"] and scores["tree"] and not scores["cycle"] and scores["edge_precision"] == 1.0


def test_a_missing_edge_an_extra_edge_and_a_cycle_are_seen():
    points = TRIANGLE
    tree = mst.minimum_spanning_tree(points, CANVAS)
    missing = mst_graphs.graph_scores(mst_graphs.drawn_graph(drawing(points, tree[:1]), points, 2.0), tree, 3)
    assert missing["edge_recall"] == 0.5 and not missing["tree"] and not missing["exact"] and not missing["cycle"]
    all_three = [(0, 1), (0, 2), (1, 2)]
    cycle = mst_graphs.graph_scores(mst_graphs.drawn_graph(drawing(points, all_three), points, 2.0), tree, 3)
    assert cycle["cycle"] and not cycle["tree"] and cycle["edge_recall"] == 1.0
    assert cycle["edge_precision"] == pytest.approx(2 / 3)


def test_a_blob_away_from_the_points_adds_no_edge():
    points = TRIANGLE
    tree = mst.minimum_spanning_tree(points, CANVAS)
    image = drawing(points, tree)
    image[50:56, 45:52] = 1.0
    assert mst_graphs.drawn_graph(image, points, mst.POINT_RADIUS) == set(tree)


def test_ink_through_a_middle_point_is_two_edges_not_three():
    points = np.array([[10.0, 30.0], [30.0, 30.0], [50.0, 30.0]])
    image = drawing(points, [(0, 1), (1, 2)])
    assert mst_graphs.drawn_graph(image, points, mst.POINT_RADIUS) == {(0, 1), (1, 2)}


def test_baselines_on_known_graphs():
    line = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [50.0, 0.0]])
    assert mst_graphs.relative_neighbourhood_graph(line) == [(0, 1), (1, 2), (2, 3)]
    assert mst_graphs.gabriel_graph(line) == [(0, 1), (1, 2), (2, 3)]
    assert mst_graphs.nearest_neighbour_graph(line) == [(0, 1), (1, 2), (2, 3)]   # 3 is nearest to 2
    two_pairs = np.array([[0.0, 0.0], [5.0, 0.0], [40.0, 0.0], [45.0, 0.0]])
    assert mst_graphs.nearest_neighbour_graph(two_pairs) == [(0, 1), (2, 3)]          # not connected
    assert mst.minimum_spanning_tree(two_pairs, CANVAS) == [(0, 1), (1, 2), (2, 3)]
    assert mst_graphs.close_pairs(line, 15.0) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("seed", range(30))
def test_nearest_neighbours_within_mst_within_relative_neighbourhood_within_gabriel(seed):
    rng = np.random.default_rng(seed)
    points = mst.random_points(int(rng.integers(3, 16)), rng)
    tree = set(mst.minimum_spanning_tree(points))
    relative, gabriel = set(mst_graphs.relative_neighbourhood_graph(points)), set(mst_graphs.gabriel_graph(points))
    assert set(mst_graphs.nearest_neighbour_graph(points)) <= tree <= relative <= gabriel
    # and the Gabriel graph is planar, as it must be
    assert nx.check_planarity(nx.Graph(list(gabriel)))[0]


def test_scores_of_targets_and_baselines_over_a_batch():
    tasks = mst.make_tasks(12, np.random.default_rng(3), canvas=48, margin=6, min_points=3, max_points=7)
    perfect = mst_graphs.score_graphs(tasks.targets, tasks)
    assert perfect["exact_mst_rate"] == 1.0 and perfect["cycle_rate"] == 0.0 and perfect["edge_recall"] == 1.0
    gabriel = mst_graphs.score_graphs(mst.draw_graphs(tasks, mst_graphs.gabriel_graph), tasks)
    assert gabriel["edge_recall"] > 0.95 and gabriel["edge_precision"] < 1.0 and gabriel["cycle_rate"] > 0.0
    blank = mst_graphs.score_graphs(torch.zeros_like(tasks.targets) + tasks.inputs, tasks)
    assert blank["edge_recall"] == 0.0 and blank["exact_mst_rate"] == 0.0
    rates = mst_graphs.edge_rates(tasks.targets, tasks)
    assert all(rate in (None, 1.0) for rate in rates["mst_edges_drawn"].values())
    assert all(rate in (None, 0.0) for rate in rates["other_pairs_drawn"].values())
    with pytest.raises(ValueError, match="threshold"):
        mst_graphs.score_graphs(tasks.targets, tasks, threshold=0.0)
