"""The minimum-spanning-tree task of chapter 05, as the course imports it.

A task is a handful of points scattered on a square canvas. The **input** image shows the points
as small discs; the **target** shows the same discs joined by the edges of their Euclidean minimum
spanning tree (MST), drawn as anti-aliased lines. An NCA gets the input in channel 0 of its state
and must turn channel 0 into the target.

* ``random_points``                     points with a margin and a minimum spacing
* ``minimum_spanning_tree``             Kruskal's algorithm with a union-find
* ``draw_points`` / ``draw_tree``       rasterization (values in [0, 1])
* ``make_tasks`` / ``heldout_tasks``    batches of (input, target) pairs, with their points and edges
* ``asymmetric_loss``                   missing ink costs twice as much as extra ink
* ``pixel_scores``, ``edges_drawn``, ``hallucinated_blobs``, ``label_components``  the measurements
* ``evaluate``                          all of them for a model on a set of tasks

The pretrained model ``data/models/mst.pt`` is made by one command (see ``main`` at the bottom)::

    python -m helpers.tasks train --iterations 1500 --out data/models/mst.pt
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import fast, nca

CANVAS = 100             # side of the square canvas, in pixels
MARGIN = 10              # points keep this far from every border (the NCA's world wraps around)
MIN_POINTS, MAX_POINTS = 3, 15
MIN_SPACING = 8.0        # points are at least this far apart, so their discs never touch
POINT_RADIUS = 2.0       # radius of an input disc (where its anti-aliased rim is half grey)
LINE_WIDTH = 1.5         # width of a tree edge
THRESHOLD = 0.5          # a pixel "has ink" when its value is at least this
HELDOUT_SEED = 2026      # the fixed seed of the held-out set
HELDOUT_COUNT = 200


# --------------------------------------------------------------------------------- checks

def check_canvas(canvas, margin: float = 0.0) -> int:
    """The canvas side as an int; anything else (not an integer, too small for its margin) raises."""
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)):
        raise ValueError(f"the canvas size must be an integer number of pixels, got {canvas!r}")
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


def check_image(image, name: str, canvas: int | None = None) -> np.ndarray:
    """A single-channel image as a float NumPy array ``[H, W]`` (accepts [1, H, W] too)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be one image shaped [H, W] or [1, H, W], got shape {array.shape}")
    if canvas is not None and array.shape != (canvas, canvas):
        raise ValueError(f"{name} is {array.shape[0]}x{array.shape[1]}, expected {canvas}x{canvas}")
    return array.astype(np.float32)


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


def find_root(parent: list[int], node: int) -> int:
    """The representative of ``node``'s set, halving the path on the way (union-find)."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def minimum_spanning_tree(points, canvas: int = CANVAS) -> list[tuple[int, int]]:
    """The Euclidean minimum spanning tree of ``points``, as a sorted list of edges ``(i, j)``, i < j.

    Kruskal: sort all n(n-1)/2 pairs by length; walk through them, shortest first, and keep an
    edge when its two ends are still in different components (a union-find tells), merging them.
    After n - 1 kept edges every point is connected, and no cheaper tree exists (cut property).
    """
    points = check_points(points, canvas)
    count = len(points)
    pairs = [(float(np.hypot(*(points[i] - points[j]))), i, j) for i in range(count) for j in range(i + 1, count)]
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


def tree_length(points, edges) -> float:
    """Total Euclidean length of ``edges`` (pairs of indices into ``points``)."""
    points = np.asarray(points, dtype=np.float64)
    return float(sum(np.hypot(*(points[i] - points[j])) for i, j in edges))


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


def segment_distance(xs: np.ndarray, ys: np.ndarray, start, end) -> np.ndarray:
    """Distance from every pixel centre (xs, ys) to the segment ``start``-``end``."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    # position of the closest point along the segment, as a fraction 0..1 of its length
    along = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(xs - (x0 + along * dx), ys - (y0 + along * dy))


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

    def __len__(self) -> int:
        return len(self.points)


def make_task(points, canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray, list]:
    """(input image, target image, MST edges) for one set of points."""
    edges = minimum_spanning_tree(points, canvas)
    image = draw_points(points, canvas)
    return image, np.maximum(image, draw_edges(points, edges, canvas)), edges


def make_tasks(count: int, rng: np.random.Generator, canvas: int = CANVAS,
               min_points: int = MIN_POINTS, max_points: int = MAX_POINTS, margin: float = MARGIN) -> TaskBatch:
    """``count`` random tasks with ``min_points`` to ``max_points`` points each (both included)."""
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
    if inputs.ndim != 4 or inputs.shape[1] != 1:
        raise ValueError(f"inputs must be shaped [N, 1, H, W], got {tuple(inputs.shape)}")
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

def asymmetric_loss(drawn: torch.Tensor, target: torch.Tensor, extra_ink_weight: float = 0.5) -> torch.Tensor:
    """Weighted squared error: a pixel with too much ink costs ``extra_ink_weight`` times what a
    pixel with too little costs (missing ink is the worse mistake: a gap breaks the tree)."""
    if drawn.shape != target.shape:
        raise ValueError(f"drawn {tuple(drawn.shape)} and target {tuple(target.shape)} must have the same shape")
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
    return states[:, :1].clamp(0.0, 1.0)


def paper(images: torch.Tensor) -> torch.Tensor:
    """Ink images shown as dark ink on white paper (1 - ink), for pictures."""
    return 1.0 - images.clamp(0.0, 1.0)


def overlay(drawn, target, threshold: float = THRESHOLD) -> np.ndarray:
    """An RGB picture ``[H, W, 3]`` comparing a drawing with its target: black where both have ink,
    blue where ink is missing, red where ink is extra, white where neither."""
    drawn = check_image(drawn, "drawn") >= threshold
    target = check_image(target, "target", drawn.shape[0]) >= threshold
    picture = np.ones(drawn.shape + (3,), np.float32)
    picture[drawn & target] = (0.0, 0.0, 0.0)
    picture[target & ~drawn] = (0.15, 0.35, 1.0)
    picture[drawn & ~target] = (0.95, 0.2, 0.15)
    return picture


# ------------------------------------------------------------------------------ measurements

def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1)^2 square (no wraparound): True within ``radius`` pixels."""
    if radius <= 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, radius)
    grown = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy:dy + height, dx:dx + width]
    return grown


def pixel_scores(drawn, target, inputs=None, threshold: float = THRESHOLD, tolerance: int = 0) -> dict:
    """Pixel precision, recall and F1 of ink ``drawn >= threshold`` against ``target >= threshold``.

    With ``inputs`` the pixels of the input discs are left out of both, so the scores measure the
    *edges* only (copying the input would otherwise earn free points). With ``tolerance = t`` a
    drawn pixel counts as correct when target ink lies within t pixels, and a target pixel as found
    when drawn ink lies within t pixels. Counts are returned too, so scores can be pooled.
    """
    drawn = check_image(drawn, "drawn") >= threshold
    target = check_image(target, "target", drawn.shape[0]) >= threshold
    keep = np.ones_like(drawn)
    if inputs is not None:
        keep = check_image(inputs, "inputs", drawn.shape[0]) <= 0.0
    drawn, target = drawn & keep, target & keep
    true_drawn = int((drawn & dilate(target, tolerance)).sum())    # drawn pixels that are right
    found_target = int((target & dilate(drawn, tolerance)).sum())  # target pixels that were drawn
    return scores_from_counts(true_drawn, int(drawn.sum()), found_target, int(target.sum()))


def scores_from_counts(true_drawn: int, drawn: int, found_target: int, target: int) -> dict:
    """Precision = right drawn / drawn, recall = found target / target, F1 their harmonic mean.
    An empty drawing has precision 1 (nothing wrong was drawn); an empty target has recall 1."""
    precision = true_drawn / drawn if drawn else 1.0
    recall = found_target / target if target else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_drawn": true_drawn, "drawn": drawn,
            "found_target": found_target, "target": target}


def edges_drawn(drawn, points, edges, threshold: float = THRESHOLD, radius: float = POINT_RADIUS,
                coverage: float = 0.9, tolerance: int = 1) -> list[bool]:
    """For every edge: is it drawn? Sample the segment every half pixel, outside the two discs; the
    edge counts as drawn when at least ``coverage`` of the samples find ink (>= ``threshold``)
    within ``tolerance`` pixels."""
    near_ink = dilate(check_image(drawn, "drawn") >= threshold, tolerance)
    size = near_ink.shape[0]
    points = np.asarray(points, dtype=np.float64)
    answers = []
    for i, j in edges:
        start, end = points[i], points[j]
        length = float(np.hypot(*(end - start)))
        fractions = np.linspace(0.0, 1.0, max(2, int(length * 2) + 1))
        samples = start + fractions[:, None] * (end - start)
        outside = (fractions * length > radius) & ((1 - fractions) * length > radius)
        if not outside.any():  # the two discs touch: nothing to draw between them
            answers.append(True)
            continue
        columns, rows = np.clip(np.round(samples[outside]).astype(int).T, 0, size - 1)
        answers.append(bool(near_ink[rows, columns].mean() >= coverage))
    return answers


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean image (8-neighbourhood), by flood fill.

    Returns ``(labels, count)``: ``labels`` is 0 on background and 1..count on the components.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"label_components needs a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for row, column in zip(*np.nonzero(mask)):
        if labels[row, column]:
            continue
        count += 1
        labels[row, column] = count
        stack = [(row, column)]
        while stack:
            y, x = stack.pop()
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        stack.append((ny, nx))
    return labels, count


def hallucinated_blobs(drawn, inputs, threshold: float = THRESHOLD) -> int:
    """Number of ink components in ``drawn`` that touch no input point (no pixel of an input disc)."""
    drawn = check_image(drawn, "drawn")
    inputs = check_image(inputs, "inputs", drawn.shape[0])
    labels, count = label_components(drawn >= threshold)
    touching = set(np.unique(labels[inputs > 0.0]).tolist()) - {0}
    return count - len(touching)


# -------------------------------------------------------------------------------- evaluation

ENGINES = ("fast", "plain")


@torch.no_grad()
def draw_with(model, inputs: torch.Tensor, steps: int, seed: int = 0, chunk: int = 50,
              states: torch.Tensor | None = None, engine: str = "fast") -> torch.Tensor:
    """Run ``model`` for ``steps`` steps from the inputs (or from ``states``); returns the final states.

    The random update masks come from a ``torch.Generator`` seeded with ``seed``, so the result is
    the same on every run; tasks run ``chunk`` at a time to bound memory. ``engine="fast"`` runs
    ``helpers.fast.infer`` with exact masks: the same masks, drawn from the same generator, as
    ``engine="plain"`` (``model.rollout``), so both give the same states up to float rounding
    (``tests/test_tasks.py`` checks it); models that are not ``helpers.nca.NCA`` always run plain."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    use_fast = engine == "fast" and isinstance(model, nca.NCA)
    device = next(model.parameters()).device
    states = initial_states(inputs, model.channels) if states is None else states
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


def score_drawings(drawings: torch.Tensor, tasks: TaskBatch, threshold: float = THRESHOLD) -> dict:
    """Every measurement of the chapter for drawings ``[N, 1, H, W]`` (channel 0, any range) of ``tasks``.

    Returns pooled pixel precision/recall/F1 (edges only, strict and with 1-pixel tolerance), the
    fraction of tasks with every tree edge drawn, hallucinated blobs, and per-task lists."""
    if drawings.shape != tasks.targets.shape:
        raise ValueError(f"drawings {tuple(drawings.shape)} do not match the tasks {tuple(tasks.targets.shape)}")
    totals = {0: np.zeros(4, int), 1: np.zeros(4, int)}
    per_task = {"f1": [], "all_edges": [], "blobs": []}
    keys = ("true_drawn", "drawn", "found_target", "target")
    for drawing, image, target, points, edges in zip(drawings, tasks.inputs, tasks.targets, tasks.points, tasks.edges):
        drawing = drawing[0].float().clamp(0, 1).numpy()
        for tolerance in totals:
            scores = pixel_scores(drawing, target, image, threshold, tolerance)
            totals[tolerance] += [scores[key] for key in keys]
            if tolerance == 0:
                per_task["f1"].append(scores["f1"])
        per_task["all_edges"].append(all(edges_drawn(drawing, points, edges, threshold)))
        per_task["blobs"].append(hallucinated_blobs(drawing, image, threshold))
    strict, tolerant = (scores_from_counts(*map(int, totals[t])) for t in (0, 1))
    return {"precision": strict["precision"], "recall": strict["recall"], "f1": strict["f1"],
            "precision_1px": tolerant["precision"], "recall_1px": tolerant["recall"], "f1_1px": tolerant["f1"],
            "all_edges_drawn": float(np.mean(per_task["all_edges"])),
            "hallucinated_blobs": int(np.sum(per_task["blobs"])),
            "tasks_with_blobs": float(np.mean(np.array(per_task["blobs"]) > 0)),
            "tasks": len(tasks), "threshold": threshold, "per_task": per_task}


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


def summary(result: dict) -> dict:
    """The metrics of ``evaluate`` without the per-task lists, rounded (for JSON and printing)."""
    return {key: round(value, 4) if isinstance(value, float) else value
            for key, value in result.items() if key != "per_task"}


# ------------------------------------------------------------------------- the training command

def heldout_metadata(model, task_settings: dict, steps: int, rollout_seed: int = 0, chapter_count: int = 50,
                     check_count: int = 50) -> dict:
    """The held-out measurements stored in a model's JSON.

    ``"heldout"``: 200 held-out tasks drawn like the training tasks; ``"heldout_check"``: the first
    ``check_count`` of them (what the unit test redoes, cheaply); ``"heldout_chapter_task"``: the
    chapter's own task, 100x100 with 3 to 15 points, on the first ``chapter_count`` held-out tasks
    (100x100 rollouts are slow on a CPU). Each records how its tasks were made and run."""
    chapter_settings = {"canvas": CANVAS, "min_points": MIN_POINTS, "max_points": MAX_POINTS, "margin": MARGIN}
    measured = {}
    for name, settings, count in [("heldout", task_settings, HELDOUT_COUNT),
                                  ("heldout_check", task_settings, check_count),
                                  ("heldout_chapter_task", chapter_settings, chapter_count)]:
        result = summary(evaluate(model, heldout_tasks(count, **settings), steps=steps, seed=rollout_seed))
        measured[name] = {"count": count, "task_seed": HELDOUT_SEED, **settings,
                          **{key: value for key, value in result.items() if key not in ("seed",)},
                          "rollout_seed": rollout_seed}
    return measured


def save_every(model, path, every: int = 100):
    """An ``on_iteration`` hook for ``train_pool``: save the weights (with their JSON) every ``every``
    iterations, so a long run that has to be stopped still leaves a loadable model behind."""

    def save(iteration: int, loss: float) -> None:
        if (iteration + 1) % every == 0:
            nca.save_model(model, path, {"partial": True, "iteration": iteration + 1, "loss": loss})
            print(f"iteration {iteration + 1}: loss {loss:.5f}, weights saved to {path}", flush=True)

    return save


def train_mst(iterations: int, out: str | None = None, min_steps: int = 64, max_steps: int = 128,
              pool_size: int = 256, batch_size: int = 8, seed: int = 0, threads: int | None = None,
              canvas: int = CANVAS, min_points: int = MIN_POINTS, max_points: int = MAX_POINTS,
              margin: float = MARGIN, eval_steps: int = 96, extra_ink_weight: float = 0.5,
              lr_milestones: tuple | None = None, checkpoint: str | None = None, init: str | None = None,
              chapter_count: int = 50, progress: bool = True, engine: str = "fast"):
    """Train the chapter's NCA on MST tasks with the chapter-03 pool loop, then measure it on the
    held-out set (tasks like the training ones) and on the chapter's 100x100 held-out set; save if ``out``.

    ``init`` continues from saved weights (a ``.pt`` with its ``.json``, whose command is recorded).
    ``engine="fast"`` trains with ``helpers.fast`` (the fused CPU kernel where it compiles; random
    masks from the fast stream: the same distribution as the plain ones, not the same draws);
    ``"plain"`` with the plain ``model.rollout`` of chapter 03."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    from . import train  # imported here: helpers.train imports the texture losses, which MST does not need

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    # chapter 03 lowers the rate at 1/8 and 1/2 of its 8000 iterations; a shorter run scales them
    milestones = lr_milestones or (max(1, iterations // 8), max(2, iterations // 2))
    config = train.TrainConfig(iterations=iterations, batch_size=batch_size, pool_size=pool_size,
                               min_steps=min_steps, max_steps=max_steps, reseed_every=8,
                               lr_milestones=tuple(milestones), seed=seed)
    task_settings = {"canvas": canvas, "min_points": min_points, "max_points": max_points, "margin": margin}
    torch.manual_seed(seed)
    model = nca.NCA()
    init_from = None
    if init:
        model = nca.load_model(init)
        init_from = {key: value for key, value in nca.load_metadata(init).items() if key in ("command", "train_config")}
    make_samples = pool_sampler(np.random.default_rng(seed + 1), **task_settings)
    rollout = fast.make_rollout(masks="fast") if engine == "fast" else None
    history = train.train_pool(model, make_samples, channel0_loss(extra_ink_weight), config, progress=progress,
                               rollout=rollout, on_iteration=save_every(model, checkpoint) if checkpoint else None)
    started = time.perf_counter()
    measured = heldout_metadata(model, task_settings, eval_steps, chapter_count=chapter_count)
    if out:
        settings = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in task_settings.items())
        nca.save_model(model, out, {
            "task": "minimum spanning tree (chapter 05)",
            "command": f"python -m helpers.tasks train --iterations {iterations} --min-steps {min_steps} "
                       f"--max-steps {max_steps} --pool-size {pool_size} --batch-size {batch_size} {settings} "
                       f"--lr-milestones {' '.join(map(str, milestones))} --eval-steps {eval_steps} "
                       f"--seed {seed} --engine {engine}"
                       + (f" --extra-ink-weight {extra_ink_weight}" if extra_ink_weight != 0.5 else "")
                       + (f" --threads {threads}" if threads else "")
                       + (f" --init {init}" if init else "") + f" --out {out}",
            "engine": engine + (" (fused CPU kernel)" if engine == "fast" and fast.uses_cpu_kernel() else ""),
            "init_from": init_from,
            "train_config": config.as_dict(),
            "task_settings": {**task_settings, "min_spacing": MIN_SPACING, "point_radius": POINT_RADIUS,
                              "line_width": LINE_WIDTH},
            "loss": f"asymmetric squared error on channel 0, extra ink weight {extra_ink_weight}",
            "final_loss_mean_of_last_100": train.mean_of_last(history.losses, 100),
            "training_seconds": round(history.seconds, 1),
            "hardware": "CUDA GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)",
            **measured,
            "evaluation_seconds": round(time.perf_counter() - started, 1),
        })
    metrics = measured["heldout"]
    return model, history, metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.tasks",
                                     description="Train (and evaluate) the chapter-05 MST cellular automaton.")
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train a model and save it with its held-out metrics")
    trainer.add_argument("--iterations", type=int, default=8000)
    trainer.add_argument("--min-steps", type=int, default=64)
    trainer.add_argument("--max-steps", type=int, default=128, help="exclusive")
    trainer.add_argument("--pool-size", type=int, default=256)
    trainer.add_argument("--batch-size", type=int, default=8)
    trainer.add_argument("--canvas", type=int, default=CANVAS)
    trainer.add_argument("--min-points", type=int, default=MIN_POINTS)
    trainer.add_argument("--max-points", type=int, default=MAX_POINTS)
    trainer.add_argument("--margin", type=float, default=MARGIN)
    trainer.add_argument("--eval-steps", type=int, default=96, help="steps of the held-out evaluation")
    trainer.add_argument("--lr-milestones", type=int, nargs="*", default=None,
                         help="iterations where the learning rate is multiplied by 0.3 (default: 1/8 and 1/2)")
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--extra-ink-weight", type=float, default=0.5,
                         help="weight of extra ink in the loss, missing ink weighs 1 (1.0: symmetric)")
    trainer.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    trainer.add_argument("--checkpoint", default=None, help="also save the weights here every 100 iterations")
    trainer.add_argument("--init", default=None, help="continue from these saved weights (NAME.pt with NAME.json)")
    trainer.add_argument("--chapter-count", type=int, default=50,
                         help="held-out tasks for the 100x100 measurement (slow on a CPU)")
    trainer.add_argument("--engine", choices=ENGINES, default="fast",
                         help="fast: helpers.fast (default); plain: chapter 03's model.rollout")
    trainer.add_argument("--out", default="data/models/mst.pt")
    evaluator = commands.add_parser("evaluate", help="measure a saved model on the held-out set")
    evaluator.add_argument("model", nargs="?", default="data/models/mst.pt")
    evaluator.add_argument("--steps", type=int, default=None, help="rollout steps (default: as stored)")
    evaluator.add_argument("--chapter-count", type=int, default=None, help="tasks of the 100x100 measurement")
    evaluator.add_argument("--write", action="store_true",
                           help="store the held-out metrics in the model's JSON (replacing the old ones)")
    args = parser.parse_args(argv)
    if args.command == "train":
        _, _, metrics = train_mst(args.iterations, args.out, args.min_steps, args.max_steps, args.pool_size,
                                  args.batch_size, args.seed, args.threads, args.canvas, args.min_points,
                                  args.max_points, args.margin, args.eval_steps,
                                  extra_ink_weight=args.extra_ink_weight,
                                  lr_milestones=tuple(args.lr_milestones) if args.lr_milestones else None,
                                  checkpoint=args.checkpoint, init=args.init, chapter_count=args.chapter_count,
                                  engine=args.engine)
        print({key: metrics[key] for key in ("f1", "f1_1px", "all_edges_drawn", "hallucinated_blobs")})
    else:
        metadata = nca.load_metadata(args.model)
        settings = {key: metadata["heldout"][key] for key in ("canvas", "min_points", "max_points", "margin")}
        steps = args.steps or metadata["heldout"]["steps"]
        chapter_count = args.chapter_count or metadata.get("heldout_chapter_task", {}).get("count", 50)
        measured = heldout_metadata(nca.load_model(args.model), settings, steps, chapter_count=chapter_count)
        measured["metrics_command"] = (f"python -m helpers.tasks evaluate {args.model} --steps {steps} "
                                       f"--chapter-count {chapter_count} --write")
        print(json.dumps(measured, indent=1))
        if args.write:
            metadata.update(measured)
            Path(args.model).with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")

if __name__ == "__main__":
    main()
