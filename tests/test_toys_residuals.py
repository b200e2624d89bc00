"""Tests of helpers.toys beyond one dragged point: penalty rows, several points at once, framing of figures."""
import matplotlib
import numpy as np
import pytest
import torch

from helpers import toys

matplotlib.use("Agg")
F64 = torch.float64


def chain(n=5, **options):
    return toys.DragToy("chain", lambda a: toys.chain_points(a, 1.0), torch.full((n,), -0.25, dtype=F64),
                        toys.chain_edges(n), handles=range(1, n + 1), **options)


def test_penalty_moves_angles_the_point_does_not_depend_on_unless_they_are_pinned():
    # p3 depends on theta0..theta2 only; a bend penalty on every angle makes theta3, theta4 move too
    free = chain(penalty=lambda a: 0.3 * a)
    pinned = chain(penalty=lambda a: 0.3 * a, pinned=lambda k: torch.arange(5) >= k)
    start = free.params.detach().clone()
    for toy in (free, pinned):
        for _ in range(5):
            toy.step(3, [1.0, 2.5], 3)
    assert not torch.equal(free.params.detach()[3:], start[3:])           # the control run differs
    assert torch.equal(pinned.params.detach()[3:], start[3:])             # detach: bit for bit unchanged
    assert free.params.detach()[3:].abs().max() < 0.5 * start[3:].abs().max()  # the penalty straightened them
    grad = pinned.gradient(3, [1.0, 2.5])
    assert torch.all(grad[3:] == 0) and torch.all(grad[:3] != 0)


def test_penalty_loss_never_increases_and_without_penalty_nothing_changes():
    toy = chain(penalty=lambda a: 0.5 * a)
    target = [0.5, 3.0]
    totals = []
    for _ in range(10):
        distance = toy.step(5, target, 1)
        penalty = float(((0.5 * toy.params.detach()) ** 2).sum())
        totals.append(distance ** 2 + penalty)
    assert all(b <= a + 1e-12 for a, b in zip(totals, totals[1:]))
    plain = chain()
    for _ in range(5):
        plain.step(3, [1.0, 2.5], 3)
    assert torch.equal(plain.params.detach()[3:], torch.full((2,), -0.25, dtype=F64))  # a structural zero


def test_several_points_at_once_use_stacked_rows():
    toy = chain()
    goal = toys.chain_points(torch.tensor([0.4, -0.3, 0.5, -0.6, 0.2], dtype=F64), 1.0)
    targets = goal[[3, 5]]
    params = toy.params
    residual = (toy.point_of([3, 5])(params) - targets).reshape(-1)
    assert toys.point_jacobian(residual, params).shape == (4, 5)  # a 4-row Jacobian
    for _ in range(10):
        toy.step([3, 5], targets, 3)
    assert toy.distance([3, 5], targets) < 1e-8
    assert torch.allclose(toy.points()[[3, 5]], targets, atol=1e-8)
    with pytest.raises(ValueError, match="2 points"):
        toy.step([3, 5], [1.0, 2.0])
    with pytest.raises(ValueError, match="distinct"):
        toy.step([3, 3], targets)


def test_bounds_around_contains_every_frame():
    frames = [torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([[-3.0, 1.0]])]
    bounds = toys.bounds_around(frames)
    assert all(toys.inside(bounds, frame) for frame in frames)
    assert not toys.inside([-2.5, 5.0, -0.5, 7.0], torch.tensor([[-2.79, 1.0]]))
    x0, x1, y0, y1 = bounds
    assert x1 - x0 == pytest.approx(y1 - y0)  # square, so the aspect is equal
    with pytest.raises(ValueError):
        toys.bounds_around([torch.zeros(0, 2)])


def test_renderer_counts_what_leaves_the_view():
    toy = chain(3)
    inside_target = toy.points()[2].tolist()
    renderer = toys.DrawingRenderer(toys.bounds_around(toy.points()))
    renderer.frame([toys.toy_panel(toy, 3, inside_target)])
    assert renderer.points_outside == 0
    renderer.frame([toys.toy_panel(toy, 3, [50.0, 1.0])])  # the target is off to the right
    assert renderer.points_outside == 1


def test_plot_panel_and_penalty_graph_draw():
    import matplotlib.pyplot as plt

    toy = chain(3)
    fig, (ax, graph) = plt.subplots(1, 2)
    toys.plot_panel(ax, toys.toy_panel(toy, 3, [1.0, -0.5]), ground=0.0)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert toys.inside([x0, x1, y0, y1], np.vstack([toy.points().numpy(), [[1.0, -0.5]]]))
    toys.draw_gradient_graph(graph, 4, dragged=3, pinned=[False, False, False, True], penalty=True)
    assert len(graph.lines) == 10 + 4  # the chain's edges, then one edge per angle into the penalty
    plt.close(fig)
