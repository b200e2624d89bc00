"""Tests of helpers.tasks.mst and mst_metrics: the MST task (chapter 05), its rasterization, loss,
measurements, training command and shipped models."""
import itertools
import json

import networkx as nx
import numpy as np
import pytest
import torch

from helpers import cli, env, models, nca
from helpers.tasks import mst, mst_graphs, mst_metrics, run

# ----------------------------------------------------------------------------- the MST

def tree_length(points, edges) -> float:
    """Total Euclidean length of ``edges`` (pairs of indices into ``points``)."""
    points = np.asarray(points, dtype=np.float64)
    return float(sum(np.hypot(*(points[i] - points[j])) for i, j in edges))


def brute_force_mst_length(points) -> float:
    """The shortest total length over ALL spanning trees (every set of n-1 edges that connects)."""
    count = len(points)
    pairs = list(itertools.combinations(range(count), 2))
    best = np.inf
    for edges in itertools.combinations(pairs, count - 1):
        graph = nx.Graph(edges)
        graph.add_nodes_from(range(count))
        if nx.is_connected(graph):
            best = min(best, tree_length(points, edges))
    return best


def is_spanning_tree(count, edges) -> bool:
    graph = nx.Graph(list(edges))
    graph.add_nodes_from(range(count))
    return len(edges) == count - 1 and nx.is_connected(graph)


@pytest.mark.parametrize("seed", range(12))
def test_mst_matches_brute_force_over_all_spanning_trees(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 99, size=(int(rng.integers(2, 6)), 2))
    edges = mst.minimum_spanning_tree(points)
    assert is_spanning_tree(len(points), edges)
    assert tree_length(points, edges) == pytest.approx(brute_force_mst_length(points), abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_mst_matches_networkx_for_larger_sets(seed):
    rng = np.random.default_rng(100 + seed)
    points = mst.random_points(int(rng.integers(3, 16)), rng)
    edges = mst.minimum_spanning_tree(points)
    graph = nx.Graph()
    for i, j in itertools.combinations(range(len(points)), 2):
        graph.add_edge(i, j, weight=float(np.hypot(*(points[i] - points[j]))))
    expected = nx.minimum_spanning_tree(graph).size(weight="weight")
    assert is_spanning_tree(len(points), edges)
    assert tree_length(points, edges) == pytest.approx(expected, abs=1e-9)
    assert all(i < j for i, j in edges) and edges == sorted(edges)


def test_mst_of_points_on_a_line_joins_neighbours():
    points = [[10, 50], [40, 50], [20, 50], [80, 50]]  # order along the line: 0, 2, 1, 3
    assert mst.minimum_spanning_tree(points) == [(0, 2), (1, 2), (1, 3)]


def test_union_find_root():
    parent = [1, 2, 2, 3]
    assert mst.find_root(parent, 0) == 2 and mst.find_root(parent, 3) == 3


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("points, message", [
    ([[50, 50]], "at least 2 points"),
    (np.zeros((0, 2)), "at least 2 points"),
    ([[10, 10], [100, 50]], "outside"),
    ([[-1, 10], [50, 50]], "outside"),
    ([[10, 10, 1], [50, 50, 1]], "shaped"),
    ([[10, np.nan], [50, 50]], "NaN"),
])
def test_bad_points_raise_clear_errors(points, message):
    with pytest.raises(ValueError, match=message):
        mst.minimum_spanning_tree(points)
    with pytest.raises(ValueError, match=message):
        mst.draw_points(points)


@pytest.mark.parametrize("canvas", [100.0, "100", 4, True])
def test_wrong_canvas_size_raises(canvas):
    with pytest.raises(ValueError, match="canvas"):
        mst.draw_points([[2, 2], [3, 3]], canvas=canvas)


def test_canvas_too_small_for_margin_raises():
    with pytest.raises(ValueError, match="too small"):
        mst.random_points(3, np.random.default_rng(0), canvas=20, margin=10)


def test_too_many_points_for_canvas_raises():
    with pytest.raises(ValueError, match="could not place"):
        mst.random_points(200, np.random.default_rng(0), canvas=40, margin=5)


def test_images_of_wrong_size_raise():
    with pytest.raises(ValueError, match="expected 100x100"):
        mst_metrics.pixel_scores(np.zeros((100, 100)), np.zeros((64, 64)))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        mst_metrics.hallucinated_blobs(np.zeros((2, 100, 100)), np.zeros((100, 100)))
    batch = mst.make_tasks(2, np.random.default_rng(0), canvas=32, margin=4, min_points=2, max_points=3)
    with pytest.raises(ValueError, match="do not match"):
        mst_metrics.score_drawings(torch.zeros(2, 1, 40, 40), batch)


def test_scores_refuse_thresholds_that_make_any_drawing_perfect_and_non_finite_drawings():
    batch = mst.make_tasks(3, np.random.default_rng(0), canvas=32, margin=4, min_points=2, max_points=3)
    blank = torch.zeros_like(batch.targets)
    for threshold in (0, 0.0, 1.0, float("nan"), -0.5, "0.5", True):
        with pytest.raises(ValueError, match="threshold"):
            mst_metrics.score_drawings(blank, batch, threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        mst_metrics.pixel_scores(blank[0], batch.targets[0], threshold=0)
    broken = blank.clone()
    broken[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mst_metrics.score_drawings(broken, batch)
    # the honest score of a blank canvas: no edge found
    assert mst_metrics.score_drawings(blank, batch)["recall"] == 0.0


def test_a_model_with_nan_weights_cannot_be_scored_as_perfect():
    model = nca.NCA()
    with torch.no_grad():
        model.update.bias.fill_(float("nan"))
    batch = mst.make_tasks(2, np.random.default_rng(1), canvas=32, margin=4, min_points=2, max_points=3)
    with pytest.raises(ValueError, match="diverge"):
        mst.evaluate(model, batch, steps=3)


# ------------------------------------------------------------------------ rasterization

def test_random_points_respect_margin_and_spacing():
    rng = np.random.default_rng(3)
    for _ in range(20):
        points = mst.random_points(15, rng)
        assert points.min() >= mst.MARGIN and points.max() <= mst.CANVAS - 1 - mst.MARGIN
        distances = [np.hypot(*(a - b)) for a, b in itertools.combinations(points, 2)]
        assert min(distances) >= mst.MIN_SPACING


def test_tasks_have_right_shapes_ranges_and_points():
    batch = mst.make_tasks(30, np.random.default_rng(1))
    assert batch.inputs.shape == batch.targets.shape == (30, 1, 100, 100)
    assert batch.inputs.dtype == torch.float32
    for images in (batch.inputs, batch.targets):
        assert images.min() >= 0.0 and images.max() <= 1.0
    assert (batch.targets >= batch.inputs).all()  # the target keeps every input disc
    for image, target, points, edges in zip(batch.inputs, batch.targets, batch.points, batch.edges):
        assert mst.MIN_POINTS <= len(points) <= mst.MAX_POINTS and len(edges) == len(points) - 1
        for x, y in points:  # every point is inked in the input AND the target, at its centre pixel
            row, column = int(round(y)), int(round(x))
            assert image[0, row, column] > 0.9 and target[0, row, column] > 0.9
        for i, j in edges:  # the midpoint of every tree edge is inked in the target, not in the input
            x, y = (points[i] + points[j]) / 2
            row, column = int(round(y)), int(round(x))
            assert target[0, row, column] > 0.5
            assert image[0, row, column] == 0.0 or np.hypot(*(points[i] - points[j])) < 4 * mst.POINT_RADIUS


def test_disc_and_line_profile():
    image = mst.draw_points([[20, 20], [60, 20]], canvas=80)
    assert image[20, 20] == 1.0 and image[20, 21] == 1.0 and image[20, 23] == 0.0
    assert image[20, 22] == 0.5 and image[22, 20] == 0.5  # the rim, 2 pixels out, is half grey
    line = mst.draw_edges([[10, 40], [70, 40]], [(0, 1)], canvas=80)
    assert line[40, 40] == 1.0 and line[38, 40] == 0.0 and line[42, 40] == 0.0
    assert 0.0 < line[41, 40] < 1.0  # the rim of a 1.5-pixel line is grey
    assert line[40, 5] == 0.0 and line[40, 75] == 0.0  # the line stops at its ends


def test_heldout_set_is_fixed():
    first, second = mst.heldout_tasks(5), mst.heldout_tasks(5)
    assert torch.equal(first.targets, second.targets)
    other = mst.make_tasks(5, np.random.default_rng(0))
    assert not torch.equal(first.targets, other.targets)


def test_initial_states_and_pool_sampler():
    make_samples = mst.pool_sampler(np.random.default_rng(0), canvas=32, margin=4, min_points=2, max_points=4)
    samples = make_samples(3)
    assert samples["state"].shape == (3, 12, 32, 32) and samples["target"].shape == (3, 1, 32, 32)
    assert (samples["state"][:, 1:] == 0).all() and samples["state"][:, 0].max() == 1.0
    assert (samples["target"] >= samples["state"][:, :1]).all()
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        mst.initial_states(torch.zeros(3, 32, 32))


# ------------------------------------------------------------------------------- loss

def test_asymmetric_loss_charges_extra_ink_half():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    missing = torch.zeros(1, 1, 2, 2)            # misses the one inked pixel by 1
    extra = target.clone()
    extra[0, 0, 1, 1] = 1.0                      # draws one pixel too many, by 1
    assert mst.asymmetric_loss(missing, target).item() == pytest.approx(1.0 / 4)
    assert mst.asymmetric_loss(extra, target).item() == pytest.approx(0.5 / 4)
    assert mst.asymmetric_loss(extra, target, extra_ink_weight=1.0).item() == pytest.approx(1.0 / 4)
    assert mst.asymmetric_loss(target, target).item() == 0.0
    for weight in (-1.0, 0.0, float("nan"), float("inf")):      # <= 0 would reward ink
        with pytest.raises(ValueError, match="extra_ink_weight"):
            mst.asymmetric_loss(extra, target, extra_ink_weight=weight)
    with pytest.raises(ValueError, match="extra_ink_weight"):
        mst.Settings(extra_ink_weight=-0.5)
    with pytest.raises(ValueError, match="same shape"):
        mst.asymmetric_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))


def test_channel0_loss_reads_channel_0_only():
    states = torch.zeros(2, 12, 4, 4)
    states[:, 1:] = 5.0  # the hidden channels do not count
    loss = mst.channel0_loss()(states, {"target": torch.ones(2, 1, 4, 4)})
    assert loss.item() == pytest.approx(1.0)


# ------------------------------------------------------------------------- measurements

def test_pixel_scores_on_a_hand_made_image():
    target = np.zeros((10, 10))
    target[2, 1:9] = 1.0                         # 8 target pixels
    drawn = np.zeros((10, 10))
    drawn[2, 1:5] = 0.8                          # 4 right
    drawn[7, 1:3] = 0.6                          # 2 wrong
    drawn[2, 5] = 0.4                            # below the threshold: not ink
    scores = mst_metrics.pixel_scores(drawn, target)
    assert scores["precision"] == pytest.approx(4 / 6)
    assert scores["recall"] == pytest.approx(4 / 8)
    assert scores["f1"] == pytest.approx(2 * (4 / 6) * (4 / 8) / (4 / 6 + 4 / 8))
    # one pixel off: with tolerance 1 a shifted line is all right
    shifted = np.roll(target, 1, axis=0)
    assert mst_metrics.pixel_scores(shifted, target)["f1"] == 0.0
    assert mst_metrics.pixel_scores(shifted, target, tolerance=1)["f1"] == 1.0
    # input pixels are left out of both images
    inputs = np.zeros((10, 10))
    inputs[2, 5:9] = 1.0
    scores = mst_metrics.pixel_scores(drawn, target, inputs)
    assert (scores["drawn"], scores["target"]) == (6, 4)
    assert scores["precision"] == pytest.approx(4 / 6) and scores["recall"] == 1.0


def test_empty_images_score_by_convention():
    empty = np.zeros((8, 8))
    with pytest.raises(ValueError, match="nothing to score"):     # no target ink: recall undefined, not 1
        mst_metrics.pixel_scores(empty, empty)
    full = np.ones((8, 8))
    assert mst_metrics.pixel_scores(empty, full)["precision"] == 1.0             # nothing wrong drawn
    assert mst_metrics.pixel_scores(empty, full)["f1"] == 0.0 and mst_metrics.pixel_scores(empty, full)["recall"] == 0.0


def test_label_components_counts_8_connected_blobs():
    mask = np.zeros((7, 7), bool)
    mask[0, 0] = mask[1, 1] = True               # diagonal neighbours: one component
    mask[0, 5:7] = True                          # a second
    mask[4:7, 2] = True
    mask[6, 2:5] = True                          # an L shape: a third
    labels, count = mst_metrics.label_components(mask)
    assert count == 3
    assert labels[0, 0] == labels[1, 1] != labels[0, 5]
    assert labels[4, 2] == labels[6, 4] and (labels > 0).sum() == mask.sum()
    assert mst_metrics.label_components(np.zeros((4, 4), bool))[1] == 0


def test_hallucinated_blobs_are_components_touching_no_input():
    inputs = np.zeros((20, 20))
    inputs[2:4, 2:4] = 1.0
    drawn = np.zeros((20, 20))
    drawn[2:4, 2:10] = 1.0                       # touches the input disc: fine
    drawn[15, 15] = 1.0                          # an isolated blob
    drawn[10:12, 0:3] = 1.0                      # another
    assert mst_metrics.hallucinated_blobs(drawn, inputs) == 2
    assert mst_metrics.hallucinated_blobs(inputs, inputs) == 0


def test_stray_blobs_are_ink_away_from_every_true_point_and_edge():
    target = np.zeros((20, 20), np.float32)
    target[10, 2:18] = 1.0                      # one tree line
    drawn = target.copy()
    drawn[12, 5] = 1.0                          # a speck 2 pixels beside the line: not stray
    drawn[3:5, 3:5] = 1.0                       # a 2x2 blob 5 pixels away: stray
    drawn[17, 17] = 1.0                         # a single pixel 7 pixels away: stray
    assert sorted(mst_metrics.stray_blobs(drawn, target)) == [1, 4]
    assert mst_metrics.stray_blobs(target, target) == []
    assert sorted(mst_metrics.stray_blobs(drawn, target, distance=0)) == [1, 1, 4]   # the speck too, at distance 0
    with pytest.raises(ValueError, match="distance"):
        mst_metrics.stray_blobs(drawn, target, distance=-1)


def test_edges_drawn_needs_most_of_the_segment():
    points = np.array([[10.0, 20.0], [50.0, 20.0], [10.0, 40.0]])
    edges = [(0, 1), (0, 2)]
    target = mst.draw_tree(points, edges, canvas=60)
    assert mst_metrics.edges_drawn(target, points, edges, mst.POINT_RADIUS) == [True, True]
    half = target.copy()
    half[15:25, 30:50] = 0.0                     # erase the second half of edge (0, 1)
    assert mst_metrics.edges_drawn(half, points, edges, mst.POINT_RADIUS) == [False, True]
    discs_only = mst.draw_points(points, canvas=60)
    assert mst_metrics.edges_drawn(discs_only, points, edges, mst.POINT_RADIUS) == [False, False]


def test_score_drawings_of_targets_and_inputs():
    batch = mst.make_tasks(6, np.random.default_rng(2), canvas=48, margin=6, min_points=3, max_points=6)
    perfect = mst_metrics.score_drawings(batch.targets, batch)
    assert perfect["f1"] == 1.0 and perfect["all_edges_drawn"] == 1.0 and perfect["hallucinated_blobs"] == 0
    copy = mst_metrics.score_drawings(batch.inputs, batch)  # copying the input draws no edge at all
    assert copy["recall"] == 0.0 and copy["all_edges_drawn"] == 0.0
    blob = batch.targets.clone()
    blob[:, :, 0:3, 0:3] = 1.0                   # a corner blob in every task (points keep a margin)
    assert mst_metrics.score_drawings(blob, batch)["hallucinated_blobs"] == 6


def test_evaluate_is_deterministic():
    torch.manual_seed(0)
    model = nca.NCA(init_scale=0.05)
    batch = mst.make_tasks(4, np.random.default_rng(0), canvas=32, margin=4, min_points=2, max_points=4)
    first, second = (mst.draw_with(model, batch.inputs, steps=10, seed=3) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, mst.draw_with(model, batch.inputs, steps=10, seed=4))


def test_fast_and_plain_engines_give_the_same_drawings_and_metrics():
    # helpers.fast.infer draws the same masks from the same generator as model.rollout: the states
    # agree up to float rounding (a different order of the sums) and so do the measurements.
    torch.manual_seed(0)
    model = nca.NCA(init_scale=0.05)
    batch = mst.make_tasks(3, np.random.default_rng(1), canvas=32, margin=4, min_points=2, max_points=4)
    plain = mst.draw_with(model, batch.inputs, steps=12, seed=5, chunk=2, engine="plain")
    quick = mst.draw_with(model, batch.inputs, steps=12, seed=5, chunk=2, engine="fast")
    assert torch.allclose(plain, quick, atol=1e-5)
    assert not torch.allclose(plain, mst.draw_with(model, batch.inputs, steps=12, seed=6, engine="fast"), atol=1e-3)
    path = models.shipped_dir() / "mst.pt"
    shipped = models.load(path)
    heldout = models.load_metadata(path)["heldout"]
    settings = {key: heldout[key] for key in ("canvas", "min_points", "max_points", "margin")}
    few = mst.heldout_tasks(4, **settings)
    results = [mst_metrics.summary(mst.evaluate(shipped, few, steps=96, seed=0, engine=engine))
               for engine in ("plain", "fast")]
    assert results[0] == results[1]


def test_unknown_engine_raises():
    with pytest.raises(ValueError, match="engine"):
        mst.draw_with(nca.NCA(), torch.zeros(1, 1, 8, 8), steps=1, engine="turbo")


# ------------------------------------------------------------------------- the shipped model

# chapter 05's model; the same stopped at 4000; the same continued for 3000 more (appendix, section 2)
SHIPPED_MST_MODELS = ["mst.pt", "training_length/mst_4000.pt", "training_length/mst_8000_then_3000.pt"]


@pytest.mark.parametrize("name", SHIPPED_MST_MODELS)
def test_shipped_model_reaches_its_claimed_heldout_f1(name):
    path = models.shipped_dir() / name
    metadata = models.load_metadata(path)
    claimed = metadata["heldout_check"]   # the first tasks of the held-out set: the same code, cheaper
    model = models.load(path)
    assert nca.count_parameters(model) == 588
    settings = {key: claimed[key] for key in ("canvas", "min_points", "max_points", "margin")}
    heldout = mst.heldout_tasks(claimed["count"], claimed["task_seed"], **settings)
    finals = mst.draw_with(model, heldout.inputs, claimed["steps"], seed=claimed["rollout_seed"])
    result = mst_metrics.score_drawings(finals[:, :1], heldout)
    graph = mst_graphs.score_graphs(mst.ink(finals), heldout)
    for key in ("precision", "recall", "f1", "border_ink"):
        assert abs(result[key] - claimed[key]) < 0.02, key
    for key in ("edge_precision", "edge_recall", "exact_mst_rate"):
        assert abs(graph[key] - claimed["graph"][key]) < 0.03, key
    # a model that draws nothing (recall 0) or inks everything (precision near 0) fails here (1-pixel
    # tolerant: this rule's lines are thicker than the target's, which strict precision punishes)
    assert result["precision_1px"] > 0.5 and result["recall_1px"] > 0.3 and graph["edge_recall"] > 0.4
    assert json.loads(json.dumps(mst_metrics.summary(result)))  # the metrics are plain JSON


def test_the_evaluation_length_is_the_fewest_steps_within_90_percent_of_the_best():
    model = models.load(models.shipped_dir() / "mst.pt")
    task = dict(canvas=40, min_points=3, max_points=5, margin=6.0)
    chosen = mst.choose_eval_steps(model, task, choices=(0, 40, 80, 160), count=4)
    curve = chosen["validation_f1_1px"]
    assert list(curve) == ["0", "40", "80", "160"] and curve["0"] == 0.0   # nothing is drawn at step 0
    best = max(curve.values())
    assert best > 0 and curve[str(chosen["steps"])] >= 0.9 * best
    assert all(f1 < 0.9 * best for step, f1 in curve.items() if int(step) < chosen["steps"])
    # the choice never sees the held-out tasks: another seed, other tasks
    assert not np.array_equal(mst.heldout_tasks(4, mst.VALIDATION_SEED, **task).inputs,
                              mst.heldout_tasks(4, **task).inputs)


SHIPPED_MST = sorted(path for path in models.shipped_dir().rglob("*.pt")
                     if "heldout" in models.load_metadata(path))


@pytest.mark.parametrize("path", SHIPPED_MST, ids=[f"{p.parent.name}/{p.stem}" for p in SHIPPED_MST])
def test_every_shipped_mst_model_is_measured_at_the_length_its_own_rule_chose(path):
    """One evaluation rule for every model the chapter compares: its held-out sets are measured at the
    fewest validation steps within 90 % of its best 1-pixel F1 (mst.choose_eval_steps), not at a fixed
    length that flatters the fast drawers."""
    stored = models.load_metadata(path)
    assert "evaluation_length" in stored, f"run: python -m helpers evaluate mst {path} --choose-steps --write"
    curve = stored["evaluation_length"]["validation_f1_1px"]
    best = max(curve.values())
    fewest = min(int(step) for step, f1 in curve.items() if f1 >= 0.9 * best)
    assert stored["evaluation_length"]["steps"] == fewest
    for name in ("heldout", "heldout_check", "heldout_chapter_task"):
        assert stored[name]["steps"] == fewest, (name, stored[name]["steps"], fewest)


def test_the_chapter_model_stores_every_figure_at_its_evaluation_length():
    stored = models.load_metadata(models.shipped_dir() / "mst.pt")
    assert stored["long_rollout"]["steps"] == list(mst.LONG_ROLLOUT_STEPS)
    assert set(stored["surprises"]) == set(mst.surprise_settings(stored["settings"]))
    assert {surprise["steps"] for surprise in stored["surprises"].values()} == {stored["evaluation_length"]["steps"]}


def test_a_training_measures_at_the_length_its_validation_chooses_unless_eval_steps_is_given(tmp_path, monkeypatch):
    """train mst's own held-out figures follow chapter 05's rule by default (eval_steps 0), so a slow
    drawer is not judged at a length it has not drawn by; --eval-steps N still fixes the length."""
    choose = mst.choose_eval_steps
    monkeypatch.setattr(mst, "choose_eval_steps", lambda model, task: choose(model, task, choices=(2, 4), count=3))
    monkeypatch.setattr(mst, "HELDOUT_COUNT", 3)
    tiny = dict(iterations=2, min_steps=4, max_steps=6, pool_size=8, batch_size=2, canvas=40, min_points=2,
                max_points=3, margin=4.0, chapter_count=1)
    _, chosen = mst.train(mst.Settings(**tiny), out=tmp_path / "chosen.pt", progress=False)
    assert chosen["evaluation_length"]["steps"] in (2, 4)
    assert chosen["heldout"]["steps"] == chosen["heldout_chapter_task"]["steps"] == chosen["evaluation_length"]["steps"]
    _, fixed = mst.train(mst.Settings(**tiny, eval_steps=5), out=tmp_path / "fixed.pt", progress=False)
    assert "evaluation_length" not in fixed and fixed["heldout"]["steps"] == 5
    with pytest.raises(ValueError, match="eval_steps >= 0"):
        mst.Settings(eval_steps=-1)


def test_evaluate_full_stores_every_figure_of_the_chapter(tmp_path, monkeypatch):
    out = tmp_path / "tiny.pt"
    cli.main(["train", "mst", "--iterations", "2", "--min-steps", "4", "--max-steps", "6", "--pool-size", "8",
              "--batch-size", "2", "--canvas", "40", "--min-points", "2", "--max-points", "3", "--margin", "4",
              "--eval-steps", "4", "--chapter-count", "1", "--threads", "1", "--out", str(out), "--no-progress"])
    # the chapter's sizes would take minutes: the same functions on fewer tasks and shorter rollouts
    choose, long_rollout, surprises = mst.choose_eval_steps, mst.long_rollout_metadata, mst.surprise_metadata
    monkeypatch.setattr(mst, "choose_eval_steps", lambda model, task: choose(model, task, choices=(2, 4), count=3))
    monkeypatch.setattr(mst, "long_rollout_metadata", lambda model, task: long_rollout(model, task, 3, (0, 3)))
    monkeypatch.setattr(mst, "surprise_metadata", lambda model, task, steps: surprises(model, task, steps, count=3))
    monkeypatch.setattr(mst, "HELDOUT_COUNT", 3)
    before = models.load_metadata(out)
    assert "surprises" not in before and "long_rollout" not in before
    cli.main(["evaluate", "mst", str(out), "--full", "--write"])
    after = models.load_metadata(out)
    assert after["evaluation_length"]["steps"] in (2, 4)
    assert after["heldout"]["steps"] == after["evaluation_length"]["steps"] == after["surprises"]["as trained"]["steps"]
    assert after["heldout"]["count"] == 3
    assert after["long_rollout"]["steps"] == [0, 3] and after["long_rollout"]["count"] == 3
    assert set(after["surprises"]) == {"as trained", "more points", "larger canvas", "larger, as dense"}
    assert after["metrics_command"].endswith("--full --chapter-count 1 --write")
    assert after["settings"] == before["settings"]          # measurements added, nothing else changed


def test_the_shipped_model_is_trained_on_the_chapters_task_in_a_world_with_edges():
    metadata = models.load_metadata(models.shipped_dir() / "mst.pt")
    settings = metadata["settings"]
    assert (settings["canvas"], settings["min_points"], settings["max_points"]) == (mst.CANVAS, mst.MIN_POINTS,
                                                                                     mst.MAX_POINTS)
    assert settings["padding"] == "zeros" == metadata["config"]["padding"]
    assert settings["batch_size"] == 8 and settings["pool_size"] == 256
    assert (settings["min_steps"], settings["max_steps"]) == (64, 128)
    assert settings["iterations"] == 8000 == mst.Settings().iterations     # the chapter's whole budget


def test_the_4000_iteration_model_differs_from_the_shipped_one_only_in_its_budget():
    """Chapter 05's section 3.1 compares them: the same command, stopped at half the iterations."""
    full = models.load_metadata(models.shipped_dir() / "mst.pt")
    early = models.load_metadata(models.shipped_dir() / "training_length" / "mst_4000.pt")
    defaults = mst.Settings().as_dict()      # fields added since the earlier run have their default
    differ = {key for key in full["settings"] if full["settings"][key] != early["settings"].get(key, defaults[key])}
    assert differ == {"iterations"} and early["settings"]["iterations"] == 4000
    for stored in (full, early):    # every figure the chapter reads is stored, by the same command
        assert {"evaluation_length", "heldout", "surprises", "long_rollout"} <= set(stored)
        assert stored["metrics_command"].startswith("python -m helpers evaluate mst ")


def test_the_continued_model_is_the_shipped_one_trained_3000_iterations_more_on_the_same_task():
    """Appendix section 2's third budget: started from mst.pt's weights (recorded in init_from), the same
    task, loss, pool and rollouts; only the iterations and the learning-rate schedule differ."""
    shipped = models.load_metadata(models.shipped_dir() / "mst.pt")
    longer = models.load_metadata(models.shipped_dir() / "training_length" / "mst_8000_then_3000.pt")
    assert longer["settings"]["init"] == "data/models/mst.pt"
    assert longer["init_from"]["settings"] == shipped["settings"]
    assert longer["init_from"]["command"] == shipped["command"]
    assert longer["weights_sha256"] != shipped["weights_sha256"]                        # it did train
    differ = {key for key in longer["settings"] if longer["settings"][key] != shipped["settings"].get(key)}
    assert differ == {"init", "iterations", "learning_rate", "lr_milestones", "eval_steps"}
    assert longer["settings"]["iterations"] == 3000 and longer["settings"]["eval_steps"] == 0   # 0: as chosen
    assert {"evaluation_length", "heldout", "surprises", "long_rollout"} <= set(longer)


def test_checkpoints_write_a_loadable_partial_model(tmp_path):
    model = nca.NCA()
    hook = run.Progress(model, tmp_path / "partial.pt", every=2)
    hook(0, 0.5)
    assert not (tmp_path / "partial.pt").exists()          # only every 2nd iteration
    hook(1, 0.25)
    loaded = models.load(tmp_path / "partial.pt")
    assert torch.equal(loaded.update.weight, model.update.weight)
    assert models.load_metadata(tmp_path / "partial.pt")["iteration"] == 2


def test_the_train_command_records_the_extra_ink_weight(tmp_path):
    out = tmp_path / "symmetric.pt"
    cli.main(["train", "mst", "--iterations", "2", "--min-steps", "4", "--max-steps", "6", "--pool-size", "8",
                "--batch-size", "2", "--canvas", "32", "--min-points", "3", "--max-points", "4", "--margin", "4",
                "--eval-steps", "4", "--chapter-count", "2", "--extra-ink-weight", "1.0", "--threads", "1",
                "--out", str(out), "--no-progress"])
    metadata = models.load_metadata(out)
    assert "--extra-ink-weight 1.0" in metadata["command"] and "weight 1.0" in metadata["loss"]
    assert metadata["settings"]["iterations"] == 2 and metadata["heldout"]["canvas"] == 32
    assert metadata["settings"]["extra_ink_weight"] == 1.0 and metadata["settings"]["masks"] == "exact"
    assert metadata["device"] == "cpu, 1 thread"        # the device and threads really used


COMPARISON_DIR = models.shipped_dir() / "loss_comparison"
NAMES = {1.0: "symmetric", 0.5: "asymmetric", 0.25: "quarter"}   # 0.25: the ALIFE 2021 reference's weighting
PADDING_DIR = models.shipped_dir() / "padding_comparison"


def comparison_seeds() -> list[int]:
    """Seeds for which a model of every weight ships."""
    return [seed for seed in range(10)
            if all((COMPARISON_DIR / f"mst_{name}_seed{seed}.pt").is_file() for name in NAMES.values())]


def test_the_loss_comparison_ships_models_that_differ_only_in_the_extra_ink_weight():
    """Chapter 05 compares them: same command, same seed, same budget, only the weight changes."""
    assert comparison_seeds() == [0, 1, 2]
    for seed in comparison_seeds():
        others = []
        for weight, name in NAMES.items():
            metadata = models.load_metadata(COMPARISON_DIR / f"mst_{name}_seed{seed}.pt")
            assert metadata["loss"].endswith(f"extra ink weight {weight}") and f"--seed {seed} " in metadata["command"]
            assert metadata["settings"]["extra_ink_weight"] == weight
            others.append({key: value for key, value in metadata["settings"].items() if key != "extra_ink_weight"})
        assert all(settings == others[0] for settings in others), "every other setting is the same"


def test_the_padding_comparison_differs_from_the_asymmetric_models_only_in_the_padding():
    for seed in (0, 1, 2):
        wrapped = models.load_metadata(COMPARISON_DIR / f"mst_asymmetric_seed{seed}.pt")
        zeros = models.load_metadata(PADDING_DIR / f"mst_zeros_seed{seed}.pt")
        assert wrapped["config"].get("padding", "circular") == "circular" and zeros["config"]["padding"] == "zeros"
        differ = {key for key in set(wrapped["settings"]) | set(zeros["settings"])
                  if wrapped["settings"].get(key) != zeros["settings"].get(key)}
        assert differ == {"padding"}, differ


def assert_stored_scores(path, keys):
    """Re-measure a comparison model on the held-out tasks its JSON's ``heldout_check`` names."""
    claimed = models.load_metadata(path)["heldout_check"]
    settings = {key: claimed[key] for key in ("canvas", "min_points", "max_points", "margin")}
    heldout = mst.heldout_tasks(claimed["count"], claimed["task_seed"], **settings)
    result = mst.evaluate(models.load(path), heldout, steps=claimed["steps"], seed=claimed["rollout_seed"])
    for key in keys:
        assert abs(result[key] - claimed[key]) < 0.02, key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_padding_comparison_models_reach_their_stored_scores(seed):
    assert_stored_scores(PADDING_DIR / f"mst_zeros_seed{seed}.pt", ("precision", "recall", "f1", "border_ink"))


@pytest.mark.parametrize("seed", comparison_seeds())
@pytest.mark.parametrize("weight", list(NAMES))
def test_the_loss_comparison_models_reach_their_stored_scores(seed, weight):
    """Re-measure each model on the first held-out tasks: the chapter's comparison rests on them."""
    assert_stored_scores(COMPARISON_DIR / f"mst_{NAMES[weight]}_seed{seed}.pt", ("precision", "recall", "f1"))


def test_precision_recall_over_thresholds_ranks_drawings_without_choosing_one_threshold():
    batch = mst.make_tasks(8, np.random.default_rng(4), canvas=48, margin=6, min_points=3, max_points=6)
    perfect = mst_metrics.precision_recall(batch.targets, batch)
    assert perfect["recall"][-1] == 1.0 and perfect["precision"][0] == 1.0
    assert perfect["recall"] == sorted(perfect["recall"]) and perfect["thresholds"][0] == 0.95
    shifted = mst_metrics.precision_recall(torch.roll(batch.targets, 2, dims=-1), batch)
    blank = mst_metrics.precision_recall(torch.zeros_like(batch.targets), batch)
    everywhere = mst_metrics.precision_recall(torch.full_like(batch.targets, 0.6), batch)
    assert blank["average_precision"] == 0.0
    assert perfect["average_precision"] > 0.9 > shifted["average_precision"] > everywhere["average_precision"]
    edge_share = ((batch.targets >= 0.5) & (batch.inputs <= 0)).sum() / (batch.inputs <= 0).sum()
    assert everywhere["average_precision"] == pytest.approx(float(edge_share), rel=1e-6)
    with pytest.raises(ValueError, match="threshold"):
        mst_metrics.precision_recall(batch.targets, batch, thresholds=[0.0, 0.5])


def test_the_task_world_has_edges_by_default_and_a_continued_model_keeps_its_padding(tmp_path):
    settings = mst.Settings()
    assert settings.padding == "zeros" and mst.new_model(settings).rule().padding == "zeros"
    assert mst.new_model(mst.Settings(padding="circular")).rule().padding == "circular"
    with pytest.raises(ValueError, match="padding"):
        mst.Settings(padding="torus")
    saved = models.save(nca.NCA(padding="circular"), tmp_path / "wrapped.pt")
    with pytest.raises(ValueError, match="--padding circular"):
        mst.new_model(mst.Settings(init=str(saved)))
    assert mst.new_model(mst.Settings(init=str(saved), padding="circular")).padding == "circular"


def test_the_wrapped_tree_joins_points_across_the_border_where_that_is_shorter():
    points = np.array([[2.0, 50.0], [97.0, 50.0], [40.0, 50.0]])   # 95 px apart on the plane, 5 px on a torus
    assert mst.pair_length(points[0], points[1], canvas=100) == 95.0
    assert mst.pair_length(points[0], points[1], canvas=100, wrap=True) == 5.0
    assert mst.minimum_spanning_tree(points, canvas=100) == [(0, 2), (1, 2)]
    assert mst.minimum_spanning_tree(points, canvas=100, wrap=True) == [(0, 1), (0, 2)]
    central = np.array([[40.0, 40.0], [60.0, 45.0], [50.0, 60.0]])   # far from every border: the same tree
    assert mst.minimum_spanning_tree(central, wrap=True) == mst.minimum_spanning_tree(central)


def test_border_ink_counts_only_the_band_along_the_edge():
    image = np.zeros((20, 20), np.float32)
    image[5:15, 5:15] = 1.0
    assert mst_metrics.border_ink(image) == 0.0
    image[10, 0:6] = 1.0                                # a ray from the square to the left edge
    band_pixels = 20 * 20 - 14 * 14
    assert mst_metrics.border_ink(image) == pytest.approx(3 / band_pixels)
    assert mst_metrics.border_ink(np.ones((20, 20))) == 1.0
    with pytest.raises(ValueError, match="band"):
        mst_metrics.border_ink(image, band=10)
    batch = mst.make_tasks(6, np.random.default_rng(3), canvas=48, margin=6, min_points=3, max_points=6)
    perfect = mst_metrics.score_drawings(batch.targets, batch)
    assert perfect["border_ink"] == 0.0 and perfect["tasks_with_border_ink"] == 0.0   # targets never ink it
    rays = batch.targets.clone()
    rays[:3, :, 24, :] = 1.0                             # a line across the whole canvas in half the tasks
    scored = mst_metrics.score_drawings(rays, batch)
    assert scored["tasks_with_border_ink"] == 0.5 and scored["border_ink"] > 0


def test_scores_over_rollout_continue_one_rollout_and_match_a_fresh_run():
    model = models.load(models.shipped_dir() / "mst.pt")
    tasks = mst.heldout_tasks(4, canvas=48, min_points=3, max_points=5, margin=6)
    curves = mst.scores_over_rollout(model, tasks, [0, 20, 50])
    assert curves["steps"] == [0, 20, 50] and curves["f1"][0] == 0.0 and curves["inked"][0] > 0
    # the state after 20 + 30 steps of one generator is the state after 50 steps from the same seed
    again = mst.summary(mst.evaluate(model, tasks, steps=50, seed=0))
    assert curves["f1"][-1] == pytest.approx(again["f1"], abs=1e-4)
    assert len(curves["f1_1px"]) == len(curves["exact_mst_rate"]) == 3
    with pytest.raises(ValueError, match="increasing"):
        mst.scores_over_rollout(model, tasks, [50, 20])


SIZE_DIR = models.shipped_dir() / "rule_size_comparison"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_rule_size_comparison_differs_from_the_588_parameter_models_only_in_the_channels(seed):
    """Chapter 05's test of the talk's hypothesis: the same command with --channels 24 (2,328 parameters)."""
    small = models.load_metadata(PADDING_DIR / f"mst_zeros_seed{seed}.pt")
    wide = models.load_metadata(SIZE_DIR / f"mst_wide_seed{seed}.pt")
    assert small["parameters"] == 588 and wide["parameters"] == 2328 and wide["config"]["channels"] == 24
    defaults = mst.Settings().as_dict()
    differ = {key for key in defaults
              if small["settings"].get(key, defaults[key]) != wide["settings"].get(key, defaults[key])}
    assert differ == {"channels"}, differ


@pytest.mark.parametrize("seed", [0, 1])
def test_the_rule_size_comparison_models_reach_their_stored_scores(seed):
    assert_stored_scores(SIZE_DIR / f"mst_wide_seed{seed}.pt", ("precision", "recall", "f1"))


def test_a_wider_rule_is_refused_when_continuing_a_narrower_one(tmp_path):
    out = tmp_path / "small.pt"
    mst.train(mst.Settings(iterations=1, canvas=32, margin=4.0, max_points=4, min_steps=4, max_steps=6, eval_steps=4,
                           chapter_count=1, batch_size=1, pool_size=2), out=out, progress=False)
    with pytest.raises(ValueError, match="pass --channels 12"):
        mst.new_model(mst.Settings(init=str(out), channels=24))


# ------------------------------------------------------------------ chapter 05's claims measure the run

CHAPTER_05 = [env.REPO_ROOT / "notebooks" / name for name in
              ("05_minimum_spanning_tree.ipynb", "05_minimum_spanning_tree_appendix.ipynb")]
#: What a claim cell of chapter 05 calls to measure this run's model (a rollout, a score, a count).
MEASURING_CALLS = ("draw_with(", "score_drawings(", "score_graphs(", "scores_over_rollout(", "judge(", "fast.infer(",
                   "edge_rates(", "minimum_spanning_tree(", "count_parameters(", "heldout_loss(", "graded_ages(",
                   "best_constant(", "exercises.check(")


@pytest.mark.parametrize("path", CHAPTER_05, ids=lambda p: p.name)
def test_no_claim_cell_of_chapter_05_asserts_only_stored_figures(path):
    """A cell that reads a model's JSON (stored figures) and asserts something must also measure: stored
    figures may be printed and compared with, never asserted instead of a measurement."""
    cells = json.loads(path.read_text())["cells"]
    for index, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "assert " not in source:
            continue
        if any(word in source for word in ("metadata[", "load_metadata(", "stored[")):      # it reads stored figures
            assert any(call in source for call in MEASURING_CALLS), f"{path.name} cell {index} measures nothing"
            asserted = [line for line in source.splitlines() if line.strip().startswith("assert ")]
            assert any(not any(word in line for word in ("metadata[", "stored[")) for line in asserted), \
                f"{path.name} cell {index}: every assert reads the JSON"
