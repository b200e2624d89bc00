"""Tests of helpers.toys: forward functions, stop-gradient, the drag solver and rendering (widgets: test_widgets)."""
import ast
import inspect
import math

import numpy as np
import pytest
import torch

from helpers import toys

F64 = torch.float64


def vec(*values):
    return torch.tensor(values, dtype=F64)


# ------------------------------------------------------------------------ forward functions

def test_chain_points_match_a_hand_computation():
    # up 1, then turn right by 90 degrees and go 2: (0,0) -> (0,1) -> (2,1)
    points = toys.chain_points(vec(math.pi / 2, -math.pi / 2), [1.0, 2.0])
    assert torch.allclose(points, vec(0, 0, 0, 1, 2, 1).reshape(3, 2), atol=1e-12)


def test_chain_points_origin_heading_and_scalar_length():
    points = toys.chain_points(vec(0.0, math.pi / 2, math.pi / 2), 0.5, origin=(1.0, 2.0), heading=math.pi)
    expected = vec(1, 2, 0.5, 2, 0.5, 1.5, 1, 1.5).reshape(4, 2)
    assert torch.allclose(points, expected, atol=1e-12)


def test_chain_points_bad_input():
    with pytest.raises(ValueError, match="at least one segment"):
        toys.chain_points(torch.zeros(0, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="lengths"):
        toys.chain_points(torch.zeros(3, dtype=F64), [1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        toys.chain_points(torch.zeros(3, dtype=torch.long), 1.0)


def test_tree_tips_match_a_hand_computation():
    left, right, ratio = 0.3, 0.5, 0.6
    nodes = toys.tree_points(vec(left, right, ratio), depth=1, trunk_length=2.0)
    up = math.pi / 2
    top = np.array([0.0, 2.0])
    left_tip = top + 1.2 * np.array([math.cos(up + left), math.sin(up + left)])
    right_tip = top + 1.2 * np.array([math.cos(up - right), math.sin(up - right)])
    assert nodes.shape == (4, 2)
    assert np.allclose(nodes.numpy(), [[0, 0], top, left_tip, right_tip], atol=1e-12)
    assert toys.tree_leaves(1) == [2, 3]


def test_tree_depth_two_follows_heap_numbering():
    params = vec(0.4, 0.2, 0.5)
    nodes = toys.tree_points(params, depth=2)
    # node 5 is the right child of node 2 (the left branch): heading up + left - right, length 0.25
    heading = math.pi / 2 + 0.4 - 0.2
    expected = nodes[2] + 0.25 * vec(math.cos(heading), math.sin(heading))
    assert torch.allclose(nodes[5], expected, atol=1e-12)
    assert len(toys.tree_edges(2)) == 7 and toys.tree_edges(2).tolist()[4] == [2, 5]


@pytest.mark.parametrize("depth", [0, 1, 3, 6])
def test_tree_counts(depth):
    nodes = toys.tree_points(vec(0.5, 0.5, 0.7), depth)
    assert nodes.shape == (2 ** (depth + 1), 2)
    assert len(toys.tree_edges(depth)) == 2 ** (depth + 1) - 1
    assert len(toys.tree_leaves(depth)) == 2 ** depth


def test_tree_bad_input():
    with pytest.raises(ValueError, match="depth"):
        toys.tree_points(vec(0.5, 0.5, 0.7), -1)
    with pytest.raises(TypeError, match="depth"):
        toys.tree_points(vec(0.5, 0.5, 0.7), 2.5)
    with pytest.raises(ValueError, match="length ratio"):
        toys.tree_points(vec(0.5, 0.5), 2)


@pytest.mark.parametrize("order", [0, 1, 4, 9])
def test_dragon_point_count_and_ends(order):
    points = toys.dragon_points(vec(0.5, 0.5), order)
    assert points.shape == (2 ** order + 1, 2)
    assert torch.allclose(points[0], vec(0, 0)) and torch.allclose(points[-1], vec(1, 0))


def test_heighway_dragon_has_unit_steps_and_right_angles():
    order = 6
    points = toys.dragon_points(vec(0.5, 0.5), order)
    steps = points[1:] - points[:-1]
    lengths = torch.linalg.vector_norm(steps, dim=1)
    assert torch.allclose(lengths, torch.full_like(lengths, 2 ** (-order / 2)), atol=1e-12)
    dots = (steps[1:] * steps[:-1]).sum(1)
    assert torch.allclose(dots, torch.zeros_like(dots), atol=1e-12)  # every turn is +-90 degrees
    # order 2 by hand: the corner (.5,.5), then corners on alternating sides of the two halves
    small = toys.dragon_points(vec(0.5, 0.5), 2)
    assert torch.allclose(small, vec(0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0, 1, 0).reshape(5, 2), atol=1e-12)


def test_dragon_bad_input():
    with pytest.raises(ValueError, match="order"):
        toys.dragon_points(vec(0.5, 0.5), -2)
    with pytest.raises(ValueError, match="complex"):
        toys.dragon_points(vec(0.5, 0.5, 0.1), 3)


def test_complex_multiply():
    assert torch.allclose(toys.complex_multiply(vec(1, 2), vec(3, -1)), vec(5, 5))


# ----------------------------------------------------------------------------- stop-gradient

def test_pin_keeps_values_and_cuts_gradient():
    params = vec(1.0, 2.0, 3.0).requires_grad_(True)
    used = toys.pin(params, [False, True, False])
    assert torch.equal(used, params.detach())
    (used ** 2).sum().backward()
    assert params.grad.tolist() == [2.0, 0.0, 6.0]
    with pytest.raises(ValueError, match="mask"):
        toys.pin(params, [True, False])


def make_chain(n=5, pinned=None):
    return toys.DragToy("chain", lambda a: toys.chain_points(a, 1.0), torch.full((n,), 0.3, dtype=F64),
                        toys.chain_edges(n), handles=range(1, n + 1), pinned=pinned)


def test_point_jacobian_matches_finite_differences():
    params = vec(0.2, -0.4, 0.7).requires_grad_(True)
    point = toys.chain_points(params, 1.0)[3]
    jacobian = toys.point_jacobian(point, params)
    eps = 1e-6
    for i in range(3):
        shift = torch.zeros(3, dtype=F64)
        shift[i] = eps
        ahead, behind = toys.chain_points(params.detach() + shift, 1.0), toys.chain_points(params.detach() - shift, 1.0)
        numeric = (ahead[3] - behind[3]) / (2 * eps)
        assert torch.allclose(jacobian[:, i], numeric, atol=1e-8)


# ---------------------------------------------------------------------------------- solver

def straight_path(start, end, frames):
    """``frames`` targets [frames, 2] from ``start`` to ``end`` at even speed."""
    return torch.stack([torch.lerp(start.double(), end.double(), s) for s in torch.linspace(0, 1, frames)])


def test_solver_reaches_a_reachable_chain_target():
    toy = make_chain(5)
    goal = toys.chain_points(vec(0.9, -0.5, 0.4, -0.8, 0.2), 1.0)[5]  # reachable by construction
    distances = toy.drag_along(5, straight_path(toy.points()[5], goal, 20), steps_per_frame=3)
    assert distances[-1] < 1e-6
    assert torch.allclose(toy.points()[5], goal, atol=1e-6)


def test_solver_distance_only_shrinks_for_an_unreachable_target():
    toy = make_chain(4)
    far = vec(6.0, 8.0)  # 10 away from the base; the chain is 4 long
    distances = [toy.step(4, far, 1) for _ in range(40)]
    assert all(b <= a for a, b in zip(distances, distances[1:]))
    assert distances[-1] == pytest.approx(10.0 - 4.0, abs=1e-4)  # straight towards the target


def test_solver_drags_a_tree_leaf_and_a_dragon_point():
    depth = 4
    tree = toys.DragToy("tree", lambda p: toys.tree_points(p, depth), [0.5, 0.4, 0.7], toys.tree_edges(depth),
                        handles=toys.tree_leaves(depth))
    leaf = toys.tree_leaves(depth)[5]
    goal = toys.tree_points(vec(0.35, 0.6, 0.75), depth)[leaf]
    for _ in range(10):
        tree.step(leaf, goal, 5)
    assert tree.distance(leaf, goal) < 1e-6
    dragon = toys.DragToy("dragon", lambda f: toys.dragon_points(f, 6), [0.5, 0.5], toys.polyline_edges(65))
    goal = toys.dragon_points(vec(0.45, 0.58), 6)[20]
    for _ in range(10):
        dragon.step(20, goal, 5)
    assert dragon.distance(20, goal) < 1e-6


def test_pinned_parameters_stay_exactly_unchanged():
    # variant (b): the first two joints are pinned, the tip is dragged
    pinned = torch.tensor([True, True, False, False, False])
    toy = make_chain(5, pinned=pinned)
    before = toy.params.detach().clone()
    toy.drag_along(5, straight_path(toy.points()[5], vec(1.0, 3.0), 15), 3)
    assert torch.equal(toy.params.detach()[pinned], before[pinned])
    assert not torch.equal(toy.params.detach()[~pinned], before[~pinned])
    grad = toy.gradient(5, [-1.0, 2.0])  # a new target, so the free angles do get gradient
    assert torch.all(grad[pinned] == 0) and torch.any(grad[~pinned] != 0)


def test_pin_function_of_the_dragged_point():
    # variant (a): everything from the dragged point on is pinned
    toy = make_chain(5, pinned=lambda k: torch.arange(5) >= k)
    before = toy.params.detach().clone()
    for _ in range(5):
        toy.step(3, [1.0, 2.0], 3)
    assert torch.equal(toy.params.detach()[3:], before[3:])
    assert not torch.equal(toy.params.detach()[:3], before[:3])


def test_bad_drags_are_refused():
    toy = make_chain(4)
    with pytest.raises(ValueError, match="out of range"):
        toy.step(7, [0.0, 1.0])
    with pytest.raises(ValueError, match="one point"):
        toy.step(2, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="steps"):
        toy.step(2, [0.0, 1.0], steps=0)
    with pytest.raises(ValueError, match="path"):
        toy.drag_along(2, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="out of range"):
        toys.DragToy("x", lambda a: toys.chain_points(a, 1.0), [0.1], toys.chain_edges(1), handles=[5])


def test_reset_restores_the_parameters():
    toy = make_chain(3)
    start = toy.params.detach().clone()
    toy.step(3, [0.0, 2.0], 5)
    toy.reset()
    assert torch.equal(toy.params.detach(), start)


# ----------------------------------------------------------------------------------- drawing

def test_renderer_draws_the_segments():
    toy = make_chain(3)
    renderer = toys.DrawingRenderer(toy.bounds, panels=2)
    frame = renderer.frame([toys.toy_panel(toy, 3, [0.5, 0.5]), toys.toy_panel(toy)])
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert (frame.reshape(-1, 3) != 255).any(axis=1).mean() > 0.01  # something was drawn
    with pytest.raises(ValueError, match="panels"):
        renderer.frame([toys.toy_panel(toy)])


def test_gradient_graph_draws():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    toys.draw_gradient_graph(ax, 4, dragged=3, pinned=[False, True, False, False])
    assert len(ax.lines) == 10  # one edge per (angle, later point) pair: 4 + 3 + 2 + 1
    plt.close(fig)
    with pytest.raises(ValueError):
        toys.draw_gradient_graph(ax, 4, dragged=3, pinned=[False])


def test_toys_does_not_import_widgets():
    # the drawings and the solver work without any widget machinery: helpers.widgets builds on toys, not back
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(toys))):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.name for alias in node.names)
    assert names and not any("widget" in name for name in names), names
