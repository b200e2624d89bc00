"""Bad input refused at its root (issue 35): each test fails on the code before its fix.

MST scores of degenerate tasks, step counts and speeds of every rule, downloads that lie or trickle,
emoji files of the wrong kind, and the small wrong-kind exceptions (Triton without a GPU, an empty image)."""
import numpy as np
import pytest
import torch

from helpers import checks, display, fast, growing_nca, manifold_nca, meshes, nca
from helpers import reaction_diffusion as rdm
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


# ---------------------------------------------------------------------------- steps and speeds (item 6)

def rollouts():
    """Every rule class's rollout as ``(name, run(steps), start)``: a tiny rule on a tiny grid."""
    torch.manual_seed(0)
    texture = nca.NCA()
    growing = growing_nca.GrowingNCA()
    manifold = manifold_nca.ManifoldNCA(image_count=2)
    rd = rdm.ReactionDiffusionNCA(channels=4, hidden=8)
    codes = manifold.codes.weight.detach()
    texture_state, growing_state = nca.seed_state(1, 8), growing_nca.seed_state(1, 8)
    rd_state = rdm.random_field(1, 8, 4, torch.Generator().manual_seed(0))
    manifold_state = manifold.rule.seed(codes, 8)
    return [("NCA.rollout", lambda steps: texture.rollout(texture_state, steps), texture_state),
            ("GrowingNCA.rollout", lambda steps: growing.rollout(growing_state, steps), growing_state),
            ("ConditionedRule.rollout", lambda steps: manifold.rule.rollout(manifold_state, steps=steps, codes=codes),
             manifold_state),
            ("ManifoldNCA.grow", lambda steps: manifold.grow(codes, 8, steps), manifold_state),
            ("ReactionDiffusionNCA.rollout", lambda steps: rd.rollout(rd_state, steps), rd_state)]


@pytest.mark.parametrize("bad", [-1, -100, 2.5, 3.0, "3", True, None, float("nan"), torch.tensor(3)])
def test_every_rule_refuses_a_step_count_that_is_not_a_whole_number_from_zero(bad):
    for name, run, _ in rollouts():
        with pytest.raises(ValueError, match="steps must be a"):
            run(bad)
            pytest.fail(f"{name} accepted steps={bad!r}")


def test_every_rule_runs_zero_steps_as_the_identity_and_takes_numpy_integers():
    for name, run, start in rollouts():
        assert torch.equal(run(0), start), name
        if name != "NCA.rollout":                 # chapter 03's rule takes plain ints only (its own check)
            assert run(np.int64(2)).shape == start.shape, name
    assert checks.check_steps(np.int32(5)) == 5 and type(checks.check_steps(np.int32(5))) is int


def diffusion_only_growth(rule, state, speed, steps, laplacian_of=rdm.laplacian) -> float:
    """How much the state's largest value grew in ``steps`` unchecked steps (``step`` is not guarded)."""
    start = state.abs().max()
    with torch.no_grad():
        for _ in range(steps):
            state = rule.step(state, laplacian_of, diffusion_speed=speed)
    return float(state.abs().max() / start)


@pytest.mark.parametrize("space, side", [("grid", 16), ("volume", 8), ("sphere", None)])
def test_the_diffusion_speed_limit_is_where_the_state_stops_staying_bounded(space, side):
    """Measured, not only derived: an untrained rule (it only diffuses) stays bounded just below the limit
    and blows up just above it, on a 2D grid, a 3D volume and a mesh; rollout refuses beyond the limit."""
    rule = rdm.ReactionDiffusionNCA(channels=4, hidden=8, diffusion_min=0.05, diffusion_max=0.25).double()
    generator = torch.Generator().manual_seed(1)
    if space == "sphere":
        laplacian_of = meshes.MeshLaplacian(*meshes.icosphere(2))
        state = rdm.random_field(1, (len(laplacian_of.areas),), 4, generator).double()
    else:
        laplacian_of = rdm.laplacian
        state = rdm.random_field(1, (side,) * (2 if space == "grid" else 3), 4, generator).double()
    limit = checks.diffusion_speed_limit(0.25, laplacian_of, state)
    expected = {"grid": 1.5, "volume": 2 / (0.25 * 184 / 30), "sphere": None}[space]
    assert expected is None or limit == pytest.approx(expected)
    assert diffusion_only_growth(rule, state, 0.995 * limit, 400, laplacian_of) <= 1.0
    assert diffusion_only_growth(rule, state, 1.03 * limit, 400, laplacian_of) > 1e3
    rule.rollout(state, 3, laplacian_of, diffusion_speed=0.99 * limit)
    for beyond in (limit, 1.03 * limit):
        with pytest.raises(ValueError, match=f"not below this rule's stability limit {limit:.4g}"):
            rule.rollout(state, 3, laplacian_of, diffusion_speed=beyond)


def test_the_speed_knob_of_chapter_08_stays_inside_the_limit_and_1_5_or_1_6_is_refused():
    rule = rdm.ReactionDiffusionNCA()                                   # the chapter's diffusion_max 0.25
    state = rdm.random_field(1, 12, 32)
    for speed in (0.5, 0.7, 1.0, 1.4, 1.499):                           # chapter 08's section 9, and nearly the limit
        assert torch.isfinite(rule.rollout(state, 2, diffusion_speed=speed)).all()
    for speed in (1.5, 1.6):
        with pytest.raises(ValueError, match="stability limit 1.5.*Use a speed below 1.5"):
            rule.rollout(state, 2, diffusion_speed=speed)


@pytest.mark.parametrize("name", ["diffusion_speed", "reaction_speed"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, "1", None, True])
def test_speeds_that_are_not_finite_numbers_from_zero_are_refused(name, bad):
    rule = rdm.ReactionDiffusionNCA(channels=4, hidden=8)
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        rule.rollout(rdm.random_field(1, 8, 4), 1, **{name: bad})


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


# Issue 35 item 1: settings that would train the wrong way are refused where every task and the CLI share them


@pytest.mark.parametrize("gamma", [-1.0, 0.0, float("nan"), 1.5])
def test_a_learning_rate_factor_outside_0_1_is_refused(gamma):
    from helpers import train
    with pytest.raises(ValueError, match="lr_gamma"):
        train.TrainConfig(lr_gamma=gamma)


@pytest.mark.parametrize("milestones", [(0,), (200, 100), (100, 100)])
def test_milestones_must_be_increasing_iterations(milestones):
    from helpers import train
    with pytest.raises(ValueError, match="lr_milestones"):
        train.TrainConfig(lr_milestones=milestones)


@pytest.mark.parametrize("task", ["texture", "rd"])
@pytest.mark.parametrize("name, value", [("overflow_weight", -1.0), ("colour_weight", float("nan")),
                                         ("colour_weight", float("inf"))])
def test_a_loss_weight_must_be_finite_and_not_negative(task, name, value):
    from helpers.tasks import rd, texture
    settings_class = {"texture": texture.Settings, "rd": rd.Settings}[task]
    with pytest.raises(ValueError, match=name):
        settings_class(**{name: value})


def test_a_negative_lr_gamma_is_refused_by_the_command_line(tmp_path):
    from helpers import cli
    with pytest.raises((SystemExit, ValueError)) as refused:
        cli.main(["train", "rd", "--lr-gamma", "-1", "--iterations", "1", "--out", str(tmp_path / "m.pt")])
    assert not (tmp_path / "m.pt").exists()
    if isinstance(refused.value, SystemExit):
        assert refused.value.code != 0
