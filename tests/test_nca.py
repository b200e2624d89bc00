"""Tests of helpers.nca: filters, perception, the update rule, its frozen Rule, masks, seeds and model files."""
import dataclasses
import json

import pytest
import torch

from helpers import models, nca


def random_state(batch=2, size=9, seed=0):
    return torch.randn(batch, nca.CHANNELS, size, size, generator=torch.Generator().manual_seed(seed)) * 0.3


# ----------------------------------------------------------------------------- filters

def test_filters_are_laplacian_then_sobel_x_then_sobel_y():
    filters = nca.perception_filters()
    assert filters.shape == (12, 1, 3, 3)
    laplacian = torch.tensor([[1.0, 2, 1], [2, -12, 2], [1, 2, 1]])
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    for channel in range(4):
        assert torch.equal(filters[channel, 0], laplacian)
        assert torch.equal(filters[4 + channel, 0], sobel_x)
        assert torch.equal(filters[8 + channel, 0], sobel_x.T)
    # a Laplacian sums to zero: a uniform field perceives nothing
    assert filters[:4].sum() == 0


def test_side_filters_are_neighbour_minus_centre_in_four_directions():
    filters = nca.perception_filters("side")
    assert filters.shape == (12, 1, 3, 3)
    state = torch.zeros(1, 12, 5, 5)
    state[:, :, 2, 2] = 1.0  # one bright cell; perception at the centre and at its neighbours
    seen = nca.perceive(state, filters)[0]
    # every side filter sees -1 at the bright cell itself (the centre is subtracted)
    assert torch.all(seen[:, 2, 2] == -1)
    # channels 0..2 compare a cell with the one above it: the cell below the bright one sees +1
    assert seen[0, 3, 2] == 1 and seen[0, 1, 2] == 0
    # channels 3..5 compare with the cell below: the cell above the bright one sees +1
    assert seen[3, 1, 2] == 1 and seen[3, 3, 2] == 0
    # channels 6..8 look left, 9..11 look right
    assert seen[6, 2, 3] == 1 and seen[9, 2, 1] == 1
    with pytest.raises(ValueError, match="unknown filter kind"):
        nca.perception_filters("gabor")
    with pytest.raises(ValueError, match="multiple of 4"):
        nca.perception_filters("side", channels=6)
    with pytest.raises(ValueError, match="multiple of 3"):
        nca.perception_filters(channels=10)


def test_side_filter_groups_point_up_down_left_right():
    filters = nca.perception_filters("side")[:, 0]
    up, down, left, right = filters[0], filters[3], filters[6], filters[9]
    assert up[0, 1] == 1 and down[2, 1] == 1 and left[1, 0] == 1 and right[1, 2] == 1
    assert all(f[1, 1] == -1 and f.sum() == 0 for f in (up, down, left, right))


def test_laplacian_filters_make_a_rule_that_commutes_with_quarter_turns_and_mirrors():
    """The isotropic kind: every channel sees the Laplacian, so a rule with any weights, run without
    random masks, gives the same result whether the grid is turned (or mirrored) before or after."""
    filters = nca.perception_filters("laplacian")
    assert filters.shape == (12, 1, 3, 3) and all(torch.equal(f[0], nca.LAPLACIAN) for f in filters)
    every_value = torch.ones(1)

    def quarter_turn(state):
        return torch.rot90(state, 1, dims=(2, 3))

    def mirror(state):
        return torch.flip(state, dims=(3,))

    torch.manual_seed(0)
    isotropic, directional = nca.NCA(filters="laplacian"), nca.NCA()
    assert nca.count_parameters(isotropic) == 588
    with torch.no_grad():
        isotropic.update.weight.normal_(0, 0.1)
    directional.update.load_state_dict(isotropic.update.state_dict())
    state = random_state(batch=1, size=9)
    for move in (quarter_turn, mirror):
        assert torch.allclose(isotropic(move(state), every_value), move(isotropic(state, every_value)), atol=1e-6)
    # the same weights behind the Sobel filters see directions: this comparison can fail
    assert not torch.allclose(directional(quarter_turn(state), every_value),
                              quarter_turn(directional(state, every_value)), atol=1e-3)


def test_perceive_equals_a_direct_sum_with_wraparound():
    state = random_state(batch=1, size=6)
    filters = nca.perception_filters()
    result = nca.perceive(state, filters)
    height = width = 6
    expected = torch.zeros_like(state)
    for channel in range(12):
        for y in range(height):
            for x in range(width):
                total = 0.0
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        neighbour = state[0, channel, (y + dy) % height, (x + dx) % width]
                        total += filters[channel, 0, dy + 1, dx + 1] * neighbour
                expected[0, channel, y, x] = total
    assert torch.allclose(result, expected, atol=1e-5)


def test_zero_padding_reads_zeros_beyond_the_border():
    state = random_state(batch=1, size=6)
    filters = nca.perception_filters()
    padded = torch.zeros(1, 12, 8, 8)
    padded[..., 1:-1, 1:-1] = state
    expected = torch.zeros_like(state)
    for y in range(6):
        for x in range(6):      # each cell: its 3x3 window of the zero-padded grid times the filter
            window = padded[0, :, y:y + 3, x:x + 3]
            expected[0, :, y, x] = (window * filters[:, 0]).sum(dim=(1, 2))
    torch.testing.assert_close(nca.perceive(state, filters, padding="zeros"), expected, atol=1e-5, rtol=0)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))   # away from the border both agree
    torch.testing.assert_close(nca.perceive(state, filters)[interior], expected[interior], atol=1e-5, rtol=0)
    assert not torch.allclose(nca.perceive(state, filters), expected, atol=1e-3)
    with pytest.raises(ValueError, match="padding"):
        nca.perceive(state, filters, padding="reflect")


def test_a_model_saved_before_padding_existed_loads_with_wrap_around(tmp_path):
    model = nca.NCA(padding="zeros")
    path = models.save(model, tmp_path / "m.pt")
    assert models.load(path).padding == "zeros"
    info = json.loads(path.with_suffix(".json").read_text())
    del info["config"]["padding"]                  # what the JSON of an older save holds (format 1: its hash
    del info["format_version"]                     # covered the weights only)
    info["weights_sha256"] = models.sha256(path.read_bytes())
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="format 1"):
        assert models.load(path).rule().padding == "circular"


def test_perceive_rejects_bad_states():
    with pytest.raises(ValueError, match=r"\[batch, 12, height, width\]"):
        nca.perceive(torch.zeros(12, 8, 8), nca.perception_filters())
    with pytest.raises(ValueError, match="at least 3x3"):
        nca.NCA()(torch.zeros(1, 12, 2, 2))


def test_split_signs_keeps_every_value_in_exactly_one_half():
    values = torch.tensor([[[[-2.0]], [[0.5]]]])
    split = nca.split_signs(values)
    assert split.flatten().tolist() == [0.0, 0.5, -2.0, 0.0]
    x = random_state()
    halves = nca.split_signs(x)
    assert torch.equal(halves[:, :12] + halves[:, 12:], x)


# ------------------------------------------------------------------------------- model

def test_parameter_counts_are_300_and_588():
    assert nca.count_parameters(nca.NCA(split_relu=False)) == 300
    assert nca.count_parameters(nca.NCA()) == 588
    assert nca.count_parameters(nca.NCA(filters="side")) == 588


def test_the_rule_is_frozen_and_round_trips_through_the_config():
    model = nca.NCA(filters="side", update_rate=0.25, update_per="cell", split_relu=False)
    rule = model.rule()
    assert rule == nca.Rule(channels=12, split_relu=False, filters="side", update_rate=0.25, update_per="cell")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.update_rate = 0.5
    # config() is the rule as a dict, with the keys (and their order) that saved JSON files hold
    assert model.config() == dataclasses.asdict(rule)
    assert list(model.config()) == ["channels", "split_relu", "filters", "update_rate", "update_per", "padding"]
    assert nca.NCA(**model.config()).rule() == rule
    assert nca.NCA(**dataclasses.asdict(rule)).config() == model.config()
    assert nca.NCA().rule() == nca.Rule() and nca.Rule().inputs == 48 and rule.inputs == 24


def test_bad_rule_options_are_clear_errors():
    with pytest.raises(ValueError, match="update_per"):
        nca.NCA(update_per="pixel")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        nca.Rule(update_rate=1.5)


@pytest.mark.parametrize("options, name", [
    ({"channels": 3.0}, "channels"), ({"channels": "12"}, "channels"), ({"channels": True}, "channels"),
    ({"channels": 0}, "channels"), ({"split_relu": "no"}, "split_relu"), ({"split_relu": 1}, "split_relu"),
    ({"filters": None}, "filter kind"), ({"update_rate": "0.5"}, "update_rate"),
    ({"update_rate": float("nan")}, "update_rate must be a finite"), ({"update_rate": float("inf")}, "finite"),
    ({"update_rate": -0.1}, "update_rate"), ({"update_per": ["cell"]}, "update_per"),
    ({"padding": "reflect"}, "padding"), ({"padding": 0}, "padding"),
])
def test_options_of_the_wrong_type_name_the_argument(options, name):
    # the Rule checks them, so NCA(...) and a saved config (through NCA(**config)) give the same error
    for build in (nca.Rule, nca.NCA):
        with pytest.raises((TypeError, ValueError), match=name):
            build(**options)


def test_weights_start_small_and_bias_zero():
    torch.manual_seed(0)
    model = nca.NCA()
    assert model.update.weight.abs().max() < 1e-2
    assert 5e-4 < model.update.weight.std() < 2e-3
    assert torch.all(model.update.bias == 0)


def test_forward_with_a_full_mask_is_state_plus_the_1x1_rule():
    torch.manual_seed(1)
    model = nca.NCA()
    with torch.no_grad():
        model.update.weight.normal_(0, 0.1)
        model.update.bias.normal_(0, 0.1)
    state = random_state()
    features = torch.cat([state, nca.perceive(state, model.filters)], dim=1)
    features = torch.cat([features.clamp(min=0), features.clamp(max=0)], dim=1)
    weight = model.update.weight[:, :, 0, 0]
    expected = state + torch.einsum("oi,bihw->bohw", weight, features) + model.update.bias.view(1, -1, 1, 1)
    assert torch.allclose(model(state, mask=torch.ones(1)), expected, atol=1e-5)


def test_forward_with_a_random_mask_changes_only_masked_values():
    model = nca.NCA()
    with torch.no_grad():
        model.update.bias.fill_(1.0)  # every proposed change is nonzero
    state = random_state()
    mask = nca.update_mask(state.shape, generator=torch.Generator().manual_seed(3))
    changed = model(state, mask=mask) != state
    assert torch.equal(changed, mask.bool())


def test_translation_equivariance_with_updates_forced_on():
    torch.manual_seed(2)
    for filters in ("laplacian_sobel", "side"):
        model = nca.NCA(filters=filters)
        with torch.no_grad():
            model.update.weight.normal_(0, 0.2)
        state = random_state(size=11)
        ones = torch.ones(1)
        shift = (3, -5)
        step_then_shift = torch.roll(model(state, mask=ones), shifts=shift, dims=(2, 3))
        shift_then_step = model(torch.roll(state, shifts=shift, dims=(2, 3)), mask=ones)
        assert torch.allclose(step_then_shift, shift_then_step, atol=1e-6)


def test_update_masks_have_the_right_shape_and_rate():
    shape = (4, 12, 32, 32)
    generator = torch.Generator().manual_seed(0)
    per_channel = nca.update_mask(shape, 0.5, "channel", generator)
    per_cell = nca.update_mask(shape, 0.25, "cell", generator)
    assert per_channel.shape == shape and per_cell.shape == (4, 1, 32, 32)
    assert abs(per_channel.mean().item() - 0.5) < 0.02
    assert abs(per_cell.mean().item() - 0.25) < 0.03
    assert set(per_channel.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="per must be"):
        nca.update_mask(shape, per="pixel")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        nca.update_mask(shape, rate=1.5)


def test_per_cell_model_updates_all_channels_of_a_cell_together():
    model = nca.NCA(update_per="cell")
    with torch.no_grad():
        model.update.bias.fill_(1.0)
    state = random_state()
    changed = (model(state, generator=torch.Generator().manual_seed(0)) != state)
    per_cell = changed.all(dim=1) | (~changed).all(dim=1)
    assert per_cell.all() and 0.3 < changed.float().mean() < 0.7


def test_rollout_is_repeated_forward_and_keeps_frames():
    model = nca.NCA()
    with torch.no_grad():
        model.update.bias.fill_(0.01)
    state = nca.seed_state(1, 8)
    final, frames = model.rollout(state, 6, generator=torch.Generator().manual_seed(0), keep_every=2)
    assert len(frames) == 4 and torch.equal(frames[0], state) and torch.equal(frames[-1], final)
    again = state
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        again = model(again, generator=generator)
    assert torch.equal(final, again)


@pytest.mark.parametrize("steps", [-5, 2.0, "3", True, None])
def test_rollout_steps_must_be_a_non_negative_int(steps):
    with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
        nca.NCA().rollout(nca.seed_state(1, 8), steps)
    state = nca.seed_state(1, 8)
    assert nca.NCA().rollout(state, 0) is state    # zero steps is allowed: nothing happens


def test_seed_and_to_rgb():
    seed = nca.seed_state(3, (5, 7))
    assert seed.shape == (3, 12, 5, 7) and seed.abs().sum() == 0
    state = torch.zeros(1, 12, 2, 2)
    state[0, 0, 0, 0] = 0.2
    state[0, 1, 0, 0] = 0.9
    rgb = nca.to_rgb(state)
    assert rgb.shape == (1, 3, 2, 2)
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([0.7, 1.0, 0.5]))


# ------------------------------------------------------------------------------- files

def test_save_and_load_round_trip(tmp_path):
    model = nca.NCA(filters="side", update_per="cell")
    with torch.no_grad():
        model.update.weight.normal_()
    path = models.save(model, tmp_path / "m.pt", {"note": "test"})
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["parameters"] == 588 and info["note"] == "test" and info["config"]["filters"] == "side"
    loaded = models.load(path)
    assert loaded.filter_kind == "side" and loaded.update_per == "cell" and loaded.rule() == model.rule()
    assert torch.equal(loaded.update.weight, model.update.weight)
    assert models.load_metadata(path)["note"] == "test"


def test_loading_a_missing_model_names_the_available_ones(tmp_path):
    models.save(nca.NCA(), tmp_path / "there.pt")
    with pytest.raises(FileNotFoundError, match="there.pt"):
        models.load(tmp_path / "missing.pt")


def test_loading_another_architecture_is_a_clear_error(tmp_path):
    path = models.save(nca.NCA(split_relu=False), tmp_path / "small.pt")
    info = json.loads(path.with_suffix(".json").read_text())
    info["config"]["split_relu"] = True  # metadata claims the 588-parameter rule
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not match small.json.*config was edited"):     # the hash says so
        models.load(path)
    del info["format_version"], info["weights_sha256"]          # an older save without a hash: the shapes say so
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not hold this architecture"), pytest.warns(UserWarning):
        models.load(path)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    (tmp_path / "other.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="does not hold this architecture"):
        models.load(tmp_path / "other.pt")


def test_the_shipped_models_are_in_the_data_folder_and_load_by_name():
    assert models.shipped_dir().name == "models" and models.shipped_dir().parent.name == "data"
    model, metadata = models.shipped("texture_stripes")
    assert isinstance(model, nca.NCA) and not model.training and metadata["target"] == "stripes"
    nested, _ = models.shipped("loss_comparison/mst_symmetric_seed0")
    assert isinstance(nested, nca.NCA)
    with pytest.raises(FileNotFoundError, match="texture_stripes.pt"):      # the error lists what there is
        models.shipped("texture_strips")
