"""The shipped manifold models of chapter 07 (data/models/manifold_*.pt), re-measured.

Every figure is measured again here on all 48 training and 16 held-out emoji (a rollout of 32 steps on
22 x 22 grids: about a second each) and compared with the model's JSON. A model that ignored its
code would fail the shuffled-code checks; one that drew nothing, or only the average emoji, would
fail the mean-image checks; an encoder that gave every image the same code would fail both."""
import dataclasses

import pytest
import torch

from helpers import models
from helpers.manifold_nca import METHODS
from helpers.tasks import growing, manifold, run

MARGIN = 0.1                 # re-measured mean errors within 10 % of the JSON's
CODE_MATTERS = 1.5           # another image's code: at least this factor worse (training emoji, table codes)
HELD_CODE_MATTERS = 1.2      # ... and for held-out emoji with the encoder's codes
# own codes: below this share of the mean image's error (measured: hyper 0.07, broadcast 0.25, stamp 0.59;
# the stamp is the chapter's named failure at this budget, and still must beat the mean image)
BELOW_FLOOR = {"hyper": 0.15, "broadcast": 0.4, "stamp": 0.75}
# issue 33's target: an encoder's mean error on the held-out emoji at least this share below retrieval's
# (each held-out emoji grown from the code of the training emoji nearest to it in pixels, same rule)
BEATS_RETRIEVAL = 0.25


def shipped(name):
    path = models.shipped_dir() / f"{name}.pt"
    info = models.load_metadata(path)
    settings = run.stored_settings("manifold", manifold.Settings, info["settings"])
    return models.load(path).eval(), settings, info


def best_method():
    """The method whose shipped model reconstructs the training emoji best (as the chapter picks it)."""
    return min(METHODS, key=lambda method: shipped(f"manifold_{method}")[2]["eval"]["table_codes"]["train"]["mean_mse"])


@pytest.mark.parametrize("method", METHODS)
def test_each_method_ships_on_the_cpu_recipe_with_the_recorded_split(method):
    model, settings, info = shipped(f"manifold_{method}")
    assert settings == manifold.Settings(method=method), "the shipped models differ only in their method"
    assert not info.get("partial") and info["architecture"] == "ManifoldNCA"
    train, held = manifold.split(settings)
    assert info["eval"]["split"] == {"train": train, "held_out": held}
    assert model.codes.num_embeddings == len(train)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_grows_its_training_emoji_from_their_codes_and_the_codes_matter(method):
    model, settings, info = shipped(f"manifold_{method}")
    train, _ = manifold.split(settings)
    codes = manifold.table_codes(model)
    own = manifold.errors(model, codes, train, settings)
    wrong = manifold.errors(model, manifold.shuffled(codes), train, settings)
    floor = manifold.mean_image_errors(train, train, settings)
    recorded = info["eval"]["table_codes"]
    assert own.mean().item() == pytest.approx(recorded["train"]["mean_mse"], rel=MARGIN)
    assert wrong.mean().item() == pytest.approx(recorded["train_shuffled"]["mean_mse"], rel=MARGIN)
    assert own.mean() < BELOW_FLOOR[method] * floor.mean()
    assert wrong.mean() > CODE_MATTERS * own.mean()
    assert (own < floor).float().mean() > 0.75           # most emoji, not a few that pull the mean down


@pytest.mark.parametrize("method", METHODS)
def test_each_encoder_gives_held_out_emoji_codes_that_grow_them(method):
    model, settings, info = shipped(f"manifold_{method}_encoder")
    assert settings.stage == "encoder" and settings.init == f"data/models/manifold_{method}.pt"
    assert settings == manifold.Settings(method=method, stage="encoder", init=settings.init)
    train, held = manifold.split(settings)
    held_codes = manifold.encode(model, held, settings)
    assert torch.equal(held_codes, manifold.encode(model, held, settings))             # deterministic
    own = manifold.errors(model, held_codes, held, settings)
    wrong = manifold.errors(model, manifold.shuffled(held_codes), held, settings)
    floor = manifold.mean_image_errors(train, held, settings)
    recorded = info["eval"]["encoder_codes"]
    assert own.mean().item() == pytest.approx(recorded["held_out"]["mean_mse"], rel=MARGIN)
    assert own.mean() < floor.mean()
    assert wrong.mean() > HELD_CODE_MATTERS * own.mean()
    assert held_codes.std(dim=0).min() > 1e-3            # not one code for every image


TWO_STAGE_TIES = pytest.mark.xfail(strict=True, reason=(
    "fails today, as issue 33 measured: the two-stage encoders (codes first, then an encoder through the frozen "
    "rule, 48 training emoji) score what retrieval scores on the 16 held-out emoji (hyper 0.0356 against 0.0356)"))


@pytest.mark.parametrize("method", [pytest.param(method, marks=TWO_STAGE_TIES) for method in METHODS])
def test_each_two_stage_encoder_beats_retrieval_on_the_held_out_emoji(method):
    """The encoder must do better than recognising which training emoji a held-out one resembles:
    its mean error at least BEATS_RETRIEVAL below that of growing the nearest training emoji's code."""
    model, settings, info = shipped(f"manifold_{method}_encoder")
    train, held = manifold.split(settings)
    retrieval = manifold.retrieval_errors(model, manifold.table_codes(model), train, held, settings)
    encoder = manifold.errors(model, manifold.encode(model, held, settings), held, settings)
    assert encoder.mean() < (1 - BEATS_RETRIEVAL) * retrieval.mean(), (encoder.mean().item(),
                                                                       retrieval.mean().item())


def test_the_joint_model_ships_on_its_recipe_and_its_figures_are_measured_again():
    """The paper's end-to-end training (PRESETS['joint-many']): its JSON's settings are the preset's, the
    split is the one recorded, and the held-out figures re-measure within MARGIN."""
    model, settings, info = shipped("manifold_hyper_joint")
    assert settings == manifold.PRESETS["joint-many"] and not info.get("partial")
    train, held = manifold.split(settings)
    assert info["eval"]["split"] == {"train": train, "held_out": held} and len(held) >= 32
    codes = manifold.encode(model, held, settings)
    own = manifold.errors(model, codes, held, settings)
    assert own.mean().item() == pytest.approx(info["eval"]["encoder_codes"]["held_out"]["mean_mse"], rel=MARGIN)
    wrong = manifold.errors(model, manifold.shuffled(codes), held, settings)
    assert wrong.mean() > 2 * own.mean() and codes.std(dim=0).min() > 1e-3


def test_the_joint_encoder_beats_retrieval_on_the_held_out_emoji():
    """Issue 33's target, on all 64 held-out emoji of the large set: the encoder's mean error at least
    BEATS_RETRIEVAL below retrieval's (the nearest training emoji's code, through the same rule), and
    below retrieval on most emoji, not on a few that pull the mean down."""
    model, settings, _ = shipped("manifold_hyper_joint")
    train, held = manifold.split(settings)
    retrieval = manifold.retrieval_errors(model, manifold.encode(model, train, settings), train, held, settings)
    encoder = manifold.errors(model, manifold.encode(model, held, settings), held, settings)
    assert encoder.mean() < (1 - BEATS_RETRIEVAL) * retrieval.mean(), (encoder.mean().item(), retrieval.mean().item())
    assert (encoder < retrieval).float().mean() > 0.6


def test_the_matching_game_names_the_joint_encoders_pictures_and_misses_mostly_faces():
    """Chapter 07's matching game on the 64 held-out emoji: which of them is each grown picture nearest to?
    The encoder's pictures are named right far more often than retrieval's (measured 88 % against 56 %),
    shuffled codes almost never, and the faces less often than the rest (4 of 10 against 52 of 54)."""
    model, settings, _ = shipped("manifold_hyper_joint")
    train, held = manifold.split(settings)
    goals = manifold.targets(held, settings)
    held_codes, train_codes = manifold.encode(model, held, settings), manifold.encode(model, train, settings)
    nearest = manifold.nearest_training(train, held, settings)
    named = {label: manifold.identified(manifold.grow(model, codes, settings), goals)
             for label, codes in [("encoder", held_codes), ("retrieval", train_codes[nearest]),
                                  ("shuffled", manifold.shuffled(held_codes))]}
    share = {label: hits.float().mean().item() for label, hits in named.items()}
    assert share["encoder"] > max(0.6, share["retrieval"] + 0.15) and share["shuffled"] < 0.2, share
    faces = torch.tensor(["face" in name for name in held])
    assert named["encoder"][faces].float().mean() < named["encoder"][~faces].float().mean() - 0.25


@pytest.mark.parametrize("method", METHODS)
def test_the_encoder_stage_kept_the_rule_and_codes_of_its_init(method):
    frozen, _, _ = shipped(f"manifold_{method}")
    encoded, _, _ = shipped(f"manifold_{method}_encoder")
    for key, value in frozen.state_dict().items():
        if not key.startswith("encoder."):
            assert torch.equal(value, encoded.state_dict()[key]), key


def test_a_rule_trained_on_one_image_alone_is_at_least_as_good_as_the_shared_one():
    """The upper bound of the chapter: chapter 06's rule on one emoji, at the same sizes. Means over
    32 rollouts each (one rollout's error varies by about 20 %). Measured: apple 0.0022 alone against
    0.0034 shared, mushroom 0.0036 against 0.0038; the held-out lizard and butterfly 0.001 alone."""
    method = best_method()
    model, settings, _ = shipped(f"manifold_{method}")
    train, _ = manifold.split(settings)
    singles = sorted(models.shipped_dir().glob("manifold_single_*.pt"))
    assert len(singles) >= 4
    ratios = []
    for path in singles:
        info = models.load_metadata(path)
        single_settings = run.stored_settings("growing", growing.Settings, info["settings"])
        assert single_settings == dataclasses.replace(growing.PRESETS["single-emoji"], emoji=single_settings.emoji)
        assert (single_settings.target_size, single_settings.margin) == (settings.target_size, settings.margin)
        name = single_settings.emoji
        grown = growing.grow(models.load(path).eval(), single_settings, settings.trained_steps, batch=32)
        alone = growing.per_sample_loss(grown, manifold.targets([name], settings)).mean().item()
        assert alone < 0.2 * manifold.mean_image_errors(train, [name], settings).item(), name
        if name in train:
            code = manifold.table_codes(model)[[train.index(name)]].repeat(32, 1)
            shared = manifold.errors(model, code, [name] * 32, settings).mean().item()
            assert alone < 1.1 * shared, name
            ratios.append(alone / shared)
    assert len(ratios) >= 2 and min(ratios) < 0.8
