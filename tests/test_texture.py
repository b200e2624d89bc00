"""Tests of helpers.tasks.texture: the loss, the measurement, training and the saved model's JSON."""
import json

import pytest
import torch

from helpers import cli, models, nca
from helpers.tasks import run, texture, texture_quality


def test_texture_loss_kinds():
    target = torch.rand(3, 16, 16)
    loss_fn = texture.texture_loss(target, "swd")
    state = torch.zeros(2, 12, 16, 16)
    state[:, 5] = 2.0          # out of range by 1 everywhere in one hidden channel
    value = loss_fn(state, {})
    texture_only = loss_fn.texture(state[:, :3] + 0.5).mean()
    assert torch.isclose(value, texture_only + 16 * 16, rtol=1e-3, atol=1e-2)
    with pytest.raises(ValueError, match="unknown texture loss"):
        texture.texture_loss(target, "l2")


def test_train_texture_command_writes_a_loadable_model(tmp_path):
    out = tmp_path / "texture_stripes.pt"
    cli.main(["train", "texture", "--target", "stripes", "--size", "12", "--target-size", "16", "--iterations", "3",
                "--batch-size", "2", "--pool-size", "4", "--min-steps", "2", "--max-steps", "4", "--out", str(out),
                "--device", "cpu", "--no-progress"])
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["target"] == "stripes" and info["parameters"] == 588 and info["loss_kind"] == "swd"
    assert info["command"].startswith("python -m helpers train texture --target stripes")
    assert info["settings"]["iterations"] == 3 and info["settings"]["target_size"] == 16
    assert info["eval"]["swd_loss"] > 0 and info["eval"]["swd_closest_other_texture"] > 0
    # three iterations grow nothing: the check must say so, with reasons
    assert info["eval"]["passed"] is False and info["eval"]["reasons"]
    assert set(info["eval"]["quality"]) == set(texture_quality.PARTS)   # every part of the validated check
    assert info["settings"]["engine"] == "fast"
    assert info["loss_curve"]["every"] == 1 and len(info["loss_curve"]["mean"]) == 3
    assert nca.count_parameters(models.load(out)) == 588


def test_train_texture_fast_and_plain_engines_learn_the_same_weights():
    settings = dict(target="stripes", size=10, target_size=16, iterations=4, batch_size=2, pool_size=4, min_steps=3,
                    max_steps=6)
    fast_model, fast_info = texture.train(texture.Settings(engine="fast", **settings), progress=False)
    plain_model, plain_info = texture.train(texture.Settings(engine="plain", **settings), progress=False)
    assert fast_info["settings"]["engine"] == "fast" and plain_info["settings"]["engine"] == "plain"
    assert not torch.equal(fast_model.update.weight, nca.NCA().update.weight)      # it did train
    for fast_value, plain_value in zip(fast_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(fast_value, plain_value, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="engine must be one of"):
        texture.Settings(engine="gpu", **settings)


def test_texture_quality_is_repeatable_and_sees_the_state():
    model = nca.NCA()
    target = torch.rand(3, 16, 16)
    first = texture.quality(model, target, size=12, steps=5, seed=3)
    again = texture.quality(model, target, size=12, steps=5, seed=3)
    assert first["loss"] == again["loss"] and first["state"].shape == (2, 12, 12, 12)
    assert first["max_abs"] == first["state"].abs().max().item()
    # the same states as the plain model stepping with the same generator
    generator = torch.Generator().manual_seed(3)
    state = nca.seed_state(2, 12)
    for _ in range(5):
        state = model(state, generator=generator)
    torch.testing.assert_close(first["state"], state)


def test_your_own_image_trains_from_its_path_and_is_judged_against_every_shipped_texture(tmp_path):
    import numpy as np
    from PIL import Image

    from helpers.tasks import texture_quality

    pixels = np.zeros((24, 40, 3), np.uint8)                    # non-square: green and magenta stripes
    pixels[:, :, 1] = 200 * ((np.arange(40) // 4) % 2)
    pixels[:, :, 0] = pixels[:, :, 2] = 200 - pixels[:, :, 1]
    photo = tmp_path / "my photo.png"
    Image.fromarray(pixels).save(photo)
    out = tmp_path / "mine.pt"
    cli.main(["train", "texture", "--target", str(photo), "--size", "12", "--target-size", "16", "--iterations", "2",
              "--batch-size", "2", "--pool-size", "4", "--min-steps", "2", "--max-steps", "4", "--out", str(out),
              "--device", "cpu", "--no-progress"])
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["settings"]["target"] == str(photo) and info["target"] == str(photo)
    assert set(info["eval"]["other_textures"]) == set(texture_quality.data.list_textures())   # none excluded
    assert texture.default_out(texture.Settings(target=str(photo))) == "outputs/texture_my photo.pt"
    (tmp_path / "broken.png").write_text("no image")
    with pytest.raises(ValueError, match="broken.png is not an image file"):
        texture.Settings(target=str(tmp_path / "broken.png"))
    shipped_file = str(texture_quality.data.texture_path("stripes"))
    assert "stripes" not in texture_quality.other_textures(shipped_file, 16)  # a shipped file by path is itself


def test_selection_keeps_the_weights_of_the_best_long_rollout_not_the_last():
    """run.Selection scores the rule every few iterations and puts back the weights that scored best;
    a score that is not finite never wins."""
    model = nca.NCA()
    scores = iter([3.0, float("nan"), 1.0, 2.0, float("inf")])
    selection = run.Selection(model, lambda rule: next(scores), every=2, iterations=9)
    kept = None
    for iteration in range(9):
        with torch.no_grad():
            model.update.bias.fill_(iteration)        # the weights change every iteration
        selection(iteration, loss=0.0)
        if iteration == 5:
            kept = model.update.bias.clone()          # scored 1.0 after 6 iterations: the best
    record = selection.apply()
    assert [done for done, _ in record["scores"]] == [2, 4, 6, 8, 9]       # every 2, and after the last
    assert record["iteration"] == 6 and record["score"] == 1.0
    assert torch.equal(model.update.bias, kept)
    nothing = run.Selection(nca.NCA(), lambda rule: float("nan"), every=1, iterations=1)
    nothing(0, 0.0)
    with pytest.raises(run.train.Diverged, match="nothing to select"):
        nothing.apply()


def test_a_texture_training_saves_its_best_checkpoint_and_a_resumed_run_remembers_it(tmp_path):
    settings = texture.Settings(target="stripes", size=12, target_size=16, iterations=6, batch_size=2, pool_size=4,
                                min_steps=2, max_steps=4, select_every=2, lr_milestones=(4,))
    model, info = texture.train(settings, out=tmp_path / "model.pt", progress=False, checkpoint=tmp_path / "ck.pt",
                                checkpoint_every=2)
    selected = info["selected"]
    assert [done for done, _ in selected["scores"]] == [2, 4, 6] and selected["every"] == 2
    assert selected["score"] == min(score for _, score in selected["scores"])
    assert selected["score"] == pytest.approx(texture.selection_score(model, settings), abs=1e-4)
    state = torch.load(run.state_path(tmp_path / "ck.pt"), weights_only=True)
    assert state["selection"]["best_iteration"] == selected["iteration"]
    again, resumed = texture.train(settings, out=tmp_path / "again.pt", progress=False,
                                   checkpoint=tmp_path / "ck.pt", checkpoint_every=2, resume=True)
    assert resumed["selected"]["scores"] == selected["scores"]            # nothing left to train: the same choice
    assert torch.equal(again.update.weight, model.update.weight)
    with pytest.raises(ValueError, match="select_every"):
        texture.Settings(select_every=-1)


def test_update_per_cell_trains_a_rule_whose_cells_update_whole():
    settings = texture.Settings(target="stripes", size=10, target_size=16, iterations=2, batch_size=2, pool_size=4,
                                min_steps=2, max_steps=4, lr_milestones=(1,), update_per="cell")
    model, info = texture.train(settings, progress=False)
    assert model.rule().update_per == "cell" and info["settings"]["update_per"] == "cell"
    assert texture.Settings().update_per == "channel"          # the shipped models' rule stays the default
    with pytest.raises(ValueError, match="update_per must be one of"):
        texture.Settings(update_per="pixel")


def test_orientation_bias_tells_a_grating_from_spots():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    grating = (torch.sin(2 * torch.pi * (x + y) / 8) > 0).float().expand(3, 64, 64)
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert texture_quality.orientation_bias(grating) > 0.7
    assert texture_quality.orientation_bias(noise) < texture.ISOTROPIC_LIMIT      # the square grid alone: 0.08


@pytest.mark.parametrize("name", ["bubbles", "camouflage", "voronoi"])
def test_auto_perception_gives_a_target_without_a_direction_a_rule_without_one(name):
    assert texture.perception_of(texture.Settings(target=name)) == "laplacian"


@pytest.mark.parametrize("name", ["checkerboard", "mondrian", "plaid", "polka_dots", "stripes", "waves", "weave",
                                  "zigzag"])
def test_auto_perception_keeps_the_sobel_filters_for_oriented_and_lattice_targets(name):
    assert texture.perception_of(texture.Settings(target=name)) == "laplacian_sobel"


def test_the_chosen_perception_is_the_trained_rules_and_an_explicit_choice_wins():
    settings = texture.Settings(target="camouflage", size=10, target_size=16, iterations=2, batch_size=2, pool_size=4,
                                min_steps=2, max_steps=4, lr_milestones=(1,))
    model, info = texture.train(settings, progress=False)
    assert model.rule().filters == "laplacian" and model.config()["filters"] == "laplacian"   # what its JSON keeps
    assert info["settings"]["filters"] == "auto"
    chosen = texture.new_model(texture.Settings(target="camouflage", filters="laplacian_sobel"))
    assert chosen.rule().filters == "laplacian_sobel"
    with pytest.raises(ValueError, match="filters must be auto or one of"):
        texture.Settings(filters="gabor")


def test_a_model_saved_before_the_filters_setting_reads_as_the_sobel_rule_it_is():
    old = {"target": "bubbles", "iterations": 2000}          # what every texture JSON before it records
    assert run.stored_settings("texture", texture.Settings, old).filters == "laplacian_sobel"
    words = ["python", "-m", "helpers", "train", "texture", "--target", "bubbles"]
    assert run.current_command("texture", words, old)[-2:] == ["--filters", "laplacian_sobel"]
    assert run.current_command("texture", words, {**old, "filters": "auto"}) == words
