"""Bad input refused at its root (issue 35): each test fails on the code before its fix.

MST scores of degenerate tasks, step counts and speeds of every rule, downloads that lie or trickle,
emoji files of the wrong kind, and the small wrong-kind exceptions (Triton without a GPU, an empty image)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import checks, display, fast, growing_nca, manifold_nca, meshes, models, nca
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


# ---------------------------------------------------------------------------- issue 35, round three:
# no training without iterations, rule options, saves stopped between their two files, Ctrl-C then
# --resume, NumPy step counts, models and training states of the wrong kind, the mask mode's new name

MST_TINY = ["--min-steps", "2", "--max-steps", "4", "--pool-size", "4", "--batch-size", "2", "--canvas", "24",
            "--min-points", "2", "--max-points", "3", "--margin", "4", "--eval-steps", "4", "--chapter-count", "1",
            "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("iterations", [0, -1])
def test_no_iterations_is_refused_by_every_task_s_settings_and_command_line(iterations, tmp_path, capsys):
    from helpers import cli
    from helpers.tasks import TASKS
    for name, task in TASKS.items():
        with pytest.raises(ValueError, match="iterations must be a whole number >= 1"):
            task.Settings(iterations=iterations)
        out = tmp_path / f"{name}.pt"
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", name, "--iterations", str(iterations), "--out", str(out)])
        assert stop.value.code == 2 and "iterations must be a whole number >= 1" in capsys.readouterr().err, name
        assert not out.exists() and not out.with_suffix(".json").exists(), name


def test_the_real_command_line_refuses_zero_iterations_and_saves_nothing(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "untrained.pt"
    done = subprocess.run([sys.executable, "-m", "helpers", "train", "growing", "--iterations", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "iterations must be a whole number >= 1" in done.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_manifold_model_without_codes_is_refused_before_training(tmp_path, capsys):
    from helpers import cli
    from helpers.tasks import manifold
    for size in (0, -2):
        with pytest.raises(ValueError, match="code_size must be a whole number >= 1"):
            manifold.Settings(code_size=size)
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "manifold", "--code-size", "0", "--iterations", "1", "--out", str(tmp_path / "m.pt")])
    assert stop.value.code == 2 and "code_size must be a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stamp writes the code into the seed cell's 12 hidden channels"):
        manifold.Settings(method="stamp", code_size=13)


@pytest.mark.parametrize("options, message", [
    (dict(fire_rate=0.0), "fire_rate .* must lie in \\(0, 1\\]"), (dict(fire_rate=float("nan")), "fire_rate"),
    (dict(fire_rate=1.5), "fire_rate"), (dict(fire_rate="0.5"), "fire_rate"),
    (dict(channels=3), "channels must be a whole number >= 4"), (dict(channels=8.0), "channels"),
    (dict(hidden=0), "hidden must be a whole number >= 1"), (dict(code_size=0), "code_size .* >= 1"),
    (dict(hyper_hidden=0), "hyper_hidden"), (dict(alive_threshold=float("nan")), "alive_threshold")])
def test_the_conditioned_rule_refuses_what_chapter_06_s_rule_refuses(options, message):
    with pytest.raises(ValueError, match=message):
        manifold_nca.ConditionedRule("hyper", **options)
    if "code_size" not in options and "hyper_hidden" not in options:
        with pytest.raises(ValueError, match=message):
            growing_nca.GrowingNCA(**options)


def test_chapter_03_s_rule_and_the_fast_engine_take_numpy_step_counts():
    torch.manual_seed(0)
    model, state = nca.NCA(), torch.randn(1, 12, 8, 8) * 0.1
    expected = model.rollout(state, 5, generator=torch.Generator().manual_seed(1))
    for steps in (np.int64(5), np.int32(5), np.uint8(5)):
        assert torch.equal(model.rollout(state, steps, generator=torch.Generator().manual_seed(1)), expected)
        assert torch.equal(fast.rollout(model, state, steps, generator=torch.Generator().manual_seed(1),
                                        backend="torch"), expected)
    for bad in (5.0, np.float64(5), True, np.bool_(True)):
        with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
            model.rollout(state, bad)
        with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
            fast.rollout(model, state, bad)


# saves stopped between their two files, and Ctrl-C then --resume (item 9)

def random_rule(seed: int) -> nca.NCA:
    torch.manual_seed(seed)
    model = nca.NCA()
    with torch.no_grad():
        model.update.weight.normal_()
    return model


def pair_with_edited_json(tmp_path, edit) -> Path:
    """A saved pair m.pt/m.json whose JSON ``edit(info, path)`` changed in place afterwards."""
    path = models.save(random_rule(0), tmp_path / "m.pt")
    info = models.load_metadata(path)
    edit(info, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path


KILLED_BETWEEN_THE_RENAMES = """
import os, sys, torch
from helpers import models, nca
torch.manual_seed(1)
model = nca.NCA()
with torch.no_grad():
    model.update.weight.normal_()
real = os.replace
def die_after_the_first(source, target):
    real(source, target)
    os._exit(9)                                   # killed: no finally, no clean-up
os.replace = die_after_the_first
models.save(model, sys.argv[1])
"""


def test_a_save_killed_between_its_two_renames_leaves_a_pair_that_loads_as_the_new_model(tmp_path):
    import subprocess
    import sys
    path = models.save(random_rule(0), tmp_path / "m.pt")
    died = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_THE_RENAMES, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    assert [p.name for p in tmp_path.glob(".m.pt.*.tmp")], "the new weights wait beside the pair"
    with pytest.warns(UserWarning, match="finished a save that was stopped between its two files"):
        loaded = models.load(path)
    assert torch.equal(loaded.update.weight, random_rule(1).update.weight)      # the new model, whole
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert torch.equal(models.load(path).update.weight, random_rule(1).update.weight)


def test_ctrl_c_between_the_two_renames_keeps_the_new_weights(tmp_path, monkeypatch):
    path = models.save(random_rule(0), tmp_path / "m.pt")
    real, calls = models.os.replace, []

    def interrupted_after_the_first(source, target):
        real(source, target)
        calls.append(target)
        raise KeyboardInterrupt

    monkeypatch.setattr(models.os, "replace", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        models.save(random_rule(1), path)
    monkeypatch.undo()
    assert len(calls) == 1
    with pytest.warns(UserWarning, match="finished a save"):
        assert torch.equal(models.load(path).update.weight, random_rule(1).update.weight)


def test_ctrl_c_then_the_same_command_with_resume_finishes_the_run(tmp_path, monkeypatch, capsys):
    from helpers import cli
    from helpers.tasks import run
    out, checkpoint = tmp_path / "model.pt", tmp_path / "ckpt.pt"
    words = ["train", "mst", *MST_TINY, "--iterations", "120", "--checkpoint", str(checkpoint), "--out", str(out)]
    count = run.Progress.__call__

    def ctrl_c_at_110(self, iteration, loss):
        count(self, iteration, loss)
        if self.done == 110:
            raise KeyboardInterrupt

    monkeypatch.setattr(run.Progress, "__call__", ctrl_c_at_110)
    with pytest.raises(SystemExit) as stop:
        cli.main(words)
    assert stop.value.code == 130 and models.load_metadata(out)["partial"] is True
    monkeypatch.undo()
    cli.main([*words, "--resume"])                       # README: stopped? the same command + --resume
    info = models.load_metadata(out)
    assert "partial" not in info and info["resumed_at_iteration"] == 100 and info["settings"]["iterations"] == 120
    models.load(out)
    with pytest.raises(SystemExit) as stop:              # a finished model is never replaced by --resume
        cli.main([*words, "--resume"])
    assert stop.value.code == 2 and "replaces only the partial model" in capsys.readouterr().err
    assert models.load_metadata(out) == info


def test_resume_does_not_replace_a_partial_model_of_other_settings(tmp_path):
    from helpers.tasks import mst, run
    out = tmp_path / "model.pt"
    models.save(random_rule(0), out, {"partial": True, "settings": mst.Settings(iterations=7).as_dict()})
    assert run.check_out_path(out, resuming=mst.Settings(iterations=7)) == out
    with pytest.raises(FileExistsError, match="replaces only the partial model"):
        run.check_out_path(out, resuming=mst.Settings(iterations=8))
    with pytest.raises(FileExistsError, match="already exists"):
        run.check_out_path(out)


# models and training states of the wrong kind (item 8)

def test_evaluating_a_model_with_another_task_names_its_task(capsys):
    from helpers import cli
    texture_model = models.shipped_dir() / "texture_stripes.pt"
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "growing", str(texture_model)])
    error = capsys.readouterr().err
    assert stop.value.code == 2
    assert "this is a texture model" in error and f"python -m helpers evaluate texture {texture_model}" in error


def test_a_model_whose_json_records_no_task_is_not_evaluated(tmp_path, capsys):
    from helpers import cli
    path = models.save(random_rule(0), tmp_path / "bare.pt")
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "texture", str(path)])
    assert stop.value.code == 2 and "records no task" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "a list"])
def test_resuming_from_a_broken_training_state_is_a_clear_error(tmp_path, capsys, damage):
    from helpers import cli
    from helpers.tasks import run
    checkpoint = tmp_path / "ckpt.pt"
    words = ["train", "mst", *MST_TINY, "--iterations", "100", "--checkpoint", str(checkpoint)]
    cli.main([*words, "--out", str(tmp_path / "model.pt")])
    state = run.state_path(checkpoint)
    whole = state.read_bytes()
    if damage == "a list":
        torch.save([1, 2], state)
    else:
        broken = {"empty": b"", "truncated": whole[:len(whole) // 2], "garbage": b"\x00not a state" * 9}
        state.write_bytes(broken[damage])
    with pytest.raises(SystemExit) as stop:
        cli.main([*words, "--out", str(tmp_path / "again.pt"), "--resume"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and str(state) in error and "without --resume" in error
    assert not (tmp_path / "again.pt").exists()


# the fast engine's mask modes named apart from its engines (issue 28)

def test_bit_masks_are_named_bits_and_old_recorded_commands_still_read(tmp_path):
    from helpers.tasks import mst, run
    assert fast.MASK_MODES == ("exact", "bits")
    assert mst.Settings(engine="fast", masks="bits").masks == "bits"
    with pytest.raises(ValueError, match="now called masks='bits'"):
        fast.make_rollout(masks="fast")
    with pytest.raises(ValueError, match="masks must be one of"):
        mst.Settings(engine="fast", masks="fast")
    old = ["train", "mst", "--engine", "fast", "--masks", "fast", "--iterations", "3"]
    assert run.current_command("mst", old) == [*old[:5], "bits", *old[6:]]
    stored = {**mst.Settings(engine="fast", masks="bits").as_dict(), "masks": "fast"}
    assert run.stored_settings("mst", mst.Settings, stored).masks == "bits"


# the hash covers the weights and the config; a JSON without one is refused unless it predates hashes (item 2)

@pytest.mark.parametrize("model, key, value", [
    (nca.NCA(), "update_rate", 0.9), (nca.NCA(), "update_per", "cell"), (nca.NCA(), "padding", "zeros"),
    (growing_nca.GrowingNCA(hidden=8), "alive_threshold", 0.3), (growing_nca.GrowingNCA(hidden=8), "fire_rate", 1.0),
    (manifold_nca.ManifoldNCA(image_count=2, hidden=8), "fire_rate", 0.9)])
def test_a_config_edited_after_saving_is_refused(tmp_path, model, key, value):
    import json
    path = models.save(model, tmp_path / "m.pt")
    info = models.load_metadata(path)
    assert info["config"][key] != value
    info["config"][key] = value
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not match m.json.*config was edited after saving"):
        models.load(path)


@pytest.mark.parametrize("missing", ["absent", "null"])
def test_a_json_of_today_s_format_without_its_hash_is_refused(tmp_path, missing):
    def without_hash(info, path):
        if missing == "absent":
            del info["weights_sha256"]
        else:
            info["weights_sha256"] = None
    path = pair_with_edited_json(tmp_path, without_hash)
    with pytest.raises(ValueError, match="m.json records no weights_sha256.*the pair is refused"):
        models.load(path)


def test_an_older_pair_loads_with_a_warning_and_upgrade_format_protects_its_config(tmp_path):
    import warnings

    def format_1(info, path):
        del info["format_version"]
        info["weights_sha256"] = models.sha256(path.read_bytes())      # format 1: the weights' hash alone
    path = pair_with_edited_json(tmp_path, format_1)
    with pytest.warns(UserWarning, match="m.json is in format 1.*upgrade_format"):
        models.load(path)
    before = models.load_metadata(path)
    models.upgrade_format(path)
    after = models.load_metadata(path)
    assert after["format_version"] == models.FORMAT_VERSION
    assert {key: value for key, value in after.items() if key not in ("format_version", "weights_sha256")} == \
        {key: value for key, value in before.items() if key != "weights_sha256"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(models.load(path).update.weight, random_rule(0).update.weight)
    after["config"]["update_rate"] = 0.9
    path.with_suffix(".json").write_text(json.dumps(after))
    with pytest.raises(ValueError, match="config was edited"):
        models.load(path)


def test_a_format_from_the_future_is_refused(tmp_path):
    path = pair_with_edited_json(tmp_path, lambda info, path: info.update(format_version=3))
    with pytest.raises(ValueError, match="format_version 3.*update the course's helpers"):
        models.load(path)


def test_every_shipped_model_is_in_today_s_format_and_loads_without_a_warning():
    import warnings
    paths = sorted(models.shipped_dir().rglob("*.pt"))
    assert len(paths) >= 40
    for path in paths:
        assert models.load_metadata(path).get("format_version") == models.FORMAT_VERSION, \
            f"{path} is in an older format: if you trust the pair, run helpers.models.upgrade_format on it"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            models.load(path)
