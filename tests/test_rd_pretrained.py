"""The shipped reaction-diffusion models of chapter 08 (data/models/rd_*.pt), re-measured from other
random starts than their JSON's: their texture figures, their wavelength and their orientation spread
stay near what the JSON says, and each model is closer to its own target than to the others' (so
swapping two models fails here)."""
import dataclasses

import pytest
import torch

from helpers import data, models
from helpers import reaction_diffusion as rdm
from helpers.tasks import rd, run, texture_quality

SHIPPED = {path.stem: path for path in sorted(models.shipped_dir().glob("rd_*.pt"))}
STEPS = rd.EVAL_STEPS


def shipped(name):
    info = models.load_metadata(SHIPPED[name])
    return models.load(SHIPPED[name]).eval(), info


def test_at_least_three_models_on_the_cpu_recipe_each_made_by_its_recorded_command():
    """The recipe, clamp and selection included: every shipped rule clamps its state to [-1, 1]."""
    assert len(SHIPPED) >= 3
    for name in SHIPPED:
        model, info = shipped(name)
        settings = info["settings"]
        assert info["architecture"] == "ReactionDiffusionNCA" and not info.get("partial") and model.clamp_state
        recipe = dataclasses.replace(rd.PRESETS["cpu"], target=settings["target"])
        assert run.stored_settings("rd", rd.Settings, settings) == recipe, name
        assert info["command"].startswith("python -m helpers train rd") and f"--target {settings['target']}" in \
            info["command"]
        assert name == f"rd_{settings['target']}"


#: The voronoi model fails even the patch part: yellow dots in purple rings on green, about as close to
#: the voronoi target as the bubbles target is (0.077 against 0.075 on its JSON's 8 patterns, 0.05 to 0.09
#: from one start to another). Chapter 08 and data/README.md say so; the tests below re-measure its
#: figures but do not ask it to pass, and the swap test leaves it out.
WEAK = {"rd_voronoi"}


@pytest.fixture(scope="module")
def grown():
    """Every shipped model grown from four random fields that are not the JSON's (seed 5 instead of 0)."""
    with torch.no_grad():
        return {name: rd.grow(shipped(name)[0], 64, STEPS, seed=5, batch=4) for name in SHIPPED}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_model_grows_the_texture_figures_its_json_records(name, grown):
    _, info = shipped(name)
    recorded, settings = info["eval"], info["settings"]
    state = grown[name]
    assert torch.isfinite(state).all() and state.abs().max() < 10
    result = texture_quality.check_shipped(rdm.to_rgb(state), settings["target"], settings["target_size"],
                                           seed=0, angles=settings["angles"])
    if name not in WEAK:
        assert result["patch"]["passed"], texture_quality.summary(result)  # closer than any other texture
    assert result["patch"]["distance"] == pytest.approx(recorded["quality"]["patch"]["distance"],
                                                        rel=0.6 if name in WEAK else 0.25)
    assert result["structure"]["scale_distance"] == pytest.approx(
        recorded["quality"]["structure"]["scale_distance"], abs=0.1)
    wavelength = rdm.wavelength(rdm.to_rgb(state)[0])
    assert wavelength == pytest.approx(recorded["wavelength_cells"], rel=0.15)


def test_each_model_is_closer_to_its_own_target_than_the_other_models_are(grown):
    """Patch distance (any orientation) to each target: the model trained on it is the closest one."""
    targets = {name: shipped(name)[1]["settings"]["target"] for name in SHIPPED}
    assert len(set(targets) - WEAK) >= 3
    for name, target in targets.items():
        if name in WEAK:
            continue
        image = data.load_texture(target, 64)
        distances = {other: texture_quality.patch_distance(rdm.to_rgb(state), image, angles=8).mean().item()
                     for other, state in grown.items()}
        assert min(distances, key=distances.get) == name, (target, distances)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_orientations_are_spread_over_ten_new_random_starts(name):
    model, _ = shipped(name)
    with torch.no_grad():
        states = torch.cat([rd.grow(model, 48, 1000, seed=100 + seed, batch=1) for seed in range(10)])
    angles = [rdm.dominant_orientation(image)[0] for image in rdm.to_rgb(states)]
    # ten angles drawn uniformly have a spread below 0.6 in about 97 % of draws; one fixed angle gives 1
    assert rdm.orientation_spread(angles) < 0.6, angles


def test_past_the_stability_limit_a_clamped_rule_ends_as_a_checkerboard_not_its_pattern():
    """helpers.checks refuses a diffusion speed past the limit; run anyway (step by step), the shipped
    polka-dot rule cannot overflow (it clamps), but the finest checkerboard fills the grid."""
    model, _ = shipped("rd_polka_dots")
    checkerboard = ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2 * 2 - 1).float()
    amplitudes = {}
    with torch.no_grad():
        for speed in (1.4, 1.6):
            state = rdm.random_field(1, 48, model.channels, torch.Generator().manual_seed(0))
            for _ in range(1000):
                state = model.step(state, diffusion_speed=speed)
            assert state.abs().max() <= 1
            amplitudes[speed] = (state * checkerboard).mean(dim=(2, 3)).abs().max().item()
    assert amplitudes[1.4] < 0.05 and amplitudes[1.6] > 0.9, amplitudes
