"""The shipped growing models of chapter 06 (data/models/growing_*.pt), re-measured: each grows its
target; the pool models hold it and the growing-only one does not; the regenerating lizard recovers
from damage more often than the persistent one. Swapping two models would fail here."""
import dataclasses

import pytest

from helpers import models
from helpers.tasks import growing, run

# Bounds of the checks below, with room for other random masks than the JSON's (measured there, 8 rollouts:
# the lizards' grown loss 0.7-5 % of an empty grid's with detail errors 0.04-0.26, the butterfly's and the
# mushroom's detail errors 0.65 and 0.88; from 1,000 to 8,000 steps the regenerating lizard's loss 0.5 % of an
# empty grid's, the persistent lizard's (preset cpu-hold) 0.1 %, and its cpu-recipe predecessor's past 80 % by
# 8,000 (kept in data/models/cpu_recipe); circles recovered against the twin: see data/README.md)
HOLD_FACTOR = 3.0           # after 1000 steps a pool model's loss is within this factor of its grown loss
DRIFT_FACTOR = 10.0         # ... and the growing-only model's loss beyond this factor
REGENERATING_RECOVERS = 0.6
NAMED_FAILURES = {"cpu_recipe/growing_mushroom_regenerating", "cpu_recipe/growing_butterfly_regenerating"}

SHIPPED = {path.stem: path for path in sorted(models.shipped_dir().glob("growing_*.pt"))}
EXPERIMENT_MODELS = [f"growing_lizard_{experiment}" for experiment in growing.EXPERIMENTS]
#: Models of the cpu recipes that ones of the preset cpu-hold replaced, kept for chapter 06's comparisons: the
#: persistent lizard (pool 256, rollouts of 40 to 55 steps), which drifts, and the butterfly and the mushroom, which
#: fail the judge.
CPU_PERSISTENT = "cpu_recipe/growing_lizard_persistent"
CPU_BUTTERFLY = "cpu_recipe/growing_butterfly_regenerating"
CPU_MUSHROOM = "cpu_recipe/growing_mushroom_regenerating"
RECIPES = {"growing_lizard_persistent": "cpu-hold", "growing_butterfly_regenerating": "cpu-hold",
           "growing_mushroom_regenerating": "cpu-hold", CPU_PERSISTENT: "cpu", CPU_BUTTERFLY: "cpu-2000",
           CPU_MUSHROOM: "cpu-2000"}


def shipped(name):
    path = SHIPPED.get(name, models.shipped_dir() / f"{name}.pt")
    info = models.load_metadata(path)
    settings = run.stored_settings("growing", growing.Settings, info["settings"])
    return models.load(path).eval(), settings, info


def test_the_shipped_set_is_the_three_lizards_and_two_more_regenerating_emoji_on_their_recipes():
    assert set(EXPERIMENT_MODELS) <= set(SHIPPED)
    assert len([name for name in SHIPPED if name.endswith("_regenerating")]) >= 3
    for name in [*SHIPPED, CPU_PERSISTENT, CPU_BUTTERFLY, CPU_MUSHROOM]:
        _, settings, info = shipped(name)
        recipe = growing.PRESETS[RECIPES.get(name, "cpu" if "lizard" in name else "cpu-2000")]
        assert settings == dataclasses.replace(recipe, experiment=settings.experiment, emoji=settings.emoji), name
        assert info["architecture"] == "GrowingNCA" and not info.get("partial") and not info.get("placeholder")
        assert f"--experiment {settings.experiment}" in info["command"]
        assert f"--emoji {settings.emoji}" in info["command"]


@pytest.mark.parametrize("name", [*sorted(SHIPPED), CPU_BUTTERFLY, CPU_MUSHROOM])
def test_each_model_grows_its_target_and_the_named_failures_do_not(name):
    """Re-measured from other random masks than the JSON's, with the judge that fails blobs
    (growing.judge_pattern, validated on tests/fixtures/growing): every shipped model passes; the mushroom
    and the butterfly of the cpu-2000 recipe, whose losses are small, fail on detail, as the chapter names
    them. Sixteen rollouts: the cpu-hold mushroom passes at the end of its longest training rollout (96
    steps) with a median detail error of about 0.33, near the bound 0.35 (it finishes by about 150 steps)."""
    model, settings, info = shipped(name)
    grown = growing.grow(model, settings, settings.max_steps - 1, batch=16, seed=11)
    judged = growing.judge_pattern(grown, growing.target(settings))
    assert judged["grows_target"] == (name not in NAMED_FAILURES), (name, judged)
    assert judged["loss_ratio"] < growing.GROWN_LOSS_BOUND, (name, judged)
    loss = growing.per_sample_loss(grown, growing.target(settings)).median().item()
    assert loss == pytest.approx(info["eval"]["grown_loss"]["median"], rel=0.3)
    assert info["eval"]["grown_pattern"]["grows_target"] == judged["grows_target"], "the JSON says otherwise"


def long_run_loss(name, steps, count=8):
    model, settings, _ = shipped(name)
    grown = growing.grow(model, settings, steps, batch=count, seed=12)
    return growing.per_sample_loss(grown, growing.target(settings)).median().item(), settings


def test_the_pool_models_hold_the_lizard_for_1000_steps_and_the_growing_model_does_not():
    """Swapping the growing model with a persistent one would fail here."""
    losses = {name: long_run_loss(name, 1000)[0] for name in EXPERIMENT_MODELS}
    grown_losses = {name: long_run_loss(name, shipped(name)[1].max_steps - 1)[0] for name in EXPERIMENT_MODELS}
    for name in ["growing_lizard_persistent", "growing_lizard_regenerating"]:
        assert losses[name] < HOLD_FACTOR * grown_losses[name], f"{name} lost its pattern: {losses}"
    assert losses["growing_lizard_growing"] > DRIFT_FACTOR * grown_losses["growing_lizard_growing"], losses


def test_to_8000_steps_both_pool_lizards_hold_and_the_cpu_recipes_persistent_one_drifts():
    """The 8,000-step measurement of the JSONs (8 rollouts), on two other rollouts each: the regenerating
    lizard and the persistent one of the cpu-hold recipe stay below the hold bound with their detail; the
    persistent one of the cpu recipe (shorter rollouts, a smaller pool) is past it by 8,000 steps."""
    held = {}
    for name in ["growing_lizard_persistent", "growing_lizard_regenerating", CPU_PERSISTENT]:
        model, settings, info = shipped(name)
        held[name] = growing.persistence(model, settings, checkpoints=(4000, 8000), count=2, seed=12)
        assert info["eval"]["persistence"]["holds"] == (name != CPU_PERSISTENT), name
    assert held["growing_lizard_regenerating"]["holds"] and held["growing_lizard_persistent"]["holds"], held
    drifted = held[CPU_PERSISTENT]["checkpoints"][-1]
    assert not held[CPU_PERSISTENT]["holds"] and drifted["loss_ratio"] > growing.HOLD_LOSS_BOUND, held


def test_against_the_undamaged_twin_the_regenerating_lizard_regrows_circles_more_often_than_the_persistent_one():
    """The two lizards of the cpu recipe, which differ only in the damage: the regenerating one regrows
    most circles, the persistent one fewer."""
    fractions = {}
    for name in [CPU_PERSISTENT, "growing_lizard_regenerating"]:
        model, settings, _ = shipped(name)
        fractions[name] = growing.regeneration(model, settings, "circle", count=8, after=400, every=100, seed=13)[
            "recovered_fraction"]
    assert fractions["growing_lizard_regenerating"] >= REGENERATING_RECOVERS, fractions
    assert fractions["growing_lizard_regenerating"] > fractions[CPU_PERSISTENT], fractions


def test_the_selection_score_puts_the_holding_lizard_before_the_one_that_only_grows():
    """``growing.selection_score`` (what ``--select-every`` keeps the best weights by): the regenerating
    lizard holds at every 8,000-step checkpoint (score = its worst loss share, under the bound); the
    growing-only lizard fails all four checkpoints (score at least 4)."""
    scores = {name: growing.selection_score(*shipped(name)[:2])
              for name in ["growing_lizard_regenerating", "growing_lizard_growing"]}
    assert scores["growing_lizard_regenerating"] < growing.HOLD_LOSS_BOUND, scores
    assert scores["growing_lizard_growing"] >= len(growing.HOLD_CHECKPOINTS), scores
