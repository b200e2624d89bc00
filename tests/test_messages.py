"""Bad input meets a message that names it (issue 35's last part): each case is one call with one bad
input through the way a learner meets the code, the chapters' helpers or the real command line. Before
these checks, every case here ended in a raw exception from deep inside torch, NumPy or pathlib (an
IndexError, a RuntimeError about tensor sizes, an AttributeError), or was accepted without a word."""
import functools
import re

import numpy as np
import pytest
import torch

from helpers import checks, data, display, env, exercises, growing_nca, growing_web, models, nca, train
from helpers import reaction_diffusion as rdm
from helpers.manifold_nca import ManifoldNCA
from helpers.tasks import manifold, mst, rd, texture

NAN = float("nan")


def growing_rule() -> growing_nca.GrowingNCA:
    return growing_nca.GrowingNCA(hidden=8)


def rd_rule() -> rdm.ReactionDiffusionNCA:
    return rdm.ReactionDiffusionNCA(channels=4, hidden=8)


def manifold_model() -> ManifoldNCA:
    return ManifoldNCA("hyper", image_count=3, hidden=8)


def tiny_tasks() -> mst.TaskBatch:
    return mst.make_tasks(2, np.random.default_rng(0), canvas=32, min_points=2, max_points=3, margin=4.0)


def write_video(**options):
    with display.VideoWriter(format="gif", **options) as video:
        video.add(torch.zeros(3, 8, 8))


# (what is called, the call, the exception type, a fragment its message must contain)
CASES = [
    # states and grids: one check of "a state [batch, channels, height, width]" and of a grid's size
    ("GrowingNCA.rollout of a 2-D tensor", lambda: growing_rule().rollout(torch.zeros(16, 16), 2),
     ValueError, r"the state must be shaped \[batch, 16, height, width\], got \(16, 16\)"),
    ("GrowingNCA.rollout of a list", lambda: growing_rule().rollout([[0.0]], 2), ValueError, "got a list"),
    ("growing seed_state of batch 0", lambda: growing_nca.seed_state(0, 8), ValueError,
     "batch must be a whole number >= 1, got 0"),
    ("growing seed_state of batch -1", lambda: growing_nca.seed_state(-1, 8), ValueError, "got -1"),
    ("growing seed_state of size 0", lambda: growing_nca.seed_state(1, 0), ValueError, "each side of the grid"),
    ("growing seed_state of size '8'", lambda: growing_nca.seed_state(1, "8"), ValueError,
     "size must be a grid's side"),
    ("growing seed_state of size (8,)", lambda: growing_nca.seed_state(1, (8,)), ValueError, r"got \(8,\)"),
    ("nca seed_state of size -5", lambda: nca.seed_state(1, -5), ValueError, "got -5"),
    ("nca to_rgb of a grey image", lambda: nca.to_rgb(torch.zeros(8, 8)), ValueError, "the state must be shaped"),
    ("growing to_rgb of 3 channels", lambda: growing_nca.to_rgb(torch.zeros(1, 3, 8, 8)), ValueError,
     "the state must be shaped"),
    ("ManifoldNCA.grow on a grid of 0", lambda: manifold_model().grow(torch.zeros(1, 12), 0, 2), ValueError,
     "each side of the grid"),
    ("texture.grow of batch 0", lambda: texture.grow(nca.NCA(), 16, 2, batch=0), ValueError, "batch must be"),
    # reaction-diffusion
    ("RD rollout of a string", lambda: rd_rule().rollout("state", 2), ValueError, r"\[batch, 4, \*space\]"),
    ("RD rollout of an int tensor", lambda: rd_rule().rollout(torch.zeros(1, 4, 8, 8, dtype=torch.long), 2),
     ValueError, "floating point"),
    ("rd.grow on a grid of 0", lambda: rd.grow(rd_rule(), 0, 2, 1), ValueError, "space.s size must be"),
    ("rd.grow of batch -2", lambda: rd.grow(rd_rule(), 16, 2, -2), ValueError, "batch must be"),
    ("random_field of 0 channels", lambda: rdm.random_field(1, 16, 0), ValueError, "channels must be"),
    ("laplacian of a 1-D tensor", lambda: rdm.laplacian(torch.zeros(5)), ValueError, "a grid state is"),
    ("gray_scott_seed of size -16", lambda: rdm.gray_scott_seed(1, -16), ValueError, "size must be"),
    ("gray_scott_step of 3 channels", lambda: rdm.gray_scott_step(torch.zeros(1, 3, 8, 8), 0.04, 0.06),
     ValueError, r"\[batch, 2, \*space\]"),
    # chapter 06's page
    ("erase with a NaN x", lambda: growing_web.erase(growing_nca.seed_state(1, 16), NAN, 0.5, 0.1), ValueError,
     "x must be a finite number"),
    ("erase with a negative radius", lambda: growing_web.erase(growing_nca.seed_state(1, 16), 0.5, 0.5, -1),
     ValueError, "radius must be >= 0"),
    ("erase of an image", lambda: growing_web.erase(torch.zeros(3, 16, 16), 0.5, 0.5, 0.1), ValueError,
     "the state must be a tensor"),
    ("reference_rollout of -1 steps",
     lambda: growing_web.reference_rollout(growing_rule(), growing_nca.seed_state(1, 8), -1), ValueError,
     "steps must be a whole number >= 0"),
    # chapter 07
    ("interpolate with count 0", lambda: manifold.interpolate(torch.zeros(12), torch.ones(12), 0), ValueError,
     "count must be a whole number >= 2"),
    ("interpolate with count 1", lambda: manifold.interpolate(torch.zeros(12), torch.ones(12), 1), ValueError,
     "count must be"),
    ("interpolate codes of two sizes", lambda: manifold.interpolate(torch.zeros(12), torch.ones(5), 3), ValueError,
     "two codes of the same size"),
    ("grow from NaN codes",
     lambda: manifold.grow(manifold_model(), torch.full((1, 12), NAN), manifold.Settings(), steps=2), ValueError,
     "finite floating point"),
    ("encode no emoji", lambda: manifold.encode(manifold_model(), [], manifold.Settings()), ValueError,
     "non-empty list of emoji names"),
    ("search_codes for -1 iterations",
     lambda: manifold.search_codes(manifold_model(), ["lizard"], manifold.Settings(), torch.zeros(1, 12), -1),
     ValueError, "iterations must be"),
    ("search_codes at a NaN learning rate",
     lambda: manifold.search_codes(manifold_model(), ["lizard"], manifold.Settings(), torch.zeros(1, 12), 1, NAN),
     ValueError, "learning_rate must be a positive finite number"),
    ("shuffled of one code", lambda: manifold.shuffled(torch.zeros(12)), ValueError, r"\[N, code_size\]"),
    ("an --init the codes stage ignores", lambda: manifold.Settings(init="some.pt"), ValueError, "would be ignored"),
    # chapter 05
    ("make_tasks of 0 tasks", lambda: mst.make_tasks(0, np.random.default_rng(0)), ValueError, "count must be"),
    ("make_tasks with a seed for rng", lambda: mst.make_tasks(2, 0), ValueError, "NumPy generator"),
    ("make_tasks with a negative margin", lambda: mst.make_tasks(2, np.random.default_rng(0), margin=-1),
     ValueError, "margin"),
    ("draw_with in chunks of 0", lambda: mst.draw_with(nca.NCA(), tiny_tasks().inputs, 2, chunk=0), ValueError,
     "chunk must be"),
    ("draw_with of a list", lambda: mst.draw_with(nca.NCA(), [[0.0]], 2), ValueError, r"inputs must be a tensor"),
    ("draw_with of nothing", lambda: mst.draw_with(nca.NCA(), None, 2), ValueError, "needs the tasks' inputs"),
    ("score_drawings of a list", lambda: mst.score_drawings([1, 2], tiny_tasks()), ValueError,
     "drawings must be a tensor"),
    ("graph_scores of one state", lambda: mst.graph_scores(torch.zeros(12, 32, 32), tiny_tasks()), ValueError,
     r"states must be a tensor \[N, channels, H, W\]"),
    ("score_drawings of states", lambda: mst.score_drawings(torch.zeros(2, 12, 32, 32), tiny_tasks()), ValueError,
     r"mst.ink\(states\)"),
    ("mst.Settings with 0 channels", lambda: mst.Settings(channels=0), ValueError, "channels must be positive"),
    ("mst.Settings with 1 channel", lambda: mst.Settings(channels=1), ValueError, "multiple of 3"),
    # every task's settings: one check of the field types
    ("a str where an int belongs", lambda: texture.Settings(size="48"), ValueError,
     r"size must be a whole number, got '48' \(str\); its default is 48"),
    ("a str where a float belongs", lambda: rd.Settings(learning_rate="0.1"), ValueError,
     "learning_rate must be a finite number"),
    ("a float where an int belongs", lambda: manifold.Settings(min_steps=2.5), ValueError, "min_steps must be a whole"),
    ("a str for the iterations of mst", lambda: mst.Settings(iterations="10"), ValueError,
     "iterations must be a whole"),
    ("a str where a bool belongs", lambda: manifold.Settings(mirror="yes"), ValueError, "mirror must be True or False"),
    ("an infinite margin", lambda: mst.Settings(margin=float("inf")), ValueError, "margin must be a finite number"),
    ("a target_size load_image cannot make", lambda: texture.Settings(target_size=3), ValueError,
     "target_size .* must be 0 .* or at least 8"),
    # pictures, videos, files
    ("show with zoom 0", lambda: display.show(torch.zeros(3, 8, 8), zoom_factor=0), ValueError,
     "zoom factor must be a positive integer, got 0"),
    ("tile in 0 columns", lambda: display.tile(torch.zeros(4, 3, 8, 8), columns=0), ValueError, "columns must be"),
    ("tile in 2.5 columns", lambda: display.tile(torch.zeros(4, 3, 8, 8), columns=2.5), ValueError,
     "columns must be"),
    ("a video at '30' fps", lambda: write_video(fps="30"), ValueError, "fps .* must be a finite number > 0"),
    ("a video zoomed 0 times", lambda: write_video(zoom_factor=0), ValueError, "zoom_factor must be"),
    ("show_weights of a word", lambda: display.show_weights("w"), ValueError, "2-D matrix of numbers"),
    ("load_emoji of a number", lambda: data.load_emoji(42), ValueError, "an emoji is a shipped emoji's name"),
    ("load_image of None", lambda: data.load_image(None), ValueError, "path must be an image file's path"),
    ("a background out of range", lambda: data.load_texture("stripes", background=2.0), ValueError,
     "background must be"),
    ("a background named", lambda: data.load_texture("stripes", background="white"), ValueError, "background must be"),
    ("an unknown texture is a ValueError too", lambda: data.load_texture("no_such_texture"), ValueError,
     "no texture named 'no_such_texture'"),
    ("a device torch does not know", lambda: data.load_emoji("lizard", device="quantum"), ValueError,
     "use 'cpu', 'cuda' or 'mps'"),
    ("models.load of a number", lambda: models.load(3), TypeError, "path must be a model file's path"),
    ("models.save of a name", lambda: models.save("model", "never_written.pt"), TypeError, "takes the model"),
    ("a check of something that is not a function", lambda: exercises.check("06.alive_mask", "f"), TypeError,
     "takes your function itself"),
]


@pytest.mark.parametrize("call, kind, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_a_message_that_names_it(call, kind, fragment):
    with pytest.raises(kind, match=fragment):
        call()


def test_valid_input_is_still_accepted():
    """The checks refuse only what was wrong: NumPy integers, tuples of sides, an (r, g, b) background,
    a zoom of 1, a settings object with the defaults, the old KeyError of an unknown texture."""
    assert growing_nca.seed_state(np.int64(2), (8, 12)).shape == (2, 16, 8, 12)
    assert nca.seed_state(1, np.int32(8)).shape == (1, 12, 8, 8)
    assert rdm.random_field(1, (3, 4, 5), 4).shape == (1, 4, 3, 4, 5)
    assert data.load_texture("stripes", size=16, background=(0.5, 0.5, 0.5)).shape == (3, 16, 16)
    assert display.tile(torch.zeros(4, 3, 8, 8), columns=np.int64(2)).shape == (2 * 8 + 2, 2 * 8 + 2, 3)
    assert display.zoom(torch.zeros(3, 4, 4), 1).shape == (4, 4, 3)
    assert checks.count_flag(1)("3") == 3
    assert env.checked_device(None) is None and env.checked_device("cpu") == torch.device("cpu")
    with pytest.raises(KeyError):
        data.load_texture("no_such_texture")
    settings = mst.Settings(iterations=np.int64(16))
    assert settings.iterations == 16 and type(settings.iterations) is int
    assert train.TrainConfig(learning_rate=1).learning_rate == 1


# ---------------------------------------------------------------------------- the real command line

@pytest.mark.parametrize("argv, fragment", [
    (["train", "growing", "--hidden", "0"], "hidden must be a whole number >= 1"),
    (["train", "growing", "--fire-rate", "0"], "fire_rate"),
    (["train", "mst", "--channels", "1"], "multiple of 3"),
    (["train", "mst", "--margin", "nan"], "margin must be a finite number"),
    (["train", "mst", "--init", "/nonexistent_35/model.pt"], "no model file /nonexistent_35/model.pt"),
    (["train", "texture", "--target-size", "3"], "target_size"),
    (["train", "texture", "--device", "quantum"], "use 'cpu', 'cuda' or 'mps'"),
    (["train", "texture", "--checkpoint", "ck.txt"], "--checkpoint must name the weights file"),
    (["train", "manifold", "--init", "/nonexistent_35/m.pt"], "would be ignored"),
    (["evaluate", "mst", "SHIPPED/mst.pt", "--chapter-count", "0"], "must be a whole number >= 1, got '0'"),
    (["evaluate", "growing", "SHIPPED/growing_lizard_growing.pt", "--count", "0"], "--count: must be a whole number"),
])
def test_the_command_line_refuses_bad_flags_before_training_with_a_usage_error(argv, fragment, tmp_path, capsys):
    from helpers import cli
    if argv[0] == "train":
        argv = [*argv, "--iterations", "1", "--out", str(tmp_path / "m.pt")]
    argv = [word.replace("SHIPPED", str(models.shipped_dir())) for word in argv]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code not in (0, None)
    error = capsys.readouterr().err
    assert "error:" in error and fragment in error and "Traceback" not in error
    assert not (tmp_path / "m.pt").exists()


def growing_measurement_calls():
    """Chapter 06's measurements, each with one bad argument (the rest as the chapter passes them)."""
    from helpers.growing_nca import GrowingNCA
    from helpers.tasks import growing
    rule, settings = GrowingNCA(hidden=8), growing.Settings(target_size=8, margin=2, hidden=8)
    regrow = functools.partial(growing.regeneration, rule, settings, "circle", count=2)
    states = growing.grow(rule, settings, 2, batch=2)
    goal = growing.target(settings)
    return [
        ("regeneration every 0", lambda: regrow(every=0), "every must"),
        ("regeneration after -5", lambda: regrow(after=-5), "after must"),
        ("regeneration factor nan", lambda: regrow(factor=float("nan")),
         "factor must be a finite number >= 1"),
        ("regeneration factor 0.5", lambda: regrow(factor=0.5),
         "factor must"),
        ("stability every 0", lambda: growing.stability(rule, settings, steps=10, every=0), "every must"),
        ("stability to 20 steps every 7", lambda: growing.stability(rule, settings, steps=20, every=7),
         "not a multiple of every=7"),
        ("regeneration after 3 every 2", lambda: regrow(after=3, every=2), "not a multiple of every=2"),
        ("rotation of 0 rollouts", lambda: growing.rotation(rule, settings, count=0, steps=2), "count must"),
        ("stability negative steps", lambda: growing.stability(rule, settings, steps=-10), "steps must"),
        ("persistence at 2.5 steps", lambda: growing.persistence(rule, settings, checkpoints=(2.5,)),
         "checkpoints must"),
        ("damage masks for 0 states", lambda: growing.damage_masks("circle", 0, 20), "count must"),
        ("damage masks on a 0-cell grid", lambda: growing.damage_masks("circle", 2, 0), "size must"),
        ("judged on 3 channels", lambda: growing.judge_pattern(states[:, :3], goal), "at least 4"),
        ("judged against another grid's target", lambda: growing.judge_pattern(states, goal[..., :-1, :-1]),
         "the states' grid"),
        ("grown without settings", lambda: growing.grow(rule, None, 4), "settings must be growing.Settings"),
        ("grown by a texture rule", lambda: growing.grow(nca.NCA(), settings, 4), "model must be chapter 06's"),
        ("rotation by a string", lambda: growing.rotation(rule, settings, degrees=("90",), count=1, steps=2),
         "degrees must be finite angles"),
        ("settings with fire rate 0", lambda: growing.Settings(fire_rate=0.0), "fire_rate"),
    ]


@pytest.mark.parametrize("name, call, fragment", growing_measurement_calls(),
                         ids=[case[0] for case in growing_measurement_calls()])
def test_chapter_06s_measurements_refuse_bad_arguments_by_name(name, call, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call()


def test_a_model_pair_is_saved_under_a_pt_name_only(tmp_path):
    """save writes NAME.pt and NAME.json: under "model.json" both halves would share one file, and the
    weights would silently replace the JSON."""
    for name in ("model.json", "model", "model.pth"):
        with pytest.raises(ValueError, match="name the .pt file"):
            models.save(nca.NCA(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    assert models.save(nca.NCA(), tmp_path / "model.pt").with_suffix(".json").exists()
