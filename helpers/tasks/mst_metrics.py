"""The measurements of chapter 05: how well a drawing matches its minimum spanning tree.

They read images only (no model, no task generation), so they can be checked on hand-made images:

* ``pixel_scores``     pixel precision, recall and F1 of the edges (strict, or with a tolerance)
* ``edges_drawn``      which tree edges are drawn over their whole length
* ``label_components`` / ``hallucinated_blobs``   ink components that touch no input point (most are specks
                        on or beside a tree line: not made-up ink)
* ``stray_blobs``      ink components away from every true point and edge: ink the rule made up
* ``border_ink``       ink in the band along the canvas's border, where no target ever has any
* ``score_drawings``   all of them for a batch of drawings, pooled; ``summary`` for JSON
* ``overlay``          a picture: black where right, blue where missing, red where extra

``helpers.tasks.mst`` makes the tasks and runs models; this module judges what they drew.
"""
from __future__ import annotations

import numpy as np
import torch

THRESHOLD = 0.5          # a pixel "has ink" when its value is at least this
BORDER_BAND = 3          # pixels from the edge: targets never have ink there (points keep a margin of 6 or more)
STRAY_DISTANCE = 2       # ink farther than this from every pixel of the target's ink is stray (``stray_blobs``)


def check_image(image, name: str, canvas: int | None = None) -> np.ndarray:
    """A single-channel image as a float NumPy array ``[H, W]`` (accepts [1, H, W] too)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be one image shaped [H, W] or [1, H, W], got shape {array.shape}")
    if canvas is not None and array.shape != (canvas, canvas):
        raise ValueError(f"{name} is {array.shape[0]}x{array.shape[1]}, expected {canvas}x{canvas}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values (did the model diverge?); it cannot be scored")
    return array.astype(np.float32)


def check_threshold(threshold) -> float:
    """The ink threshold, strictly between 0 and 1: at 0 every pixel would count as ink (and an
    untrained model would score F1 = 1 on a blank canvas), at 1 almost none would."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a number strictly between 0 and 1, got {threshold!r}")
    return float(threshold)


def overlay(drawn, target, threshold: float = THRESHOLD) -> np.ndarray:
    """An RGB picture ``[H, W, 3]`` comparing a drawing with its target: black where both have ink,
    blue where ink is missing, red where ink is extra, white where neither."""
    threshold = check_threshold(threshold)
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
    threshold = check_threshold(threshold)
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
    An empty drawing has precision 1 (nothing wrong was drawn). An empty target is refused: with no
    edge ink to find (points that coincide or nearly touch, so their discs cover every edge) recall
    is undefined, and calling it 1 would score an empty drawing perfect."""
    if target == 0:
        raise ValueError("nothing to score: the target has no edge pixels outside the input discs (its points "
                         "coincide or their discs touch, so every edge lies inside them); give points further apart "
                         "than two disc radii (the tasks of helpers.tasks.mst keep them MIN_SPACING apart)")
    precision = true_drawn / drawn if drawn else 1.0
    recall = found_target / target
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_drawn": true_drawn, "drawn": drawn,
            "found_target": found_target, "target": target}


def edges_drawn(drawn, points, edges, radius: float, threshold: float = THRESHOLD,
                coverage: float = 0.9, tolerance: int = 1) -> list[bool]:
    """For every edge: is it drawn? Sample the segment every half pixel, outside the two discs of
    ``radius`` pixels at its ends; the edge counts as drawn when at least ``coverage`` of the
    samples find ink (>= ``threshold``) within ``tolerance`` pixels."""
    threshold = check_threshold(threshold)
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
    threshold = check_threshold(threshold)
    drawn = check_image(drawn, "drawn")
    inputs = check_image(inputs, "inputs", drawn.shape[0])
    labels, count = label_components(drawn >= threshold)
    touching = set(np.unique(labels[inputs > 0.0]).tolist()) - {0}
    return count - len(touching)


def stray_blobs(drawn, target, threshold: float = THRESHOLD, distance: int = STRAY_DISTANCE) -> list[int]:
    """The sizes (pixels) of the ink components of ``drawn`` (8-neighbourhood) with no pixel within
    ``distance`` pixels of the target's ink (its points or its tree edges): ink made up away from every
    true edge. A speck beside a tree line, or a line drawn a pixel too thick, is not stray (it is
    ``hallucinated_blobs``'s count when it touches no input disc); a wrong edge between two points is
    not stray either (the graph scores count it)."""
    threshold = check_threshold(threshold)
    drawn = check_image(drawn, "drawn")
    target = check_image(target, "target", drawn.shape[0])
    if not (isinstance(distance, (int, np.integer)) and not isinstance(distance, bool) and distance >= 0):
        raise ValueError(f"distance must be a whole number of pixels >= 0, got {distance!r}")
    labels, count = label_components(drawn >= threshold)
    near_target = set(np.unique(labels[dilate(target >= threshold, int(distance))]).tolist()) - {0}
    return [int((labels == label).sum()) for label in range(1, count + 1) if label not in near_target]


def border_ink(drawn, band: int = BORDER_BAND, threshold: float = THRESHOLD) -> float:
    """The fraction of the pixels within ``band`` pixels of the canvas's edge that have ink.

    The tasks keep every point at least 6 pixels from the border, so a target never inks this band:
    ink here is a ray the rule drew towards (or, in a world that wraps around, across) the border."""
    threshold = check_threshold(threshold)
    drawn = check_image(drawn, "drawn") >= threshold
    if not (is_positive_int(band) and 2 * band < min(drawn.shape)):
        raise ValueError(f"band must be a positive integer under half the canvas, got {band!r}")
    inner = np.zeros_like(drawn)
    inner[band:-band, band:-band] = True
    return float(drawn[~inner].mean())


def is_positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def check_tasks(drawings, tasks) -> None:
    """One drawing per task, and every list of the ``TaskBatch`` as long: the scores walk them
    together with ``zip``, which would silently score the shortest prefix and drop the rest."""
    if not isinstance(drawings, torch.Tensor):
        raise ValueError(f"drawings must be a tensor [N, 1, H, W] (channel 0 of the states: mst.ink(states)), got "
                         f"a {type(drawings).__name__}")
    counts = {"drawings": len(drawings), "inputs": len(tasks.inputs), "targets": len(tasks.targets),
              "points": len(tasks.points), "edges": len(tasks.edges)}
    if len(set(counts.values())) != 1 or counts["drawings"] == 0:
        raise ValueError(f"need one drawing per task and the same number of inputs, targets, point lists and edge "
                         f"lists (at least one), got {counts}; build the TaskBatch with helpers.tasks.mst.make_tasks "
                         "or pass as many drawings as tasks")


def score_drawings(drawings: torch.Tensor, tasks, threshold: float = THRESHOLD) -> dict:
    """Every measurement of the chapter for drawings ``[N, 1, H, W]`` (channel 0, any range) of
    ``tasks`` (a ``helpers.tasks.mst.TaskBatch``: inputs, targets, points, edges, point_radius).

    Returns pooled pixel precision/recall/F1 (edges only, strict and with 1-pixel tolerance), the
    fraction of tasks with every tree edge drawn, hallucinated blobs, and per-task lists."""
    threshold = check_threshold(threshold)
    check_tasks(drawings, tasks)
    if drawings.shape != tasks.targets.shape:
        raise ValueError(f"drawings {tuple(drawings.shape)} do not match the tasks {tuple(tasks.targets.shape)}: "
                         "give one [1, H, W] drawing per task on the tasks' canvas (channel 0 of the states: "
                         "mst.ink(states))")
    totals = {0: np.zeros(4, int), 1: np.zeros(4, int)}
    per_task = {"f1": [], "all_edges": [], "blobs": [], "stray_blobs": [], "border_ink": []}
    keys = ("true_drawn", "drawn", "found_target", "target")
    for drawing, image, target, points, edges in zip(drawings, tasks.inputs, tasks.targets, tasks.points, tasks.edges):
        drawing = drawing[0].float().clamp(0, 1).numpy()
        for tolerance in totals:
            scores = pixel_scores(drawing, target, image, threshold, tolerance)
            totals[tolerance] += [scores[key] for key in keys]
            if tolerance == 0:
                per_task["f1"].append(scores["f1"])
        per_task["all_edges"].append(all(edges_drawn(drawing, points, edges, tasks.point_radius, threshold)))
        per_task["blobs"].append(hallucinated_blobs(drawing, image, threshold))
        per_task["stray_blobs"].append(len(stray_blobs(drawing, target, threshold)))
        per_task["border_ink"].append(border_ink(drawing, threshold=threshold))
    strict, tolerant = (scores_from_counts(*map(int, totals[t])) for t in (0, 1))
    return {"precision": strict["precision"], "recall": strict["recall"], "f1": strict["f1"],
            "precision_1px": tolerant["precision"], "recall_1px": tolerant["recall"], "f1_1px": tolerant["f1"],
            "all_edges_drawn": float(np.mean(per_task["all_edges"])),
            "hallucinated_blobs": int(np.sum(per_task["blobs"])),
            "tasks_with_blobs": float(np.mean(np.array(per_task["blobs"]) > 0)),
            "stray_blobs": int(np.sum(per_task["stray_blobs"])),
            "tasks_with_stray_blobs": float(np.mean(np.array(per_task["stray_blobs"]) > 0)),
            "border_ink": float(np.mean(per_task["border_ink"])),
            "tasks_with_border_ink": float(np.mean(np.array(per_task["border_ink"]) > 0)),
            "tasks": len(tasks), "threshold": threshold, "per_task": per_task}


#: Thresholds of ``precision_recall``: every 0.05 from 0.05 to 0.95.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def precision_recall(drawings: torch.Tensor, tasks, thresholds=THRESHOLDS) -> dict:
    """Pooled pixel precision and recall of the edges at every ink threshold, and their average
    precision (the area under the precision-recall curve, as a sum over the recall steps).

    One threshold judges a drawing by whether its values cross one line; two rules can trade
    precision for recall there and look different while drawing alike. The curve compares them at
    every threshold at once. The target's edge pixels are fixed (target >= ``THRESHOLD``, input discs
    left out); only the drawing's threshold moves."""
    check_tasks(drawings, tasks)
    if drawings.shape != tasks.targets.shape:
        raise ValueError(f"drawings {tuple(drawings.shape)} do not match the tasks {tuple(tasks.targets.shape)}")
    values = drawings.detach().float().cpu()
    if not torch.isfinite(values).all():
        raise ValueError("the drawings contain NaN or infinite values (did the model diverge?)")
    thresholds = sorted({check_threshold(t) for t in thresholds}, reverse=True)   # recall grows along the list
    outside_discs = tasks.inputs <= 0.0
    target = (tasks.targets >= THRESHOLD) & outside_discs
    precision, recall = [], []
    for threshold in thresholds:
        drawn = (values >= threshold) & outside_discs
        right = int((drawn & target).sum())
        scores = scores_from_counts(right, int(drawn.sum()), right, int(target.sum()))
        precision.append(scores["precision"])
        recall.append(scores["recall"])
    steps = np.diff([0.0, *recall])
    return {"thresholds": thresholds, "precision": precision, "recall": recall,
            "average_precision": float(np.sum(steps * np.array(precision)))}


def summary(result: dict) -> dict:
    """The metrics of ``evaluate`` without the per-task lists, rounded (for JSON and printing)."""
    return {key: round(value, 4) if isinstance(value, float) else value
            for key, value in result.items() if key != "per_task"}
