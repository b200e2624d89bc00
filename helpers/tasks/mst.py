"""The minimum-spanning-tree task of chapter 05: the task, its loss, running and training a model.

A task is a handful of points scattered on a square canvas. The **input** image shows the points
as small discs; the **target** shows the same discs joined by the edges of their Euclidean minimum
spanning tree (MST), drawn as anti-aliased lines. An NCA gets the input in channel 0 of its state
and must turn channel 0 into the target.

* ``random_points``                     points with a margin and a minimum spacing
* ``minimum_spanning_tree``             Kruskal's algorithm with a union-find
* ``draw_points`` / ``draw_tree``       rasterization (values in [0, 1])
* ``make_tasks`` / ``heldout_tasks``    batches of (input, target) pairs, with their points and edges
* ``asymmetric_loss``                   missing ink costs twice as much as extra ink
* ``draw_with`` / ``evaluate``          run a model on tasks and measure its drawings
  (the measurements themselves are in ``helpers.tasks.mst_metrics``)
* ``Settings`` / ``train``              every default of the training, and the training itself

The shipped model ``data/models/mst.pt`` is made by the one command recorded in its JSON
(``python -m helpers train mst ...``, see ``data/README.md``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import checks, fast, models, nca
from ..train import History, check_setting_types, mean_of_last, setting
from . import mst_graphs, run
from .mst_geometry import find_root, segment_distance
from .mst_metrics import THRESHOLD, score_drawings, summary
from .run import ENGINES

CANVAS = 100             # side of the square canvas, in pixels
MARGIN = 10              # points keep this far from every border
MIN_POINTS, MAX_POINTS = 3, 15
MIN_SPACING = 8.0        # points are at least this far apart, so their discs never touch
POINT_RADIUS = 2.0       # radius of an input disc (where its anti-aliased rim is half grey)
LINE_WIDTH = 1.5         # width of a tree edge
HELDOUT_SEED = 2026      # the fixed seed of the held-out set
HELDOUT_COUNT = 200


# --------------------------------------------------------------------------------- checks

def check_canvas(canvas, margin: float = 0.0) -> int:
    """The canvas side as an int; anything else (not an integer, too small for its margin) raises."""
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)):
        raise ValueError(f"the canvas size must be an integer number of pixels, got {canvas!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.number)) or not 0 <= margin < math.inf:
        raise ValueError(f"the margin (how far points keep from the border) must be a finite number >= 0 pixels, got "
                         f"{margin!r}; e.g. margin={MARGIN}")
    if canvas < 8 or canvas <= 2 * margin + 1:
        raise ValueError(f"a canvas of {canvas} pixels is too small (need at least 8, and more than twice the "
                         f"margin {margin} + 1); use e.g. canvas={CANVAS}")
    return int(canvas)


def check_points(points, canvas: int = CANVAS) -> np.ndarray:
    """Points as a float array ``[n, 2]`` of (x, y) pixel coordinates, checked: at least 2 of them,
    finite, and inside the canvas (0 <= x, y <= canvas - 1)."""
    canvas = check_canvas(canvas)
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be shaped [n, 2] (x, y pairs), got shape {array.shape}")
    if len(array) < 2:
        raise ValueError(f"a spanning tree needs at least 2 points, got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError("the points contain NaN or infinite coordinates")
    outside = (array < 0) | (array > canvas - 1)
    if outside.any():
        bad = array[outside.any(axis=1)][0]
        raise ValueError(f"point {tuple(bad)} lies outside the {canvas}x{canvas} canvas "
                         f"(coordinates must be in [0, {canvas - 1}])")
    return array


# ------------------------------------------------------------------------------- the task

def random_points(count: int, rng: np.random.Generator, canvas: int = CANVAS, margin: float = MARGIN,
                  min_spacing: float = MIN_SPACING) -> np.ndarray:
    """``count`` random (x, y) points, at least ``margin`` from every border and ``min_spacing`` apart.

    Rejection sampling: draw a candidate, keep it if it is far enough from all points kept so far.
    """
    canvas = check_canvas(canvas, margin)
    if count < 2:
        raise ValueError(f"need at least 2 points, got {count}")
    points: list[np.ndarray] = []
    for _ in range(1000 * count):
        candidate = rng.uniform(margin, canvas - 1 - margin, size=2)
        if all(np.hypot(*(candidate - p)) >= min_spacing for p in points):
            points.append(candidate)
            if len(points) == count:
                return np.array(points)
    raise ValueError(f"could not place {count} points {min_spacing} apart on a {canvas}-pixel canvas with "
                     f"margin {margin}; use fewer points, a larger canvas or a smaller spacing")


def pair_length(a, b, canvas: int = CANVAS, wrap: bool = False) -> float:
    """The distance between two points; with ``wrap`` on a torus: the canvas's left edge touches its
    right edge and its top its bottom, so each coordinate difference is the shorter way round."""
    difference = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    if wrap:
        difference = np.minimum(difference, canvas - difference)
    return float(np.hypot(*difference))


def minimum_spanning_tree(points, canvas: int = CANVAS, wrap: bool = False) -> list[tuple[int, int]]:
    """The Euclidean minimum spanning tree of ``points``, as a sorted list of edges ``(i, j)``, i < j.

    Kruskal: sort all n(n-1)/2 pairs by length; walk through them, shortest first, and keep an
    edge when its two ends are still in different components (a union-find tells), merging them.
    After n - 1 kept edges every point is connected, and no cheaper tree exists (cut property).
    ``wrap=True`` measures lengths on a torus (``pair_length``): the tree of a world that wraps
    around, as an NCA with circular padding lives in; the task's target is the planar tree.
    """
    points = check_points(points, canvas)
    count = len(points)
    pairs = [(pair_length(points[i], points[j], canvas, wrap), i, j) for i in range(count) for j in range(i + 1, count)]
    pairs.sort()
    parent = list(range(count))
    tree = []
    for _, i, j in pairs:
        root_i, root_j = find_root(parent, i), find_root(parent, j)
        if root_i != root_j:
            parent[root_i] = root_j
            tree.append((i, j))
            if len(tree) == count - 1:
                break
    return sorted(tree)


def window(canvas: int, corner_a, corner_b, pad: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """The rows, columns and pixel-centre coordinates (x, y) of the box around two corners, grown by
    ``pad`` and clipped to the canvas. Drawing a shape only inside its box is much faster than
    computing distances over the whole canvas, and gives the same picture."""
    (xa, ya), (xb, yb) = corner_a, corner_b
    left, right = max(0, int(math.floor(min(xa, xb) - pad))), min(canvas, int(math.ceil(max(xa, xb) + pad)) + 1)
    top, bottom = max(0, int(math.floor(min(ya, yb) - pad))), min(canvas, int(math.ceil(max(ya, yb) + pad)) + 1)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float64)
    return slice(top, bottom), slice(left, right), xs, ys


def soft_edge(distance: np.ndarray, half_width: float) -> np.ndarray:
    """Anti-aliasing: 1 up to ``half_width - 0.5``, 0 from ``half_width + 0.5``, linear in between
    (so a pixel whose centre lies exactly on the outline is half grey)."""
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def draw_points(points, canvas: int = CANVAS, radius: float = POINT_RADIUS) -> np.ndarray:
    """The input image: every point a disc of ``radius`` pixels, float32 ``[canvas, canvas]`` in [0, 1].

    A pixel's value is how far inside the disc its centre lies, clipped to [0, 1]: 1 well inside,
    0 outside, a smooth one-pixel ramp at the rim (cheap anti-aliasing)."""
    points = check_points(points, canvas)
    image = np.zeros((canvas, canvas))
    for point in points:
        rows, columns, xs, ys = window(canvas, point, point, radius + 1)
        disc = soft_edge(np.hypot(xs - point[0], ys - point[1]), radius)
        image[rows, columns] = np.maximum(image[rows, columns], disc)
    return image.astype(np.float32)


def draw_edges(points, edges, canvas: int = CANVAS, line_width: float = LINE_WIDTH) -> np.ndarray:
    """Every edge ``(i, j)`` as an anti-aliased line of ``line_width`` pixels, ``[canvas, canvas]``."""
    points = check_points(points, canvas)
    image = np.zeros((canvas, canvas))
    for i, j in edges:
        rows, columns, xs, ys = window(canvas, points[i], points[j], line_width + 1)
        line = soft_edge(segment_distance(xs, ys, points[i], points[j]), line_width / 2)
        image[rows, columns] = np.maximum(image[rows, columns], line)
    return image.astype(np.float32)


def draw_tree(points, edges, canvas: int = CANVAS, radius: float = POINT_RADIUS,
              line_width: float = LINE_WIDTH) -> np.ndarray:
    """The target image: the input discs plus every edge as an anti-aliased line, ``[canvas, canvas]``."""
    return np.maximum(draw_points(points, canvas, radius), draw_edges(points, edges, canvas, line_width))


@dataclass
class TaskBatch:
    """A batch of tasks: ``inputs`` and ``targets`` are float tensors ``[N, 1, canvas, canvas]``."""
    inputs: torch.Tensor
    targets: torch.Tensor
    points: list = field(default_factory=list)   # one [n, 2] array per task
    edges: list = field(default_factory=list)    # one list of (i, j) per task
    point_radius: float = POINT_RADIUS           # how large the input discs were drawn

    def __len__(self) -> int:
        return len(self.points)


def draw_graphs(tasks: TaskBatch, make_edges) -> torch.Tensor:
    """Drawings ``[N, 1, H, W]`` of another graph on each task's points, ``make_edges(points)`` (e.g.
    a baseline from ``mst_graphs``), by the same renderer as the targets, so both are scored alike."""
    canvas = tasks.targets.shape[-1]
    drawings = [draw_tree(points, make_edges(points), canvas, tasks.point_radius) for points in tasks.points]
    return torch.from_numpy(np.stack(drawings))[:, None]


def make_task(points, canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray, list]:
    """(input image, target image, MST edges) for one set of points."""
    edges = minimum_spanning_tree(points, canvas)
    image = draw_points(points, canvas)
    return image, np.maximum(image, draw_edges(points, edges, canvas)), edges


def make_tasks(count: int, rng: np.random.Generator, canvas: int = CANVAS,
               min_points: int = MIN_POINTS, max_points: int = MAX_POINTS, margin: float = MARGIN) -> TaskBatch:
    """``count`` random tasks with ``min_points`` to ``max_points`` points each (both included)."""
    checks.check_count("count", count, 1, "count=8")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a NumPy generator, got {rng!r}; e.g. np.random.default_rng(0)")
    if not 2 <= min_points <= max_points:
        raise ValueError(f"need 2 <= min_points <= max_points, got {min_points}, {max_points}")
    inputs, targets, all_points, all_edges = [], [], [], []
    for _ in range(count):
        points = random_points(int(rng.integers(min_points, max_points + 1)), rng, canvas, margin)
        image, target, edges = make_task(points, canvas)
        inputs.append(image)
        targets.append(target)
        all_points.append(points)
        all_edges.append(edges)
    as_tensor = lambda images: torch.from_numpy(np.stack(images))[:, None]  # noqa: E731  [N, 1, H, W]
    return TaskBatch(as_tensor(inputs), as_tensor(targets), all_points, all_edges)


def heldout_tasks(count: int = HELDOUT_COUNT, seed: int = HELDOUT_SEED, **kwargs) -> TaskBatch:
    """The fixed held-out set: the same ``count`` tasks every time (never used for training,
    whose tasks come from other seeds)."""
    return make_tasks(count, np.random.default_rng(seed), **kwargs)


def initial_states(inputs: torch.Tensor, channels: int = 12) -> torch.Tensor:
    """NCA states ``[N, channels, H, W]``: the input image in channel 0, zeros elsewhere."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or inputs.shape[1] != 1:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor [N, 1, H, W] (a TaskBatch's inputs), got {shape}")
    checks.check_count("channels", channels, 1, "channels=model.channels")
    state = torch.zeros(inputs.shape[0], channels, *inputs.shape[2:], dtype=inputs.dtype, device=inputs.device)
    state[:, :1] = inputs
    return state


def pool_sampler(rng: np.random.Generator, canvas: int = CANVAS, channels: int = 12, **kwargs):
    """``make_samples(n)`` for ``helpers.train.train_pool``: fresh entries {"state", "target"}."""
    def make_samples(count: int) -> dict[str, torch.Tensor]:
        tasks = make_tasks(count, rng, canvas, **kwargs)
        return {"state": initial_states(tasks.inputs, channels), "target": tasks.targets}
    return make_samples


# --------------------------------------------------------------------------------- the loss

def check_extra_ink_weight(weight) -> float:
    """The extra-ink weight of the loss: a positive finite number (a weight <= 0 would reward extra ink)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
        raise ValueError(f"extra_ink_weight must be a positive finite number (a weight <= 0 would reward extra ink), "
                         f"got {weight!r}")
    return float(weight)


def asymmetric_loss(drawn: torch.Tensor, target: torch.Tensor, extra_ink_weight: float = 0.5) -> torch.Tensor:
    """Weighted squared error: a pixel with too much ink costs ``extra_ink_weight`` times what a
    pixel with too little costs (missing ink is the worse mistake: a gap breaks the tree)."""
    if drawn.shape != target.shape:
        raise ValueError(f"drawn {tuple(drawn.shape)} and target {tuple(target.shape)} must have the same shape")
    check_extra_ink_weight(extra_ink_weight)
    error = drawn - target
    weight = torch.where(error > 0, extra_ink_weight, 1.0)
    return (weight * error.square()).mean()


def channel0_loss(extra_ink_weight: float = 0.5):
    """``loss_fn(final_states, batch)`` for ``train_pool``: the asymmetric loss on channel 0."""
    def loss_fn(final: torch.Tensor, batch: dict) -> torch.Tensor:
        return asymmetric_loss(final[:, :1], batch["target"], extra_ink_weight)
    return loss_fn


def ink(states: torch.Tensor) -> torch.Tensor:
    """Channel 0 of NCA states, clipped to [0, 1]: the drawing, ``[N, 1, H, W]``."""
    if not isinstance(states, torch.Tensor) or states.ndim != 4:
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"states must be a tensor [N, channels, H, W] (what draw_with returns), got {shape}")
    return states[:, :1].clamp(0.0, 1.0)


def paper(images: torch.Tensor) -> torch.Tensor:
    """Ink images shown as dark ink on white paper (1 - ink), for pictures."""
    return 1.0 - images.clamp(0.0, 1.0)


# -------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def draw_with(model, inputs: torch.Tensor | None, steps: int, seed: int = 0, chunk: int = 50,
              states: torch.Tensor | None = None, engine: str = "fast",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Run ``model`` for ``steps`` steps from the inputs (or from ``states``); returns the final states.

    The random update masks come from a ``torch.Generator`` seeded with ``seed`` (or from
    ``generator``, to continue a rollout where an earlier call left it), so the result is the same
    on every run; tasks run ``chunk`` at a time to bound memory. ``engine="fast"`` runs
    ``helpers.fast.infer`` with exact masks: the same masks, drawn from the same generator, as
    ``engine="plain"`` (``model.rollout``), so both give the same states up to float rounding
    (``tests/test_mst.py`` checks it); models that are not ``helpers.nca.NCA`` always run plain."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    checks.check_count("chunk", chunk, 1, "chunk=50")
    if inputs is None and states is None:
        raise ValueError("draw_with needs the tasks' inputs, or states to continue from")
    use_fast = engine == "fast" and isinstance(model, nca.NCA)
    device = next(model.parameters()).device
    states = initial_states(inputs, model.channels) if states is None else states
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    finals = []
    for start in range(0, states.shape[0], chunk):
        batch = states[start:start + chunk].to(device)
        if use_fast:
            final = fast.infer(model, batch, steps, generator=generator, masks="exact")
        else:
            final = model.rollout(batch, steps, generator=generator)
        finals.append(final.cpu())
    return torch.cat(finals)


def graph_scores(states: torch.Tensor, tasks: TaskBatch) -> dict:
    """``mst_graphs.score_graphs`` of the drawings in ``states`` (channel 0), rounded like ``summary``."""
    return summary(mst_graphs.score_graphs(ink(states), tasks))


def scores_over_rollout(model, tasks: TaskBatch, checkpoints, seed: int = 0) -> dict:
    """Run ``model`` on ``tasks`` once, to the last of ``checkpoints`` (increasing step counts), and
    score the drawing at each: ``{"steps": [...], "f1": [...], "f1_1px": [...], "precision": [...],
    ...}`` with strict and 1-pixel-tolerant pixel scores, the fraction of pixels inked and the
    graph scores' exact-MST and cycle rates. One rollout serves every checkpoint (the state at
    step 2000 is the state at step 1000 run 1000 steps further, with the same generator)."""
    checkpoints = [int(step) for step in checkpoints]
    if not checkpoints or checkpoints != sorted(set(checkpoints)) or checkpoints[0] < 0:
        raise ValueError(f"checkpoints must be increasing step counts >= 0, got {checkpoints}")
    keys = ("precision", "recall", "f1", "precision_1px", "recall_1px", "f1_1px")
    curves = {"steps": checkpoints, **{key: [] for key in keys}, "inked": [], "exact_mst_rate": [], "cycle_rate": []}
    states, done = initial_states(tasks.inputs, model.channels), 0
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for step in checkpoints:
        if step > done:
            states = draw_with(model, None, step - done, states=states, generator=generator)
            done = step
        scores = score_drawings(states[:, :1], tasks)
        graphs = graph_scores(states, tasks)
        for key in keys:
            curves[key].append(round(scores[key], 4))
        curves["inked"].append(round(float((ink(states) >= THRESHOLD).float().mean()), 4))
        curves["exact_mst_rate"].append(round(graphs["exact_mst_rate"], 4))
        curves["cycle_rate"].append(round(graphs["cycle_rate"], 4))
    return curves


def evaluate(model, tasks: TaskBatch | None = None, steps: int = 96, seed: int = 0,
             threshold: float = THRESHOLD, engine: str = "fast") -> dict:
    """Run ``model`` on ``tasks`` (default: the held-out set) and measure the drawings.

    ``engine``: ``"fast"`` (``helpers.fast.infer``, the default) or ``"plain"`` (``model.rollout``);
    see ``draw_with``."""
    tasks = tasks if tasks is not None else heldout_tasks()
    finals = draw_with(model, tasks.inputs, steps, seed, engine=engine)
    result = score_drawings(finals[:, :1], tasks, threshold)
    result.update(steps=steps, seed=seed)
    return result



# ------------------------------------------------------------------------- held-out measurements

def surprise_settings(task: dict) -> dict[str, dict]:
    """Chapter 05's surprises for a model trained on ``task`` (canvas, min/max points, margin): the
    task itself, more points on the same canvas, a canvas 1.5 times as wide with the same point
    counts (longer edges), and that canvas with as many points per area as in training."""
    canvas, margin = task["canvas"], task["margin"]
    larger = round(1.5 * canvas)
    density = (larger - 2 * margin) ** 2 / (canvas - 2 * margin) ** 2     # the area the points may use
    return {"as trained": dict(task),
            "more points": {**task, "min_points": task["max_points"] + 1, "max_points": task["max_points"] + 10},
            "larger canvas": {**task, "canvas": larger},
            "larger, as dense": {**task, "canvas": larger, "min_points": round(task["min_points"] * density),
                                 "max_points": round(task["max_points"] * density)}}


EVAL_STEP_CHOICES = (96, 256, 512, 1000)   # rollout lengths the evaluation length is chosen from
VALIDATION_SEED = 777                        # tasks for that choice: never the held-out seed
LONG_ROLLOUT_STEPS = (0, 32, 96, 256, 512, 1000, 2000, 4000)


def choose_eval_steps(model, task: dict, choices=EVAL_STEP_CHOICES, count: int = 50,
                      seed: int = VALIDATION_SEED) -> dict:
    """The evaluation length of ``model``: the fewest of ``choices`` steps at which the 1-pixel F1 of
    ``count`` validation tasks (seed ``seed``, not the held-out seed) reaches 90 % of its best. A slow
    drawer is not judged before it has drawn, and the choice never looks at the held-out tasks."""
    curves = scores_over_rollout(model, heldout_tasks(count, seed, **task), choices)
    best = max(curves["f1_1px"])
    steps = next(step for step, f1 in zip(curves["steps"], curves["f1_1px"]) if f1 >= 0.9 * best)
    return {"steps": steps, "validation_f1_1px": {str(step): f1 for step, f1 in zip(curves["steps"], curves["f1_1px"])},
            "rule": f"the fewest of these steps at which the 1-pixel F1 of {count} validation tasks (seed {seed}, "
                    f"not the held-out seed) reaches 90 % of its best"}


def long_rollout_metadata(model, task: dict, count: int = 50, checkpoints=LONG_ROLLOUT_STEPS) -> dict:
    """``scores_over_rollout`` of the first ``count`` held-out tasks, with how they were made."""
    started = time.perf_counter()
    curves = scores_over_rollout(model, heldout_tasks(count, **task), checkpoints)
    return {"count": count, "task_seed": HELDOUT_SEED, **task, "rollout_seed": 0, **curves,
            "measured_by": f"helpers.tasks.mst.scores_over_rollout(model, mst.heldout_tasks({count}), "
                           f"{list(curves['steps'])})",
            "seconds": round(time.perf_counter() - started, 1)}


def surprise_metadata(model, task: dict, steps: int, count: int = 50, seed: int = 7) -> dict:
    """Pixel and graph scores of ``model`` on ``count`` fresh tasks (seed ``seed``) of each surprise."""
    measured = {}
    for name, settings in surprise_settings(task).items():
        tasks = make_tasks(count, np.random.default_rng(seed), **settings)
        finals = draw_with(model, tasks.inputs, steps)
        graphs = graph_scores(finals, tasks)
        measured[name] = {**settings, "count": count, "task_seed": seed, "steps": steps,
                          **summary(score_drawings(finals[:, :1], tasks)), **graphs}
    return measured


def heldout_metadata(model, task_settings: dict, steps: int, rollout_seed: int = 0, chapter_count: int = 50,
                     check_count: int = 50) -> dict:
    """The held-out measurements stored in a model's JSON.

    ``"heldout"``: 200 held-out tasks drawn like the training tasks; ``"heldout_check"``: the first
    ``check_count`` of them (what the unit test redoes, cheaply); ``"heldout_chapter_task"``: the
    chapter's own task, 100x100 with 3 to 15 points, on the first ``chapter_count`` held-out tasks
    (100x100 rollouts are slow on a CPU). Each records how its tasks were made and run, the pixel
    scores of ``mst_metrics.score_drawings`` and, under ``"graph"``, ``mst_graphs.score_graphs``."""
    chapter_settings = {"canvas": CANVAS, "min_points": MIN_POINTS, "max_points": MAX_POINTS, "margin": MARGIN}
    measured = {}
    for name, settings, count in [("heldout", task_settings, HELDOUT_COUNT),
                                  ("heldout_check", task_settings, check_count),
                                  ("heldout_chapter_task", chapter_settings, chapter_count)]:
        tasks = heldout_tasks(count, **settings)
        finals = draw_with(model, tasks.inputs, steps, rollout_seed)
        result = summary(score_drawings(finals[:, :1], tasks))
        graph = graph_scores(finals, tasks)
        measured[name] = {"count": count, "task_seed": HELDOUT_SEED, **settings, **result, "steps": steps,
                          "rollout_seed": rollout_seed, "graph": graph}
    return measured


def full_metadata(model, task_settings: dict, steps: int | None = None, chapter_count: int = 50) -> dict:
    """Every figure chapter 05 reads from a model's JSON: the evaluation length (chosen on validation
    tasks unless ``steps`` is given), the held-out sets at that length, the surprises and the long rollout."""
    measured = {}
    if steps is None:
        measured["evaluation_length"] = choose_eval_steps(model, task_settings)
        steps = measured["evaluation_length"]["steps"]
    measured.update(heldout_metadata(model, task_settings, steps, chapter_count=chapter_count))
    measured["surprises"] = surprise_metadata(model, task_settings, steps)
    measured["long_rollout"] = long_rollout_metadata(model, task_settings)
    return measured



# ------------------------------------------------------------------------------------ training

@dataclass
class Settings(run.EngineSettings):
    """Every default of the MST training (and, inherited, of the pool loop)."""
    canvas: int = setting(CANVAS, "side of the square canvas, in pixels")
    min_points: int = setting(MIN_POINTS, "fewest points of a task")
    max_points: int = setting(MAX_POINTS, "most points of a task (included)")
    margin: float = setting(float(MARGIN), "points keep this far from every border")
    extra_ink_weight: float = setting(0.5, "weight of extra ink in the loss; missing ink weighs 1 (1.0: symmetric)")
    eval_steps: int = setting(0, "rollout steps of the held-out measurement (0: the length the model's own "
                                 "validation chooses, mst.choose_eval_steps, chapter 05's rule for every model)")
    chapter_count: int = setting(50, "held-out tasks of the chapter's 100x100 measurement (slow on a CPU)")
    padding: str = setting("zeros", "what the NCA sees beyond the canvas's border: zeros (a flat world with edges, "
                                    "as the planar MST it must draw) or circular (the world wraps around)")
    init: str = setting("", "continue from these saved weights (NAME.pt with NAME.json beside it)")
    channels: int = setting(nca.CHANNELS, "the rule's channels: 12 is chapter 03's 588-parameter rule; more make a "
                                          "larger rule (24: 2,328 parameters), the ALIFE 2021 talk's hypothesis")
    # the pool loop's sizes for this task
    iterations: int = setting(8000, "optimizer steps")
    batch_size: int = setting(8, "pool entries per iteration")
    min_steps: int = setting(64, "fewest CA steps per iteration")
    max_steps: int = setting(128, "CA steps per iteration are drawn from [min-steps, max-steps)")
    lr_milestones: tuple = setting((), "iterations at which the learning rate is multiplied by lr-gamma (none "
                                       "given: 1/8 and 1/2 of the iterations, as chapter 03's 1000 and 4000 of 8000)")
    engine: str = setting("fast", "fast: helpers.fast (the same states and gradients, several times faster); "
                                  "plain: model.rollout, as chapter 03 teaches it")

    def __post_init__(self):
        check_setting_types(self)       # before the default milestones are computed from the iterations
        if not self.lr_milestones:
            self.lr_milestones = (max(1, self.iterations // 8), max(2, self.iterations // 2))
        super().__post_init__()
        check_canvas(self.canvas, self.margin)
        if not 2 <= self.min_points <= self.max_points:
            raise ValueError(f"need 2 <= min_points <= max_points, got {self.min_points}, {self.max_points}")
        if self.eval_steps < 0 or self.chapter_count < 1:
            raise ValueError(f"need eval_steps >= 0 (0: chosen on validation tasks) and chapter_count >= 1, got "
                             f"{self.eval_steps}, {self.chapter_count}")
        check_extra_ink_weight(self.extra_ink_weight)
        nca.NCA(channels=self.channels, padding=self.padding)      # the rule's own checks of both

    def task_settings(self) -> dict:
        """How the tasks are drawn (the keyword arguments of ``make_tasks``)."""
        return {"canvas": self.canvas, "min_points": self.min_points, "max_points": self.max_points,
                "margin": self.margin}


#: The recipes that were run: the defaults made the shipped ``mst.pt`` (8000 iterations on the 100 x 100
#: task); ``comparison`` made the 1000-iteration models of chapter 05's comparisons (loss weights,
#: padding, rule size) on a 64 x 64 canvas with 3 to 10 points, the fast engine with bit masks (``--masks bits``).
PRESETS = {"comparison": Settings(iterations=1000, min_steps=48, max_steps=96, pool_size=256, batch_size=8, canvas=64,
                                  min_points=3, max_points=10, margin=6.0, lr_milestones=(625, 2500), eval_steps=256,
                                  engine="fast", masks="bits")}


def default_out(settings: Settings) -> str:
    return "outputs/mst.pt"


def new_model(settings: Settings) -> nca.NCA:
    """The untrained rule of chapter 03 with the task's padding, or the saved one ``settings.init``
    names (to continue training; its padding must be the settings' padding)."""
    if not settings.init:
        return nca.NCA(channels=settings.channels, padding=settings.padding)
    model = models.load(settings.init)
    if model.padding != settings.padding:
        raise ValueError(f"{settings.init} was trained with padding {model.padding!r}, these settings say "
                         f"{settings.padding!r}: pass --padding {model.padding} to continue training it")
    if model.channels != settings.channels:
        raise ValueError(f"{settings.init} has {model.channels} channels, these settings say {settings.channels}: "
                         f"pass --channels {model.channels} to continue training it")
    return model


def training_hooks(settings: Settings, model: nn.Module, device=None) -> dict:
    """What ``helpers.train.train_pool`` needs for this task: fresh tasks and the loss."""
    return {"make_samples": make_samples(settings, device), "loss_fn": loss(settings, device)}


def make_samples(settings: Settings, device=None):
    """``make_samples(n)`` for ``train_pool``: fresh tasks from a generator of their own (seed + 1,
    so training tasks never repeat the held-out set's seed); ``train_pool`` moves them to the device."""
    return pool_sampler(np.random.default_rng(settings.seed + 1), channels=settings.channels,
                        **settings.task_settings())


def loss(settings: Settings, device=None):
    """The training loss: the asymmetric squared error on channel 0."""
    return channel0_loss(settings.extra_ink_weight)


def measure(model: nn.Module, settings: Settings) -> dict:
    """The held-out measurements a saved model's JSON reports (see ``heldout_metadata``), at
    ``settings.eval_steps`` or, when that is 0, at the evaluation length its validation tasks choose
    (``choose_eval_steps``, stored as ``evaluation_length``): a slow drawer is not judged unfinished."""
    measured = {}
    steps = settings.eval_steps
    if not steps:
        measured["evaluation_length"] = choose_eval_steps(model, settings.task_settings())
        steps = measured["evaluation_length"]["steps"]
    return {**measured, **heldout_metadata(model, settings.task_settings(), steps,
                                           chapter_count=settings.chapter_count)}


def describe(settings: Settings, model: nn.Module, history: History) -> dict:
    """What a saved MST model's JSON says about how it was made and how good it is."""
    started = time.perf_counter()
    measured = measure(model, settings)
    init_from = None
    if settings.init:
        init_from = {key: value for key, value in models.load_metadata(settings.init).items()
                     if key in ("command", "settings")}
    return {
        "engine": settings.engine + (" (fused CPU kernel)" if settings.engine == "fast" and fast.uses_cpu_kernel()
                                     else ""),
        "init_from": init_from,
        "task_settings": {**settings.task_settings(), "min_spacing": MIN_SPACING, "point_radius": POINT_RADIUS,
                          "line_width": LINE_WIDTH},
        "loss": f"asymmetric squared error on channel 0, extra ink weight {settings.extra_ink_weight}",
        "final_loss_mean_of_last_100": mean_of_last(history.losses, 100),
        **measured,
        "evaluation_seconds": round(time.perf_counter() - started, 1),
    }


def summary_line(metadata: dict) -> str:
    """One line for the command to print after training."""
    heldout = metadata["heldout"]
    return (f"held-out ({heldout['count']} tasks, {heldout['steps']} steps): F1 {heldout['f1']:.3f} "
            f"(1 px: {heldout['f1_1px']:.3f}), all edges drawn in {heldout['all_edges_drawn']:.1%} of tasks, "
            f"{heldout['hallucinated_blobs']} hallucinated blobs")


def evaluate_arguments(parser) -> None:
    parser.add_argument("--steps", type=checks.count_flag(1), help="rollout steps (default: as stored)")
    parser.add_argument("--chapter-count", type=checks.count_flag(1),
                        help="tasks of the 100x100 measurement (default: as stored)")
    parser.add_argument("--choose-steps", action="store_true",
                        help="choose the rollout length on validation tasks (mst.choose_eval_steps, stored as "
                             "evaluation_length) and measure the held-out sets at it, without --full's surprises "
                             "and long rollout (chapter 05's rule for its comparison models)")
    parser.add_argument("--full", action="store_true",
                        help="also choose the rollout length on validation tasks (unless --steps is given) and "
                             "measure the surprises and the long rollout: all of chapter 05's stored figures "
                             "(a few minutes on a CPU)")


def evaluate_saved(model: nn.Module, metadata: dict, args) -> tuple[dict, str]:
    """The held-out measurements of a saved model again (with --full, every figure chapter 05 reads
    from its JSON), and the command that makes them, recorded as ``metrics_command``."""
    stored = metadata.get("heldout")
    if stored is None:
        raise ValueError(f"{args.model} has no held-out MST measurements in its JSON: is it an MST model?")
    task_settings = {key: stored[key] for key in ("canvas", "min_points", "max_points", "margin")}
    chapter_count = args.chapter_count or metadata.get("heldout_chapter_task", {}).get("count", 50)
    choose = getattr(args, "choose_steps", False) and not args.steps
    if args.full:
        measured = full_metadata(model, task_settings, args.steps, chapter_count=chapter_count)
    elif choose:
        measured = {"evaluation_length": choose_eval_steps(model, task_settings)}
        measured.update(heldout_metadata(model, task_settings, measured["evaluation_length"]["steps"],
                                         chapter_count=chapter_count))
    else:
        measured = heldout_metadata(model, task_settings, args.steps or stored["steps"], chapter_count=chapter_count)
    flags = ["--full"] if args.full else ["--choose-steps"] if choose else []
    if args.steps or not (args.full or choose):
        flags.append(f"--steps {measured['heldout']['steps']}")
    measured["metrics_command"] = (f"python -m helpers evaluate mst {args.model} {' '.join(flags)} "
                                   f"--chapter-count {chapter_count} --write")
    return measured, json.dumps(measured, indent=1)


def train(settings: Settings, out=None, device=None, progress: bool = True, **options) -> tuple[nn.Module, dict]:
    """Train the chapter's NCA on MST tasks with the chapter-03 pool loop, measure it on the held-out
    sets and (with ``out``, a ``.pt`` path) save it; returns the model and its metadata. ``options``:
    see ``helpers.tasks.run.train_and_save``."""
    return run.train_and_save(sys.modules[__name__], settings, out, device, progress, **options)
