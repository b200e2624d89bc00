"""Bad input refused at its root (issue 35): each test fails on the code before its fix.

MST scores of degenerate tasks, step counts and speeds of every rule, downloads that lie or trickle,
emoji files of the wrong kind, and the small wrong-kind exceptions (Triton without a GPU, an empty image)."""
import numpy as np
import pytest
import torch

from helpers import display, fast
from helpers.tasks import mst, mst_graphs, mst_metrics

# ---------------------------------------------------------------------------- MST scores (item 7)

def batch_of(point_sets, canvas=40) -> mst.TaskBatch:
    made = [mst.make_task(np.asarray(points, dtype=np.float64), canvas) for points in point_sets]
    inputs = torch.from_numpy(np.stack([image for image, _, _ in made]))[:, None]
    targets = torch.from_numpy(np.stack([target for _, target, _ in made]))[:, None]
    return mst.TaskBatch(inputs, targets, [np.asarray(p, dtype=np.float64) for p in point_sets],
                         [edges for _, _, edges in made])


@pytest.mark.parametrize("gap", [0.0, 1.0])
def test_an_empty_drawing_of_points_that_coincide_or_touch_is_refused_not_perfect(gap):
    tasks = batch_of([[[20.0, 20.0], [20.0 + gap, 20.0]]])
    empty = torch.zeros_like(tasks.targets)
    with pytest.raises(ValueError, match="nothing to score.*further apart"):
        mst_metrics.pixel_scores(empty[0], tasks.targets[0], tasks.inputs[0])
    with pytest.raises(ValueError, match="nothing to score"):
        mst_metrics.score_drawings(empty, tasks)
    with pytest.raises(ValueError, match="nothing to score"):
        mst_metrics.precision_recall(empty, tasks)


def test_an_empty_drawing_of_a_real_task_still_scores_zero_recall():
    tasks = batch_of([[[8.0, 8.0], [30.0, 12.0], [15.0, 30.0]]])
    scores = mst_metrics.score_drawings(torch.zeros_like(tasks.targets), tasks)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0


def test_a_batch_whose_lists_differ_in_length_is_refused_not_scored_on_a_prefix():
    tasks = batch_of([[[8.0, 8.0], [30.0, 12.0]], [[10.0, 30.0], [30.0, 30.0]], [[8.0, 20.0], [32.0, 20.0]]])
    short = mst.TaskBatch(tasks.inputs, tasks.targets, tasks.points[:1], tasks.edges[:1])
    for score in (mst_metrics.score_drawings, mst_metrics.precision_recall, mst_graphs.score_graphs,
                  mst_graphs.edge_rates):
        with pytest.raises(ValueError, match="one drawing per task.*'points': 1"):
            score(tasks.targets, short)
    with pytest.raises(ValueError, match="'drawings': 2"):
        mst_graphs.score_graphs(tasks.targets[:2], tasks)


def test_graph_scores_of_a_single_point_or_a_wrong_tree_are_refused():
    with pytest.raises(ValueError, match="at least 2 points.*count 1 and 0 tree edges"):
        mst_graphs.graph_scores(set(), [], 1)
    with pytest.raises(ValueError, match="count 3 and 1 tree edges"):
        mst_graphs.graph_scores(set(), [(0, 1)], 3)
    assert mst_graphs.graph_scores(set(), [(0, 1)], 2)["edge_recall"] == 0.0


# ---------------------------------------------------------------------------- wrong-kind exceptions (item 8)

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU")
def test_uses_triton_on_a_machine_without_a_gpu_is_false_not_an_error():
    assert fast.uses_triton("cuda") is False
    assert fast.uses_triton("cuda:3") is False
    assert fast.uses_triton("cpu") is False


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 5), (3, 0, 4), (0, 3, 8, 8)])
def test_showing_an_empty_image_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"the image is empty \(shape"):
        display.show(np.zeros(shape, np.float32))
