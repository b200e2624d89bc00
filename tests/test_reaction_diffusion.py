"""Chapter 08's reaction-diffusion rule, its Laplacians (grid, volume, mesh), the rotation-invariant
loss, the orientation and wavelength measures and the raycaster."""
import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from helpers import cli, losses, meshes, models, nca, volume
from helpers import reaction_diffusion as rdm
from helpers.fast import cell_network
from helpers.tasks import rd


def rotate_grid(state: torch.Tensor, quarter_turns: int = 1, flip: bool = False) -> torch.Tensor:
    """The grid turned by quarter turns (counter-clockwise on screen) and optionally mirrored left-right."""
    state = torch.rot90(state, quarter_turns, dims=(-2, -1))
    return state.flip(-1) if flip else state


def random_rule(channels=6, hidden=16, seed=0):
    torch.manual_seed(seed)
    model = rdm.ReactionDiffusionNCA(channels, hidden)
    torch.nn.init.normal_(model.reaction_out.weight, std=0.3)
    return model


# ------------------------------------------------------------------------------------- stencils

@pytest.mark.parametrize("kernel", [rdm.LAPLACIAN_2D, rdm.LAPLACIAN_3D], ids=["2d", "3d"])
def test_stencil_is_symmetric_and_sums_to_zero(kernel):
    assert abs(kernel.sum().item()) < 1e-6                       # constants are annihilated
    for dim in range(kernel.dim()):
        assert torch.equal(kernel, kernel.flip(dim))             # mirror symmetric along every axis
    assert torch.equal(kernel, kernel.transpose(-1, -2))         # and under swapping two axes


@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (2, 3, 6, 7, 8)], ids=["2d", "3d"])
def test_grid_laplacian_conserves_mass_and_annihilates_constants(shape):
    field = torch.randn(*shape, dtype=torch.float64)
    space = tuple(range(2, len(shape)))
    assert rdm.laplacian(field).sum(dim=space).abs().max() < 1e-10             # what leaves a cell enters another
    assert rdm.laplacian(torch.full(shape, 3.5)).abs().max() < 1e-5


def test_grid_laplacian_approximates_the_continuous_one_in_every_direction():
    """Its Fourier symbol is -|k|^2 + |k|^4 / 12 + O(k^6), whatever the direction of k: isotropic to
    fourth order (the plain 5-point stencil is not: -|k|^2 + (kx^4 + ky^4) / 12)."""
    kernel = rdm.LAPLACIAN_2D.double()
    for size in (0.2, 0.4):
        for angle in (0.0, math.pi / 8, math.pi / 4):
            kx, ky = size * math.cos(angle), size * math.sin(angle)
            symbol = sum(kernel[1 + dy, 1 + dx].item() * math.cos(kx * dx + ky * dy)
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            assert abs(symbol - (-size ** 2 + size ** 4 / 12)) < 0.01 * size ** 6


def test_grid_laplacian_of_a_parabola_is_its_second_derivative():
    """lap(x^2 + y^2) = 4 at interior cells, for the 2D and 3D (lap(x^2+y^2+z^2) = 6) stencils."""
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    assert torch.allclose(rdm.laplacian((xs ** 2 + ys ** 2)[None, None])[0, 0, 2:-2, 2:-2], torch.tensor(4.0))
    zs, ys, xs = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), torch.arange(7.0), indexing="ij")
    assert torch.allclose(rdm.laplacian((xs ** 2 + ys ** 2 + zs ** 2)[None, None])[0, 0, 2:-2, 2:-2, 2:-2],
                          torch.tensor(6.0), atol=1e-4)


def test_laplacian_rejects_a_state_without_space():
    with pytest.raises(ValueError, match="batch, channels"):
        rdm.laplacian(torch.zeros(3, 4))


# ----------------------------------------------------------------------------------------- mesh

def test_icosphere_has_the_expected_counts_and_lies_on_the_unit_sphere():
    vertices, faces = meshes.icosphere(3)
    assert vertices.shape == (642, 3) and faces.shape == (1280, 3)
    assert torch.allclose(vertices.norm(dim=1), torch.tensor(1.0, dtype=torch.float64))
    assert len(meshes.edges(faces)) == 1920           # Euler: V - E + F = 2
    with pytest.raises(ValueError, match="subdivisions"):
        meshes.icosphere(-1)


def test_mesh_laplacian_is_symmetric_conserves_mass_and_annihilates_constants():
    vertices, faces = meshes.icosphere(3)
    laplacian = meshes.MeshLaplacian(vertices, faces)
    weights = laplacian.weights.to_dense()
    assert torch.equal(weights, weights.T)
    assert abs(meshes.mean_edge_length(laplacian.vertices, faces) - 1.0) < 1e-9    # one cell per edge
    field = torch.randn(2, 3, len(vertices), dtype=torch.float64)
    assert ((laplacian(field) * laplacian.areas).sum(dim=-1)).abs().max() < 1e-9   # area-weighted mass kept
    assert laplacian(torch.ones(1, 2, len(vertices))).abs().max() < 1e-5
    with pytest.raises(ValueError, match="vertices"):
        laplacian(torch.zeros(1, 2, 5))


def test_mesh_laplacian_on_a_grid_is_the_grid_laplacian():
    """On a grid cut into right triangles the cotangent weights of the diagonals vanish and the
    Laplacian is the 5-point stencil (interior vertices), equal to a grid convolution with it."""
    height, width = 7, 9
    vertices, faces = meshes.grid_mesh(height, width)
    field = torch.randn(1, 2, height, width, dtype=torch.float64)
    on_mesh = meshes.MeshLaplacian(vertices, faces, unit_edges=False)(field.flatten(2)).reshape(field.shape)
    five_point = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    on_grid = torch.nn.functional.conv2d(field, five_point[None, None].repeat(2, 1, 1, 1), groups=2)
    assert torch.allclose(on_mesh[..., 1:-1, 1:-1], on_grid, atol=1e-12)


# ------------------------------------------------------------------------------------- the rule

def test_reference_size_has_8320_parameters_and_an_untrained_rule_only_diffuses():
    model = rdm.ReactionDiffusionNCA()
    assert nca.count_parameters(model) == 8320
    state = rdm.random_field(2, 16, 32, torch.Generator().manual_seed(0))
    stepped = model.step(state)
    expected = state + model.diffusion.reshape(1, -1, 1, 1) * rdm.laplacian(state)
    assert torch.allclose(stepped, expected)
    assert torch.allclose(stepped.mean(dim=(2, 3)), state.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("turns,flip", [(1, False), (2, False), (3, False), (0, True), (1, True)])
def test_a_step_commutes_with_quarter_turns_and_flips(turns, flip):
    model = random_rule()
    state = rdm.random_field(2, 20, model.channels, torch.Generator().manual_seed(1))
    then_turn = rotate_grid(model.rollout(state, 5), turns, flip)
    turn_then = model.rollout(rotate_grid(state, turns, flip), 5)
    assert (then_turn - turn_then).abs().max() < 1e-5


def test_the_volume_rule_commutes_with_turns_of_the_volume():
    model = random_rule()
    state = rdm.random_field(1, (8, 9, 10), model.channels, torch.Generator().manual_seed(2))
    for dims in [(-2, -1), (-3, -1), (-3, -2)]:
        then_turn = torch.rot90(model.rollout(state, 3), 1, dims)
        turn_then = model.rollout(torch.rot90(state, 1, dims), 3)
        assert (then_turn - turn_then).abs().max() < 1e-5


def test_the_rule_runs_on_a_mesh_and_renumbering_the_vertices_changes_nothing():
    model = random_rule()
    vertices, faces = meshes.icosphere(2)
    laplacian = meshes.MeshLaplacian(vertices, faces)
    order = torch.randperm(len(vertices), generator=torch.Generator().manual_seed(0))
    inverse = torch.argsort(order)
    shuffled = meshes.MeshLaplacian(vertices[order], inverse[faces])
    state = rdm.random_field(1, (len(vertices),), model.channels, torch.Generator().manual_seed(3))
    direct = model.rollout(state, 4, laplacian)
    renumbered = model.rollout(state[..., order], 4, shuffled)
    assert (direct[..., order] - renumbered).abs().max() < 1e-5


def test_a_clamped_rule_keeps_every_chemical_in_range_and_is_the_plain_rule_inside_it():
    """clamp_state=True: each step is the plain step clamped to [-1, 1]; the state never leaves the range
    however strong the reaction, so the overflow loss is always 0. Saved and loaded, the option stays."""
    plain = random_rule()
    with torch.no_grad():
        plain.reaction_out.weight.mul_(20)                       # a reaction strong enough to overflow
    clamped = rdm.ReactionDiffusionNCA(plain.channels, plain.hidden, clamp_state=True)
    clamped.load_state_dict(plain.state_dict())
    state = rdm.random_field(2, 12, plain.channels, torch.Generator().manual_seed(4))
    assert plain.rollout(state, 20).abs().max() > 1                              # the plain rule overflows
    final = clamped.rollout(state, 20)
    assert final.abs().max() <= 1 and losses.overflow_loss(final).max() == 0
    assert torch.equal(clamped.step(state), plain.step(state).clamp(-1, 1))
    quiet = rdm.random_field(1, 12, plain.channels, torch.Generator().manual_seed(5), amplitude=0.1)
    untrained = rdm.ReactionDiffusionNCA(plain.channels, plain.hidden, clamp_state=True)
    assert torch.equal(untrained.step(quiet), rdm.ReactionDiffusionNCA(plain.channels, plain.hidden).step(quiet))
    assert clamped.config()["clamp_state"] is True and rdm.ReactionDiffusionNCA().config()["clamp_state"] is False
    with pytest.raises(ValueError, match="clamp_state"):
        rdm.ReactionDiffusionNCA(clamp_state="yes")


def test_a_clamped_rule_is_saved_loaded_and_run_by_the_fast_rollout_as_itself(tmp_path):
    model = rdm.ReactionDiffusionNCA(6, 16, clamp_state=True)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.reaction_out.weight, std=3.0)
    loaded = models.load(models.save(model, tmp_path / "rd.pt", {"task": "rd"}))
    assert loaded.clamp_state is True
    state = rdm.random_field(2, 12, 6, torch.Generator().manual_seed(0))
    expected = model.rollout(state, 10)
    assert expected.abs().max() == 1                                             # the clamp is reached
    assert torch.equal(loaded.rollout(state, 10), expected)
    assert torch.equal(cell_network.diffusion_rollout(model, state, 10, plan="dense"), expected)
    settings = cli.settings_from(cli_arguments(["--clamp-state"]), rd)
    assert settings.clamp_state is True and rd.new_model(settings).clamp_state is True
    assert cli.settings_from(cli_arguments([]), rd).clamp_state is False


def cli_arguments(flags):
    """``train rd``'s settings flags, parsed."""
    parser = argparse.ArgumentParser()
    cli.add_settings_arguments(parser, rd)
    return parser.parse_args(flags)


def test_bad_options_and_states_are_refused():
    with pytest.raises(ValueError, match="diffusion_max"):
        rdm.ReactionDiffusionNCA(diffusion_max=0.5)        # above the stable limit 0.375
    with pytest.raises(ValueError, match="channels"):
        rdm.ReactionDiffusionNCA(channels=2)
    with pytest.raises(ValueError, match=r"\[batch, 32"):
        rdm.ReactionDiffusionNCA().step(torch.zeros(1, 4, 8, 8))


def test_saved_rule_round_trips_and_a_wrong_diffusion_buffer_is_refused(tmp_path):
    model = random_rule()
    path = models.save(model, tmp_path / "rd.pt", {"task": "rd"})
    loaded = models.load(path)
    state = rdm.random_field(1, 12, model.channels, torch.Generator().manual_seed(0))
    assert torch.equal(loaded.rollout(state, 3), model.rollout(state, 3))
    model.diffusion.mul_(2)
    torch.save(model.state_dict(), tmp_path / "rd.pt")
    metadata = models.load_metadata(path)
    metadata.pop("weights_sha256"), metadata.pop("format_version")      # an older pair, without a hash
    (tmp_path / "rd.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="diffusion"), pytest.warns(UserWarning, match="predates weight hashes"):
        models.load(path)


# ----------------------------------------------------------------------------------- Gray-Scott

def test_gray_scott_keeps_the_uniform_state_and_grows_a_pattern_from_the_seed():
    uniform = torch.zeros(1, 2, 16, 16)
    uniform[:, 0] = 1
    assert torch.equal(rdm.gray_scott_step(uniform, 0.03, 0.062), uniform)     # u = 1, v = 0 is a fixed point
    state = rdm.gray_scott_seed(2, 48, torch.Generator().manual_seed(0))
    for _ in range(1500):
        state = rdm.gray_scott_step(state, torch.tensor([0.030, 0.020]), torch.tensor([0.062, 0.075]))
    spots, dead = state[0, 1], state[1, 1]
    assert spots.std() > 0.1 and spots.max() > 0.2        # (0.030, 0.062): spots spread over the grid
    assert dead.max() < 1e-6                              # (0.020, 0.075): killed faster than fed, it dies out


# ------------------------------------------------------------------------------- orientation etc.

def stripes(angle_degrees, period=8.0, size=64):
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    angle = math.radians(angle_degrees)
    wave = torch.cos(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
    return (0.5 + 0.4 * wave).expand(3, size, size)


def test_dominant_orientation_and_wavelength_of_stripes():
    for angle in (0, 45, 90, 135):
        found, strength = rdm.dominant_orientation(stripes(angle, period=8.0 if angle % 90 == 0 else 64 / 6 / 2 ** 0.5))
        assert abs((found - angle + 90) % 180 - 90) < 1 and strength > 0.95
    assert abs(rdm.wavelength(stripes(0, period=8.0)) - 8.0) < 0.01
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert rdm.dominant_orientation(noise)[1] < 0.1


def test_orientation_spread():
    assert rdm.orientation_spread([30.0] * 20) == pytest.approx(1.0)
    assert rdm.orientation_spread([30.0, 210.0]) == pytest.approx(1.0)       # 180 degrees apart: the same
    assert rdm.orientation_spread([9.0 * k for k in range(20)]) < 1e-6        # evenly spread over [0, 180)


# --------------------------------------------------------------------------------------- losses

def test_rotation_invariant_loss_with_one_angle_is_the_plain_loss():
    target = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    plain = losses.SlicedWassersteinLoss(target, colour_weight=1.0)(images, generator=torch.Generator().manual_seed(5))
    one = losses.RotationInvariantLoss(target, 1, colour_weight=1.0)(images, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(plain, one)


def test_rotation_invariant_loss_does_not_penalize_a_turned_texture():
    target = stripes(30, period=10.0, size=64).float()
    invariant = losses.RotationInvariantLoss(target, angles=8)
    plain = losses.SlicedWassersteinLoss(target)
    turned = torch.stack([losses.rotated(target, degrees, 48) for degrees in (0, 90, 45)])
    generator = torch.Generator().manual_seed(0)
    scores, plain_scores = invariant(turned, generator=generator), plain(turned, generator=generator)
    grey = invariant(torch.full((1, 3, 48, 48), 0.5), generator=generator)
    assert scores.max() < 0.1 * grey                       # every turn is as good as upright
    assert plain_scores[1:].min() > 10 * plain_scores[0]   # the plain loss punishes the turned ones
    with pytest.raises(ValueError, match="angles"):
        losses.RotationInvariantLoss(target, angles=0)


def test_rotated_quarter_turns_are_exact_and_other_angles_keep_the_texture():
    target = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(losses.rotated(target, 90), torch.rot90(target, 1, dims=(-2, -1)))
    assert torch.equal(losses.rotated(target, 0, 24)[:, 16:, 16:], target[:, :8, :8])     # tiled, not resized
    turned = losses.rotated(target, 30)
    assert turned.shape == target.shape and abs(turned.mean() - target.mean()) < 0.05


# -------------------------------------------------------------------------------------- raycast

def sphere_volume(size=48, radius=0.5, density=0.2):
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij")
    return (torch.sqrt(x * x + y * y + z * z) < radius).float() * density


def test_raycaster_renders_a_sphere_with_the_right_opacity_from_any_side():
    """A sphere of radius r voxels and density s: a ray at distance d from its centre crosses a chord
    2 sqrt(r^2 - d^2), so its opacity is 1 - exp(-s * chord)."""
    size, pixels = 48, 64
    density = sphere_volume(size)
    colour = torch.zeros(3, size, size, size)
    side = torch.linspace(-math.sqrt(3), math.sqrt(3), pixels)
    rows, cols = torch.meshgrid(side, side, indexing="ij")
    distance = torch.sqrt(rows ** 2 + cols ** 2) * (size - 1) / 2
    radius = 0.5 * (size - 1) / 2
    expected = 1 - torch.exp(-0.2 * 2 * torch.sqrt((radius ** 2 - distance ** 2).clamp(min=0)))
    for azimuth, elevation in [(0, 0), (30, 20), (200, -60)]:
        image, opacity = volume.raycast(density, colour, azimuth, elevation, pixels, samples=200)
        assert (opacity - expected).abs().mean() < 0.005
        inside = distance < 0.8 * radius
        assert (opacity - expected)[inside].abs().max() < 0.03
        assert torch.allclose(image, (1 - opacity).expand(3, -1, -1), atol=1e-5)     # black sphere on white


def test_raycaster_shows_the_background_through_an_empty_volume_and_the_colour_of_an_opaque_one():
    empty, _ = volume.raycast(torch.zeros(8, 8, 8), torch.rand(3, 8, 8, 8), pixels=16, background=0.3)
    assert torch.allclose(empty, torch.tensor(0.3))
    colour = torch.tensor([0.9, 0.2, 0.1]).reshape(3, 1, 1, 1).expand(3, 16, 16, 16).contiguous()
    image, opacity = volume.raycast(torch.full((16, 16, 16), 50.0), colour, 0, 0, pixels=33)
    assert opacity[16, 16] > 0.999 and torch.allclose(image[:, 16, 16], colour[:, 0, 0, 0], atol=1e-3)
    with pytest.raises(ValueError, match="density"):
        volume.raycast(torch.zeros(4, 4), torch.zeros(3, 4, 4))


# ----------------------------------------------------------------------------------------- task

def test_task_settings_refuse_bad_values():
    assert rd.Settings().engine == "fast"                       # helpers.fast.cell_network, or plain
    with pytest.raises(ValueError, match="engine"):
        rd.Settings(engine="fastest")
    with pytest.raises(ValueError, match="neither a shipped texture"):
        rd.Settings(target="no_such_texture")
    with pytest.raises(ValueError, match="angles"):
        rd.Settings(angles=0)
    with pytest.raises(ValueError, match="diffusion_max"):
        rd.Settings(diffusion_max=1.0)


def test_a_short_training_saves_a_model_with_its_measurements(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "EVAL_STEPS", 100)          # the measurement's rollouts, short for a test
    settings = rd.Settings(channels=4, hidden=8, size=16, target_size=32, iterations=3, min_steps=2, max_steps=4,
                           pool_size=8, lr_milestones=())
    model, metadata = rd.train(settings, out=tmp_path / "rd.pt", progress=False)
    assert metadata["task"] == "rd" and metadata["command"].startswith("python -m helpers train rd")
    measured = metadata["eval"]
    assert len(measured["orientations_degrees"]) == 20 and 0 <= measured["orientation_spread"] <= 1
    assert measured["passed"] is False                      # 3 iterations grow no texture, and the check says so
    loaded = models.load(tmp_path / "rd.pt")
    assert isinstance(loaded, rdm.ReactionDiffusionNCA) and loaded.channels == 4
    assert "FAIL" in rd.summary_line(metadata)
    # python -m helpers evaluate rd FILE --write measures it again and stores the same figures
    path = tmp_path / "rd.pt"
    stored = models.load_metadata(path)
    stored["eval"] = {"stale": True}
    models.write_atomically({path.with_suffix(".json"): json.dumps(stored).encode()})
    cli.main(["evaluate", "rd", str(path), "--write"])
    assert models.load_metadata(path)["eval"] == json.loads(json.dumps(measured))


def test_a_training_with_select_every_keeps_the_weights_whose_long_rollout_scores_best(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "EVAL_STEPS", 60)           # the long rollouts, short for a test
    settings = rd.Settings(channels=4, hidden=8, size=16, target_size=32, iterations=6, min_steps=2, max_steps=4,
                           pool_size=8, lr_milestones=(), select_every=2, learning_rate=0.1, seed=1)
    model, metadata = rd.train(settings, out=tmp_path / "rd.pt", progress=False)
    selected = metadata["selected"]
    assert [done for done, _ in selected["scores"]] == [2, 4, 6]
    assert selected["score"] == min(score for _, score in selected["scores"])
    assert selected["score"] < selected["scores"][-1][1]     # this seed's last weights are not its best: kept apart
    assert selected["score"] == pytest.approx(rd.selection_score(model, settings), abs=1e-4)   # the kept weights
    with pytest.raises(ValueError, match="select_every"):
        rd.Settings(select_every=-1)


@pytest.mark.parametrize("speed", [1.5, 1.6, 3.0])
def test_grow_refuses_a_diffusion_speed_at_or_beyond_the_stability_limit_instead_of_returning_nan(speed):
    """rd.grow with diffusion_speed at or past 2 / (fastest rate x 16/3) = 1.5 (the chapter's rates): the finest
    checkerboard would grow at every step until the state is NaN; grow refuses it, naming the limit."""
    rule = rd.new_model(rd.Settings(channels=4, hidden=8))
    weights = torch.Generator().manual_seed(0)
    with torch.no_grad():
        rule.reaction_out.weight.copy_(0.1 * torch.randn(rule.reaction_out.weight.shape, generator=weights))
    with pytest.raises(ValueError, match=r"diffusion_speed .* stability limit 1\.5"):
        rd.grow(rule, 16, 50, batch=1, diffusion_speed=speed)
    # just below the limit the same call returns a finite state, and unchecked steps at the limit do diverge
    assert torch.isfinite(rd.grow(rule, 16, 50, batch=1, diffusion_speed=1.4)).all()
    state = rdm.random_field(1, 16, 4, torch.Generator().manual_seed(0))
    checkerboard = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 0.01
    state = state + checkerboard
    with torch.no_grad():
        for _ in range(400):
            state = rule.step(state, diffusion_speed=3.0)
    assert not torch.isfinite(state).all() or state.abs().max() > 1e6


def load_spike_study():
    path = Path(__file__).resolve().parents[1] / "tools" / "rd_spike_study.py"
    spec = importlib.util.spec_from_file_location("rd_spike_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spike_study_variants_do_what_they_say():
    study = load_spike_study()
    torch.manual_seed(0)
    rule = rdm.ReactionDiffusionNCA(4, 8)
    torch.nn.init.normal_(rule.reaction_out.weight, std=2.0)          # a reaction strong enough to leave [-1, 1]
    field = rdm.random_field(2, 12, 4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rule.rollout(field, 20).abs().max() > 1
        conserved = study.conserving_rollout(rule, field, 20)
        assert torch.allclose(conserved.mean(dim=(2, 3)), field.mean(dim=(2, 3)), atol=1e-5)
    assert study.settings_for("clamp", 3, 0, "polka_dots").clamp_state
    assert not study.settings_for("plain", 3, 0, "polka_dots").clamp_state
    result = study.study("clamp", iterations=3, seed=0, target="polka_dots")
    assert len(result["records"]) == 3 and result["spikes"] == []
    assert all(value == 0 for record in result["records"] for value in record["after"])   # clamped: never overflows
