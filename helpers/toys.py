"""Gradient toys (chapter 02): drawings whose points come from a few parameters, and a solver
that moves the parameters so that a dragged point follows the mouse.

* Forward functions, differentiable in torch (use float64):
  ``chain_points(angles, lengths)``        a chain of segments defined by its turn angles
  ``tree_points(params, depth)``           a fractal tree from (left angle, right angle, length ratio)
  ``dragon_points(fold, order)``           a dragon curve from one complex "fold" number
  with ``chain_edges``, ``tree_edges``, ``tree_leaves`` and ``polyline_edges`` for drawing.
* ``pin(params, mask)``      stop-gradient: the masked entries are used through ``detach``.
* ``damped_step``            one damped least-squares (Levenberg-Marquardt) step on |r|^2, where the
  residual r stacks p_k - target for one or several dragged points and optional extra rows (a penalty).
* ``DragToy``                a drawing, its parameters and the solver; ``drag_along`` runs a scripted drag.
* ``DrawingRenderer``        frames of one or more drawings side by side (matplotlib Agg, no pyplot);
  ``toy_panel`` turns a toy into one panel, ``plot_panel`` draws one on any matplotlib axes,
  ``bounds_around`` frames a set of drawings, ``draw_gradient_graph`` draws a chain's computation graph.

The live widgets that let a mouse drag these drawings are in ``helpers.widgets``.
"""
from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import numpy as np
import torch
from einops import rearrange, repeat

MAX_TREE_DEPTH = 12
MAX_DRAGON_ORDER = 16


# --------------------------------------------------------------------------- input checks

def _as_vector(values, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor, got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float64 for the solvers), got {values.dtype}")
    return values


def _check_count(value, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum}, got {value}")
    return int(value)


def _check_point_index(index, count: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"the dragged point index must be an integer, got {index!r}")
    if not 0 <= index < count:
        raise ValueError(f"point index {index} is out of range: this drawing has {count} points (0..{count - 1})")
    return int(index)


def _check_point_indices(index, count: int) -> int | list[int]:
    """One point index, or a non-empty list of distinct ones (a drag of several points at once)."""
    if isinstance(index, (list, tuple, range)):
        indices = [_check_point_index(i, count) for i in index]
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"drag one point, or a list of distinct points; got {list(index)}")
        return indices
    return _check_point_index(index, count)


def _as_target(target, like: torch.Tensor, points: int | None = None) -> torch.Tensor:
    """A target (x, y), or ``points`` targets [points, 2] for a drag of several points."""
    target = torch.as_tensor(target, dtype=like.dtype, device=like.device)
    expected = (2,) if points is None else (points, 2)
    if target.shape != expected:
        what = "one point (x, y)" if points is None else f"{points} points [{points}, 2]"
        raise ValueError(f"a target is {what}, got shape {tuple(target.shape)}")
    if not torch.isfinite(target).all():
        raise ValueError(f"the target {target.tolist()} is not finite")
    return target


# ------------------------------------------------------------------------- forward: chain

def direction(heading: torch.Tensor) -> torch.Tensor:
    """Unit vectors (cos h, sin h) for a tensor of headings; shape [..., 2]."""
    return torch.stack([torch.cos(heading), torch.sin(heading)], dim=-1)


def chain_points(angles: torch.Tensor, lengths, origin=(0.0, 0.0), heading: float = 0.0) -> torch.Tensor:
    """The n+1 points of a chain of n segments, from the base at ``origin``.

    Segment i turns by ``angles[i]`` from the previous one (the first from ``heading``), so its
    absolute heading is h_i = heading + angles[0] + ... + angles[i], and
    p_{i+1} = p_i + lengths[i] * (cos h_i, sin h_i). Returns a tensor [n + 1, 2].
    """
    angles = _as_vector(angles, "angles")
    if len(angles) == 0:
        raise ValueError("a chain needs at least one segment (angles is empty)")
    lengths = torch.as_tensor(lengths, dtype=angles.dtype, device=angles.device)
    lengths = lengths.expand(len(angles)) if lengths.ndim == 0 else lengths
    if lengths.shape != angles.shape:
        raise ValueError(f"lengths must be one number or one per segment ({len(angles)}), "
                         f"got shape {tuple(lengths.shape)}")
    headings = heading + torch.cumsum(angles, dim=0)
    steps = lengths[:, None] * direction(headings)
    start = torch.as_tensor(origin, dtype=angles.dtype, device=angles.device).reshape(1, 2)
    return torch.cat([start, start + torch.cumsum(steps, dim=0)])


def polyline_edges(point_count: int) -> torch.Tensor:
    """Edges [(0, 1), (1, 2), ...] joining ``point_count`` points in order; shape [point_count - 1, 2]."""
    index = torch.arange(point_count - 1)
    return torch.stack([index, index + 1], dim=1)


def chain_edges(segment_count: int) -> torch.Tensor:
    return polyline_edges(segment_count + 1)


# -------------------------------------------------------------------------- forward: tree

def tree_points(params: torch.Tensor, depth: int, trunk_length: float = 1.0) -> torch.Tensor:
    """Nodes of a fractal tree, numbered like a binary heap; shape [2 ** (depth + 1), 2].

    ``params`` = (left angle, right angle, length ratio). Node 0 is the ground, node 1 the top of
    the trunk (which points up); node i >= 1 has children 2i (turned left by the left angle) and
    2i + 1 (turned right by the right angle), each ``ratio`` times as long as its parent branch.
    ``depth`` is the number of times the tree branches: 2 ** depth leaves (``tree_leaves``).
    """
    params = _as_vector(params, "params")
    if len(params) != 3:
        raise ValueError(f"tree params are (left angle, right angle, length ratio), got {len(params)} numbers")
    depth = _check_count(depth, "depth", MAX_TREE_DEPTH)
    left, right, ratio = params[0], params[1], params[2]
    ground = params.new_zeros(1, 2)
    up = torch.tensor(math.pi / 2, dtype=params.dtype, device=params.device)
    tips = ground + trunk_length * direction(up).reshape(1, 2)
    headings = up.reshape(1)
    nodes = [ground, tips]
    turns = torch.stack([left, -right])  # child 2i turns left, child 2i + 1 turns right
    for level in range(1, depth + 1):
        headings = rearrange(headings[:, None] + turns[None, :], "parent child -> (parent child)")
        starts = repeat(tips, "parent xy -> (parent child) xy", child=2)
        tips = starts + trunk_length * ratio ** level * direction(headings)
        nodes.append(tips)
    return torch.cat(nodes)


def tree_edges(depth: int) -> torch.Tensor:
    """Edges (parent, child) of ``tree_points``: the trunk (0, 1), then (i // 2, i)."""
    depth = _check_count(depth, "depth", MAX_TREE_DEPTH)
    children = torch.arange(2, 2 ** (depth + 1))
    trunk = torch.tensor([[0, 1]])
    return torch.cat([trunk, torch.stack([children // 2, children], dim=1)])


def tree_leaves(depth: int) -> list[int]:
    """Node indices of the leaves of ``tree_points(params, depth)``."""
    depth = _check_count(depth, "depth", MAX_TREE_DEPTH)
    return list(range(2 ** depth, 2 ** (depth + 1)))


# ------------------------------------------------------------------------ forward: dragon

def complex_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a_x + i a_y)(b_x + i b_y) for pairs stored in the last axis."""
    ax, ay = a[..., 0], a[..., 1]
    bx, by = b[..., 0], b[..., 1]
    return torch.stack([ax * bx - ay * by, ax * by + ay * bx], dim=-1)


def dragon_points(fold: torch.Tensor, order: int, start=(0.0, 0.0), end=(1.0, 0.0)) -> torch.Tensor:
    """The 2 ** order + 1 points of a (generalized) dragon curve from ``start`` to ``end``.

    Each refinement replaces every segment a -> b by two, a -> m -> b, with the new corner
    m = a + z (b - a) for even segments and m = a + conj(z) (b - a) for odd ones, where
    z = fold[0] + i fold[1]. ``fold = (0.5, 0.5)`` is the Heighway dragon (right angles,
    alternating sides); other values give its relatives.
    """
    fold = _as_vector(fold, "fold")
    if len(fold) != 2:
        raise ValueError(f"fold is one complex number (x, y), got {len(fold)} numbers")
    order = _check_count(order, "order", MAX_DRAGON_ORDER)
    points = torch.tensor([start, end], dtype=fold.dtype, device=fold.device)
    mirrored = fold * torch.tensor([1.0, -1.0], dtype=fold.dtype, device=fold.device)
    for _ in range(order):
        a, b = points[:-1], points[1:]
        # even segments fold with z, odd ones with its mirror image conj(z)
        even = torch.arange(len(a), device=fold.device) % 2 == 0
        z = torch.where(even[:, None], fold, mirrored)
        corners = a + complex_multiply(z, b - a)
        interleaved = rearrange(torch.stack([a, corners], dim=1), "segment pair xy -> (segment pair) xy")
        points = torch.cat([interleaved, points[-1:]])
    return points


# ------------------------------------------------------------------------- stop-gradient

def pin(params: torch.Tensor, pinned) -> torch.Tensor:
    """``params`` with the entries where ``pinned`` is True used through ``detach``.

    The values are identical; only the graph differs: no gradient flows back into pinned entries,
    so any gradient-based solver leaves them exactly where they are.
    """
    if pinned is None:
        return params
    pinned = torch.as_tensor(pinned, dtype=torch.bool, device=params.device)
    if pinned.shape != params.shape:
        raise ValueError(f"the pinned mask has shape {tuple(pinned.shape)}, the parameters {tuple(params.shape)}")
    return torch.where(pinned, params.detach(), params)


# --------------------------------------------------------------------------------- solver

def point_jacobian(point: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """d point / d params as an [R, P] matrix, R = point.numel() (one backward pass per row: a point
    (x, y) gives 2 rows, K points 2K); zeros where no gradient flows."""
    rows_out = point.reshape(-1)
    if not point.requires_grad:
        return params.new_zeros(len(rows_out), len(params))
    rows = []
    for coordinate in range(len(rows_out)):
        (row,) = torch.autograd.grad(rows_out[coordinate], params, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(params) if row is None else row)
    return torch.stack(rows)


def damped_step(point_of: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor, target: torch.Tensor,
                damping: float, extra: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The damped least-squares step (Levenberg-Marquardt) for the loss |r|^2, r = point_of(params) - target.

    ``point_of`` may return one point [2] or several [K, 2] (with ``target`` of the same shape);
    ``extra(params)``, if given, adds residual rows (a penalty such as sqrt(w) * params). With J =
    dr/dparams (R x P):  delta = -J^T (J J^T + damping I_R)^-1 r. For a large damping this is a small
    gradient-descent step (the gradient is 2 J^T r); for a small one it is the Gauss-Newton step.
    Entries that receive no gradient get exactly zero.
    """
    residual = (point_of(params) - target).reshape(-1)
    if extra is not None:
        residual = torch.cat([residual, extra(params).reshape(-1)])
    jacobian = point_jacobian(residual, params)
    system = jacobian @ jacobian.T + damping * torch.eye(len(residual), dtype=params.dtype, device=params.device)
    return -jacobian.T @ torch.linalg.solve(system, residual.detach())


class DragToy:
    """A drawing made by ``forward(params) -> points [N, 2]``, and a solver that drags its points.

    ``edges`` [E, 2] says which points are joined (for drawing); ``handles`` lists the points the
    user may drag. ``pinned`` is None, a boolean mask over the parameters, or a function
    ``index -> mask`` (what to pin may depend on the dragged point); pinned parameters are used
    through ``detach`` and never move. ``penalty``, if given, is a function ``used_params -> residual
    rows`` added to the loss (for example ``lambda a: 0.3 * a`` prefers a straight chain); it sees the
    parameters with the pins applied, so pinned entries get no gradient from it either.
    ``step`` drags one point (an index and a target (x, y)) or several at once (a list of indices
    and targets [K, 2]: 2K residual rows).

    Each call of ``step`` runs damped least-squares steps that are accepted only when they lower
    the distance (the damping grows until one does), so the distance never increases for a fixed
    target.
    """

    def __init__(self, name: str, forward: Callable[[torch.Tensor], torch.Tensor], params, edges,
                 handles: Sequence[int] | None = None, pinned=None, damping: float = 1e-3,
                 bounds: Sequence[float] | None = None, penalty: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.name, self.forward, self.penalty = name, forward, penalty
        params = _as_vector(torch.as_tensor(params), "params")
        self.params = params.detach().to(torch.float64).clone().requires_grad_(True)
        self.initial_params = self.params.detach().clone()
        points = self.points()
        self.point_count = len(points)
        self.edges = torch.as_tensor(edges, dtype=torch.long)
        if self.edges.ndim != 2 or self.edges.shape[1] != 2 or (
                len(self.edges) and self.edges.max() >= self.point_count):
            raise ValueError(f"edges must be pairs of point indices below {self.point_count}, "
                             f"got shape {tuple(self.edges.shape)}")
        self.handles = list(range(self.point_count)) if handles is None else [
            _check_point_index(h, self.point_count) for h in handles]
        self.pinned = pinned
        self.damping = self.initial_damping = float(damping)
        self.bounds = list(bounds) if bounds is not None else _auto_bounds(points)

    def points(self) -> torch.Tensor:
        """The current points [N, 2] (no graph)."""
        with torch.no_grad():
            return self.forward(self.params)

    def pinned_mask(self, index) -> torch.Tensor:
        """Boolean mask of the parameters that are pinned while point ``index`` is dragged (for several
        points, a function-valued ``pinned`` is asked about the first)."""
        first = index[0] if isinstance(index, list) else index
        mask = self.pinned(first) if callable(self.pinned) else self.pinned
        if mask is None:
            return torch.zeros(len(self.params), dtype=torch.bool)
        return torch.as_tensor(mask, dtype=torch.bool)

    def point_of(self, index) -> Callable[[torch.Tensor], torch.Tensor]:
        """params -> position of point ``index`` [2] (or of a list of points [K, 2]), pins applied."""
        index = _check_point_indices(index, self.point_count)
        mask = self.pinned_mask(index)
        return lambda params: self.forward(pin(params, mask))[index]

    def penalty_of(self, index) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """params -> the penalty's residual rows with the pins of point ``index`` applied (None without one)."""
        if self.penalty is None:
            return None
        mask = self.pinned_mask(_check_point_indices(index, self.point_count))
        return lambda params: self.penalty(pin(params, mask)).reshape(-1)

    def _target(self, index, target) -> torch.Tensor:
        index = _check_point_indices(index, self.point_count)
        return _as_target(target, self.params, len(index) if isinstance(index, list) else None)

    def distance(self, index, target) -> float:
        """Distance of point ``index`` to ``target`` (for several points: the root of the summed squares)."""
        point = self.points()[_check_point_indices(index, self.point_count)]
        return float(torch.linalg.vector_norm(point - self._target(index, target)))

    def gradient(self, index, target) -> torch.Tensor:
        """Fill and return ``params.grad`` for the loss |p_index - target|^2 + |penalty|^2 (pins applied)."""
        self.params.grad = None
        target = self._target(index, target)
        loss = ((self.point_of(index)(self.params) - target) ** 2).sum()
        extra = self.penalty_of(index)
        if extra is not None:
            loss = loss + (extra(self.params) ** 2).sum()
        if loss.requires_grad:
            loss.backward()
        return self.params.grad

    def step(self, index, target, steps: int = 1) -> float:
        """Run ``steps`` accepted-or-rejected damped steps toward ``target``; return the distance of the
        dragged point(s) to it. The loss (distance squared, plus the penalty) never increases."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        point_of, extra = self.point_of(index), self.penalty_of(index)
        target = self._target(index, target)

        def losses_at(values):
            with torch.no_grad():
                drag = float(((point_of(values) - target) ** 2).sum())
                return drag, drag + (0.0 if extra is None else float((extra(values) ** 2).sum()))

        drag, loss = losses_at(self.params)
        for _ in range(steps):
            if loss == 0.0:
                break
            damping = self.damping
            for _attempt in range(20):
                delta = damped_step(point_of, self.params, target, damping, extra)
                trial = self.params.detach() + delta
                trial_drag, trial_loss = losses_at(trial)
                if trial_loss < loss:  # accept, and trust the quadratic model a little more
                    with torch.no_grad():
                        self.params.copy_(trial)
                    drag, loss = trial_drag, trial_loss
                    self.damping = max(damping / 3, 1e-9)
                    break
                damping *= 4  # reject: try a shorter, more gradient-like step
            else:
                break  # no step lowers the loss any more: we are at a (local) minimum
        return math.sqrt(drag)

    def drag_along(self, index, path, steps_per_frame: int = 3, on_frame=None) -> list[float]:
        """A scripted drag: the target moves along ``path`` [T, 2]; returns the distance after each frame.

        ``on_frame(toy, target)`` is called after each frame (to record a video frame).
        """
        path = torch.as_tensor(path, dtype=torch.float64)
        if path.ndim != 2 or path.shape[1] != 2 or len(path) == 0:
            raise ValueError(f"a drag path is a list of targets [T, 2], got shape {tuple(path.shape)}")
        distances = []
        for target in path:
            distances.append(self.step(index, target, steps_per_frame))
            if on_frame is not None:
                on_frame(self, target)
        return distances

    def reset(self) -> None:
        with torch.no_grad():
            self.params.copy_(self.initial_params)
        self.params.grad = None
        self.damping = self.initial_damping


def _auto_bounds(points: torch.Tensor, margin: float = 0.3) -> list[float]:
    """A square view (xmin, xmax, ymin, ymax) around ``points`` with room to drag."""
    low, high = points.min(0).values, points.max(0).values
    center, half = (low + high) / 2, float((high - low).max()) / 2
    half = half * (1 + margin) + 1e-6
    return [float(center[0]) - half, float(center[0]) + half, float(center[1]) - half, float(center[1]) + half]


def bounds_around(drawings, margin: float = 0.08) -> list[float]:
    """A square view (xmin, xmax, ymin, ymax) that contains every point of ``drawings`` (a tensor
    [N, 2] or a list of them: the frames of a video, a path), with ``margin`` of the size on each side."""
    if isinstance(drawings, torch.Tensor):
        drawings = [drawings]
    points = torch.cat([torch.as_tensor(d, dtype=torch.float64).detach().reshape(-1, 2) for d in drawings])
    if len(points) == 0 or not torch.isfinite(points).all():
        raise ValueError("bounds_around needs at least one finite point")
    low, high = points.min(0).values, points.max(0).values
    center, half = (low + high) / 2, max(float((high - low).max()) / 2, 1e-3)
    half = half * (1 + 2 * margin)
    return [float(center[0]) - half, float(center[0]) + half, float(center[1]) - half, float(center[1]) + half]


def inside(bounds: Sequence[float], points) -> bool:
    """Whether every point [N, 2] lies within ``bounds`` (xmin, xmax, ymin, ymax)."""
    points = torch.as_tensor(points, dtype=torch.float64).detach().reshape(-1, 2)
    x0, x1, y0, y1 = bounds
    return bool(((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)).all())


# ------------------------------------------------------------------------------ drawing

PALETTE = {"edge": "#2b4c7e", "pinned": "#b0b0b0", "handle": "#2b4c7e", "dragged": "#d62728",
           "target": "#d62728", "trail": "#f4a582"}


class DrawingRenderer:
    """Frames (uint8 RGB arrays) of one or more drawings side by side, with a reused Agg figure.

    ``frame(panels)`` takes a list of dicts, one per panel, with ``points`` [N, 2], ``edges``
    [E, 2], and optionally ``target`` (x, y), ``dragged`` (index), ``edge_colors``, ``title``,
    ``trail`` [T, 2] (the path of the target so far). ``points_outside`` counts the points, targets
    and trail points drawn so far that fell outside their panel's bounds (0: nothing left the view).
    """

    def __init__(self, bounds: Sequence[Sequence[float]] | Sequence[float], panels: int = 1,
                 panel_inches: float = 2.6, dpi: int = 80):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        if panels < 1:
            raise ValueError(f"panels must be at least 1, got {panels}")
        bounds = [bounds] * panels if np.ndim(bounds) == 1 else list(bounds)
        if len(bounds) != panels:
            raise ValueError(f"give one bounds per panel ({panels}), got {len(bounds)}")
        self.figure = Figure(figsize=(panel_inches * panels, panel_inches + 0.3), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.subplots(1, panels, squeeze=False)[0]
        self.artists, self.bounds, self.points_outside = [], [list(b) for b in bounds], 0
        for ax, (x0, x1, y0, y1) in zip(self.axes, bounds):
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            lines = LineCollection([], linewidths=2, capstyle="round")
            ax.add_collection(lines)
            trail, = ax.plot([], [], "-", color=PALETTE["trail"], lw=1)
            handles, = ax.plot([], [], "o", color=PALETTE["handle"], ms=3)
            dragged, = ax.plot([], [], "o", color=PALETTE["dragged"], ms=6)
            target, = ax.plot([], [], "+", color=PALETTE["target"], ms=12, mew=2)
            self.artists.append((ax, lines, trail, handles, dragged, target))
        self.figure.tight_layout(pad=0.4)

    def frame(self, panels: list[dict]) -> np.ndarray:
        if len(panels) != len(self.artists):
            raise ValueError(f"this renderer has {len(self.artists)} panels, got {len(panels)} drawings")
        for panel, bounds, (ax, lines, trail, handles, dragged, target) in zip(panels, self.bounds, self.artists):
            points = np.asarray(torch.as_tensor(panel["points"]).detach().cpu(), dtype=float)
            self.points_outside += _count_outside(bounds, points, panel.get("target"), panel.get("trail"))
            edges = np.asarray(panel["edges"])
            lines.set_segments(points[edges])
            lines.set_color(panel.get("edge_colors") or PALETTE["edge"])
            handle_points = points[panel["handles"]] if "handles" in panel else points[:0]
            handles.set_data(handle_points[:, 0], handle_points[:, 1])
            index = panel.get("dragged")
            dragged.set_data(*([[points[index, 0]], [points[index, 1]]] if index is not None else [[], []]))
            goal = panel.get("target")
            target.set_data(*([[float(goal[0])], [float(goal[1])]] if goal is not None else [[], []]))
            path = np.asarray(panel.get("trail", np.zeros((0, 2))), dtype=float).reshape(-1, 2)
            trail.set_data(path[:, 0], path[:, 1])
            ax.set_title(panel.get("title", ""), fontsize=9)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()

    def png(self, panels: list[dict]) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.frame(panels)).save(buffer, format="png")
        return buffer.getvalue()


def _count_outside(bounds, points, target=None, trail=None) -> int:
    drawn = [np.asarray(points, dtype=float).reshape(-1, 2)]
    if target is not None:
        drawn.append(np.asarray(target, dtype=float).reshape(-1, 2))
    if trail is not None:
        drawn.append(np.asarray(torch.as_tensor(trail).detach().cpu(), dtype=float).reshape(-1, 2))
    drawn = np.concatenate(drawn)
    x0, x1, y0, y1 = bounds
    return int((~((drawn[:, 0] >= x0) & (drawn[:, 0] <= x1) & (drawn[:, 1] >= y0) & (drawn[:, 1] <= y1))).sum())


def plot_panel(ax, panel: dict, bounds: Sequence[float] | None = None, ground: float | None = None) -> None:
    """Draw one panel (as made by ``toy_panel``) on matplotlib axes, as a vector figure; ``ground`` draws
    the line y = ground. The view is ``bounds`` (default: ``bounds_around`` the drawing and its target)."""
    from matplotlib.collections import LineCollection

    points = np.asarray(torch.as_tensor(panel["points"]).detach().cpu(), dtype=float)
    extra = [points] + ([np.asarray(panel["target"], dtype=float).reshape(1, 2)] if panel.get("target") else [])
    x0, x1, y0, y1 = bounds if bounds is not None else bounds_around([torch.as_tensor(e) for e in extra])
    if ground is not None:
        ax.axhspan(min(y0, ground) - 1, ground, color="#d9c9a8", zorder=0)
        ax.axhline(ground, color="#8c6d46", lw=1.5, zorder=1)
    ax.add_collection(LineCollection(points[np.asarray(panel["edges"])], linewidths=1.5, zorder=2,
                                     colors=panel.get("edge_colors") or PALETTE["edge"]))
    if panel.get("dragged") is not None:
        ax.plot(*points[panel["dragged"]], "o", color=PALETTE["dragged"], ms=7, zorder=3)
    if panel.get("target"):
        ax.plot(*panel["target"], "+", color=PALETTE["target"], ms=14, mew=2, zorder=4)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal", title=panel.get("title", ""))


def toy_panel(toy: DragToy, index: int | None = None, target=None, title: str | None = None, trail=None) -> dict:
    """The drawing of ``toy`` as a panel for ``DrawingRenderer``; segments whose parameters are
    all pinned are drawn grey only by the caller (``edge_colors``), so this stays generic."""
    panel = {"points": toy.points(), "edges": toy.edges, "handles": toy.handles, "dragged": index,
             "target": None if target is None else [float(v) for v in target], "title": title or toy.name}
    if trail is not None:
        panel["trail"] = trail
    return panel


def draw_gradient_graph(ax, angle_count: int, dragged: int, pinned, penalty: bool = False) -> None:
    """The graph of a chain: turn angle theta_i feeds every point p_j with j > i.

    Edges into the dragged point p_dragged are red where gradient flows back and dashed grey where
    ``detach`` cuts them (pinned angles); angles that receive gradient are filled green. With
    ``penalty`` the loss also has a term R(theta) fed by every angle (drawn on the right), whose
    edges are red or cut in the same way.
    """
    pinned = np.asarray(pinned, dtype=bool)
    if pinned.shape != (angle_count,):
        raise ValueError(f"pinned needs one flag per angle ({angle_count}), got shape {pinned.shape}")
    _check_point_index(dragged, angle_count + 1)
    angle_x = np.arange(angle_count)
    point_x = np.arange(1, angle_count + 1) - 0.5
    for i in range(angle_count):
        for j in range(i + 1, angle_count + 1):
            into_dragged = j == dragged
            style = dict(color="#dddddd", lw=0.8, ls="-", zorder=1)
            if into_dragged:
                style = dict(color="#bbbbbb", lw=1.5, ls="--", zorder=2) if pinned[i] else \
                    dict(color=PALETTE["dragged"], lw=2.0, ls="-", zorder=3)
            ax.plot([angle_x[i], point_x[j - 1]], [1, 0], **style)
    if penalty:
        penalty_xy = (angle_count + 0.3, 0.0)
        for i in range(angle_count):
            style = dict(color="#bbbbbb", lw=1.5, ls="--", zorder=2) if pinned[i] else \
                dict(color=PALETTE["dragged"], lw=2.0, ls="-", zorder=3)
            ax.plot([angle_x[i], penalty_xy[0]], [1, penalty_xy[1]], **style)
        ax.scatter([penalty_xy[0]], [penalty_xy[1]], s=380, zorder=4, edgecolors="black", c=[PALETTE["dragged"]],
                   marker="s")
        ax.text(*penalty_xy, "R", ha="center", va="center", fontsize=8, zorder=5)
    receives = np.array([((i < dragged) or penalty) and not pinned[i] for i in range(angle_count)])
    ax.scatter(angle_x, np.ones(angle_count), s=380, zorder=4, edgecolors="black",
               c=["#7fc97f" if r else ("#cccccc" if pinned[i] else "white") for i, r in enumerate(receives)])
    ax.scatter(point_x, np.zeros(angle_count), s=380, zorder=4, edgecolors="black",
               c=[PALETTE["dragged"] if j == dragged else "white" for j in range(1, angle_count + 1)])
    for i in range(angle_count):
        ax.text(angle_x[i], 1, f"θ{i}", ha="center", va="center", fontsize=8, zorder=5)
        ax.text(point_x[i], 0, f"p{i + 1}", ha="center", va="center", fontsize=8, zorder=5)
    ax.set_xlim(-0.7, angle_count + (1.0 if penalty else 0.0))
    ax.set_ylim(-0.4, 1.4)
    ax.set_axis_off()
