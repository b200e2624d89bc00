"""helpers.fast.cell_network against the plain models of chapters 06-08: the same states (1e-5, relative
to the largest value where states grow beyond 1) and gradients (1e-4 of the largest entry), the same
random draws, NaN and inf where the plain model has them, and the checks that decide what ``auto`` runs."""
import math

import pytest
import torch

from helpers.fast import cell_network
from helpers.growing_nca import GrowingNCA, depthwise_filters
from helpers.manifold_nca import METHODS, ConditionedRule
from helpers.reaction_diffusion import ReactionDiffusionNCA, random_field

STATE_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4


def scrambled(module, scale=0.3, seed=0):
    """Random weights everywhere (the zero-initialised last layers too), so every path carries a signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


def blob_state(batch=3, size=18, channels=16, seed=1):
    """Living cells in a square in the middle, zeros around it: some cells grow, some die, many are dead."""
    generator = torch.Generator().manual_seed(seed)
    state = torch.zeros(batch, channels, size, size)
    low, high = size // 3, size - size // 3
    state[:, :, low:high, low:high] = torch.rand(batch, channels, high - low, high - low, generator=generator)
    return state


def weighted_sum(final):
    """A loss whose gradient differs in every entry (a plain sum would hide swapped entries)."""
    return (final * torch.linspace(-1, 1, final.numel()).view_as(final)).sum()


def relative_error(fast, plain):
    return ((fast - plain).abs().max() / plain.abs().max().clamp(min=1e-12)).item()


def assert_same(fast_results, plain_results, names):
    (fast_final, *fast_grads), (plain_final, *plain_grads) = fast_results, plain_results
    # float32 sums in another order differ by a few units in the last place of the largest values
    assert (fast_final - plain_final).abs().max().item() < STATE_TOLERANCE * max(1.0, plain_final.abs().max().item())
    for name, fast, plain in zip(names, fast_grads, plain_grads):
        assert plain.abs().max() > 0, f"the {name} gradient is zero: the test would not see a wrong one"
        assert relative_error(fast, plain) < GRADIENT_TOLERANCE, name


def growing_results(model, state, run, steps=8, seed=5):
    state = state.clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    final = run(model, state, steps, generator)
    grads = torch.autograd.grad(weighted_sum(final), [state, *model.parameters()])
    return [final.detach(), *grads], generator


@pytest.mark.parametrize("plan", ["sparse", "dense"])
def test_growing_matches_the_plain_model_and_its_random_draws(plan):
    model = scrambled(GrowingNCA(hidden=24), scale=0.2)
    plain, plain_rng = growing_results(model, blob_state(), lambda m, s, n, g: m.rollout(s, n, g))
    fast, fast_rng = growing_results(model, blob_state(),
                                     lambda m, s, n, g: cell_network.growing_rollout(m, s, n, g, plan=plan))
    assert_same(fast, plain, ["state", "sense weight", "sense bias", "act weight", "act bias"])
    # the generator was used exactly as the plain model uses it: the next draws agree
    assert torch.equal(torch.rand(5, generator=fast_rng), torch.rand(5, generator=plain_rng))
    alive = (plain[0][:, 3] > 0.1).float().mean().item()
    assert 0.01 < alive < 0.95, "the test grid should hold living and dead cells"


def test_turned_perception_filters_and_inference_match():
    model = scrambled(GrowingNCA(hidden=16), seed=3)
    filters = depthwise_filters(angle=0.7)
    plain = model.rollout(blob_state(), 6, torch.Generator().manual_seed(2), filters=filters)
    with torch.no_grad():
        fast = cell_network.growing_rollout(model, blob_state(), 6, torch.Generator().manual_seed(2),
                                            plan="sparse", filters=filters)
    assert not fast.requires_grad
    assert (fast - plain).abs().max().item() < STATE_TOLERANCE * max(1.0, plain.abs().max().item())


def test_two_rollouts_before_one_backward_keep_their_own_saved_tensors():
    """The memory arena is reused between rollouts only once a rollout's backward is done."""
    model = scrambled(GrowingNCA(hidden=16), seed=4)

    def two(run):
        first = run(blob_state(seed=1), torch.Generator().manual_seed(1))
        second = run(blob_state(seed=2), torch.Generator().manual_seed(2))
        return torch.autograd.grad(weighted_sum(first) + weighted_sum(second) ** 2, list(model.parameters()))

    plain = two(lambda s, g: model.rollout(s, 5, g))
    fast = two(lambda s, g: cell_network.growing_rollout(model, s, 5, g, plan="sparse"))
    for a, b in zip(fast, plain):
        assert relative_error(a, b) < GRADIENT_TOLERANCE


def test_a_rollout_backpropagated_twice_says_so():
    model = scrambled(GrowingNCA(hidden=8))
    final = cell_network.growing_rollout(model, blob_state(), 3, torch.Generator().manual_seed(0), plan="sparse")
    weighted_sum(final).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        weighted_sum(final).backward()


@pytest.mark.parametrize("plan", ["sparse", "dense"])
def test_nan_and_inf_appear_where_the_plain_model_has_them(plan):
    """A NaN in a dead cell's hidden channel and an inf in a living one: the plain model multiplies
    them by masks (NaN * 0 is NaN), so they spread in its own way; the fast rollout must agree."""
    model = scrambled(GrowingNCA(hidden=16), seed=6)
    state = blob_state()
    state[0, 7, 1, 1] = math.nan          # dead corner
    state[1, 9, 8, 8] = math.inf          # inside the living square
    plain, _ = growing_results(model, state, lambda m, s, n, g: m.rollout(s, n, g), steps=4)
    fast, _ = growing_results(model, state, lambda m, s, n, g: cell_network.growing_rollout(m, s, n, g, plan=plan),
                              steps=4)
    for name, a, b in zip(["state", "state grad", "W1", "b1", "W2", "b2"], fast, plain):
        assert torch.equal(a.isnan(), b.isnan()), name
        assert torch.equal(a.isinf(), b.isinf()), name
        finite = b.isfinite()
        if finite.any():
            scale = b[finite].abs().max().clamp(min=1e-12)
            assert ((a[finite] - b[finite]).abs().max() / scale).item() < GRADIENT_TOLERANCE, name
    assert plain[0].isnan().any() and any(g.isnan().any() for g in plain[2:]), "the test should produce NaN"


def test_values_that_could_overflow_run_the_plain_order_and_agree():
    """Finite states so large that a change could overflow float32: the bound sends those steps to
    every cell (as the plain model computes it), and the results agree, NaN included. (Two steps: by
    the third, values near 1e38 leave rounding errors of 1e31, and which cells stay alive is decided
    by rounding, in the plain model as in any other order of the same sums.)"""
    model = scrambled(GrowingNCA(hidden=16), seed=7, scale=1.0)
    state = blob_state()
    state[2, 5, 8, 8] = 3e37
    state[2, 3, 8, 8] = 1.0
    with torch.no_grad():
        plain = model.rollout(state, 2, torch.Generator().manual_seed(1))
        fast = cell_network.growing_rollout(model, state, 2, torch.Generator().manual_seed(1), plan="sparse")
    assert torch.equal(fast.isnan(), plain.isnan()) and torch.equal(fast.isinf(), plain.isinf())
    assert plain.isnan().any() and plain[plain.isfinite()].abs().max() > 1e38, "the test should overflow somewhere"
    finite = plain.isfinite()
    assert (fast[finite] - plain[finite]).abs().max().item() < STATE_TOLERANCE * plain[finite].abs().max().item()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("plan", ["sparse", "dense"])
def test_conditioned_rules_match_the_plain_rule(method, plan):
    rule = scrambled(ConditionedRule(method, hidden=16, code_size=6, hyper_hidden=8), scale=0.2)
    codes = torch.randn(3, 6, generator=torch.Generator().manual_seed(9))

    def results(run):
        state = blob_state().requires_grad_(True)
        code = codes.clone().requires_grad_(True)
        final = run(state, code, torch.Generator().manual_seed(3))
        grads = torch.autograd.grad(weighted_sum(final), [state, code, *rule.parameters()], allow_unused=True)
        return [final.detach(), *grads]

    plain = results(lambda s, c, g: rule.rollout(s, 6, c, g))
    fast = results(lambda s, c, g: cell_network.conditioned_rollout(rule, s, 6, c, g, plan=plan))
    names = ["state", "codes"] + [name for name, _ in rule.named_parameters()]
    # what the rollout does not use (the stamp's codes enter through the seed; the broadcast rule has
    # no hypernetwork) has no gradient, in both
    unused = [i for i, g in enumerate(plain) if g is None]
    assert unused == [i for i, g in enumerate(fast) if g is None]
    assert (1 + names.index("codes") in unused) == (method == "stamp")
    plain, fast = [g for g in plain if g is not None], [g for g in fast if g is not None]
    names = [name for i, name in enumerate(names) if i + 1 not in unused]
    assert_same(fast, plain, names)


@pytest.mark.parametrize("speeds", [{}, {"diffusion_speed": 1.4, "reaction_speed": 0.6}])
def test_reaction_diffusion_matches_the_plain_model(speeds):
    model = scrambled(ReactionDiffusionNCA(8, 16), scale=0.3)

    def results(run):
        state = random_field(2, 12, 8, torch.Generator().manual_seed(0)).requires_grad_(True)
        final = run(state)
        return [final.detach(), *torch.autograd.grad(weighted_sum(final), [state, *model.parameters()])]

    plain = results(lambda s: model.rollout(s, 7, **speeds))
    fast = results(lambda s: cell_network.diffusion_rollout(model, s, 7, plan="dense", **speeds))
    assert_same(fast, plain, ["state", "reaction_in weight", "reaction_in bias", "reaction_out weight"])


def test_reaction_diffusion_in_a_volume_runs_the_plain_model():
    model = scrambled(ReactionDiffusionNCA(4, 8))
    state = random_field(1, (6, 6, 6), 4, torch.Generator().manual_seed(0))
    assert torch.equal(cell_network.diffusion_rollout(model, state, 3), model.rollout(state, 3))


def test_auto_runs_what_passed_its_check(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cell_network, "_checked", {})
    before = torch.random.get_rng_state()
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with torch.no_grad():                 # a first call for inference: the checks still compare gradients
        assert cell_network.self_check(cpu, "sparse") is None and cell_network.diffusion_self_check(cpu) is None
    assert torch.equal(torch.random.get_rng_state(), before), "the checks must not move torch's global generator"
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32   # (turned off inside)
    assert cell_network.self_check(cpu, "sparse") is None
    assert cell_network.self_check(cpu, "dense") is None
    assert cell_network.diffusion_self_check(cpu) is None
    assert cell_network.choose("auto", cpu) == "sparse"
    assert cell_network.choose("dense", cpu) == "dense"
    monkeypatch.setattr(cell_network, "_checked", {})
    monkeypatch.setattr(cell_network, "run_self_check", lambda device, plan: "a broken kernel")
    assert cell_network.choose("auto", cpu) == "plain"
    model = scrambled(GrowingNCA(hidden=8))
    plain = model.rollout(blob_state(), 3, torch.Generator().manual_seed(0))
    assert torch.equal(cell_network.growing_rollout(model, blob_state(), 3, torch.Generator().manual_seed(0)), plain)


def test_the_check_fails_a_wrong_rollout(monkeypatch):
    """The self-check is a real comparison: a rollout that drops the last step's change fails it."""
    original = cell_network.network_forward

    def wrong(perceived, weights, groups, arena):
        hidden, change = original(perceived, weights, groups, arena)
        return hidden, change * 1.01

    monkeypatch.setattr(cell_network, "network_forward", wrong)
    assert "differs" in cell_network.run_self_check(torch.device("cpu"), "sparse")


def test_bad_input_gets_clear_errors():
    model = GrowingNCA(hidden=8)
    with pytest.raises(ValueError, match="plan must be one of"):
        cell_network.growing_rollout(model, blob_state(), 2, plan="fastest")
    with pytest.raises(ValueError, match="steps must be a whole number"):
        cell_network.growing_rollout(model, blob_state(), -1, plan="sparse")
    with pytest.raises(TypeError, match="float32 or float64"):
        cell_network.growing_rollout(model, blob_state().half(), 2, plan="sparse")
    with pytest.raises(TypeError, match="GrowingNCA"):
        cell_network.growing_rollout(ReactionDiffusionNCA(4, 8), blob_state(), 2)
    with pytest.raises(ValueError, match=r"\[batch, 16, height, width\]"):
        cell_network.growing_rollout(model, torch.zeros(1, 5, 8, 8), 2)
    with pytest.raises(TypeError, match="ReactionDiffusionNCA"):
        cell_network.diffusion_rollout(model, blob_state(), 2)
    with pytest.raises(ValueError, match="codes must be"):
        cell_network.conditioned_rollout(ConditionedRule("hyper", code_size=4), blob_state(), 2, torch.zeros(2, 4))


@pytest.mark.parametrize("method", [None, "hyper"])
def test_a_grid_without_living_cells_stays_empty_with_zero_gradients(method):
    """No cell chosen in any step (an empty selection, per image too): zeros, as in the plain model."""
    if method is None:
        model = scrambled(GrowingNCA(hidden=8))
        run = lambda s: cell_network.growing_rollout(model, s, 3, plan="sparse")          # noqa: E731
    else:
        model = scrambled(ConditionedRule(method, hidden=8, code_size=4, hyper_hidden=4))
        run = lambda s: cell_network.conditioned_rollout(model, s, 3, torch.ones(2, 4), plan="sparse")  # noqa: E731
    state = torch.zeros(2, 16, 10, 10, requires_grad=True)
    final = run(state)
    grads = torch.autograd.grad(weighted_sum(final), [state, *model.parameters()], allow_unused=True)
    assert final.abs().max() == 0
    assert all(g is None or g.abs().max() == 0 for g in grads)


def test_filters_that_differ_between_channels_match():
    """Any depthwise filters, not only the course's (same three kernels for every channel)."""
    model = scrambled(GrowingNCA(hidden=8), scale=0.2)
    filters = torch.randn(48, 1, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    plain, _ = growing_results(model, blob_state(), lambda m, s, n, g: m.rollout(s, n, g, filters=filters))
    fast, _ = growing_results(model, blob_state(), lambda m, s, n, g: cell_network.growing_rollout(
        m, s, n, g, plan="sparse", filters=filters))
    assert_same(fast, plain, ["state", "sense weight", "sense bias", "act weight", "act bias"])


# ------------------------------------------------------------------------------ the tasks train through it

def train_task(task, settings, model):
    from helpers import train
    torch.manual_seed(0)
    hooks = task.training_hooks(settings, model)
    history = train.train_pool(model, hooks.pop("make_samples"), hooks.pop("loss_fn"), settings, progress=False,
                               **{key: value for key, value in hooks.items() if key != "preview"})
    return history.losses, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["growing", "rd", "manifold"])
def test_the_tasks_train_through_the_fast_engine_by_default_with_the_plain_losses(name):
    """A few iterations of each task's own training, engine fast (the default) against engine plain:
    the same losses and weights, to rounding; the fast one really ran the fast rollout."""
    from helpers.tasks import growing, manifold, rd
    small = dict(iterations=3, batch_size=2, pool_size=4, min_steps=4, max_steps=6)
    runs = {}
    for engine in ("fast", "plain"):
        if name == "growing":
            settings = growing.Settings(target_size=10, margin=3, hidden=16, damage_count=1, engine=engine, **small)
            model = scrambled(growing.new_model(settings), scale=0.1)
            runs[engine] = train_task(growing, settings, model)
        elif name == "rd":
            settings = rd.Settings(size=12, target_size=16, channels=8, hidden=16, angles=2, engine=engine, **small)
            model = scrambled(rd.new_model(settings), scale=0.1)
            runs[engine] = train_task(rd, settings, model)
        else:
            settings = manifold.Settings(hidden=16, engine=engine, reseed_count=1, damage_count=0, **small)
            names = manifold.split(settings)[0][:2]
            torch.manual_seed(0)
            model = scrambled(manifold.new_model(settings, len(names)), scale=0.1)
            runs[engine] = (manifold.train_model(model, settings, names, progress=False).losses,
                            [p.detach().clone() for p in model.parameters()])
        assert settings.rollout() is (cell_network.fast_rollout if engine == "fast" else train_plain_rollout())
    (fast_losses, fast_weights), (plain_losses, plain_weights) = runs["fast"], runs["plain"]
    assert fast_losses == pytest.approx(plain_losses, rel=1e-4)
    for fast, plain in zip(fast_weights, plain_weights):
        assert (fast - plain).abs().max().item() < 1e-4 * max(1.0, plain.abs().max().item())


def train_plain_rollout():
    from helpers import train
    return train.plain_rollout


def test_float64_and_grids_that_are_not_square_match():
    model = scrambled(GrowingNCA(hidden=16), scale=0.2).double()
    state = torch.zeros(2, 16, 12, 21, dtype=torch.float64)
    state[:, :, 3:9, 5:15] = torch.rand(2, 16, 6, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain, _ = growing_results(model, state, lambda m, s, n, g: m.rollout(s, n, g))
    fast, _ = growing_results(model, state, lambda m, s, n, g: cell_network.growing_rollout(m, s, n, g, plan="sparse"))
    assert fast[0].dtype == torch.float64
    assert_same(fast, plain, ["state", "sense weight", "sense bias", "act weight", "act bias"])
    rd_model = scrambled(ReactionDiffusionNCA(6, 8), scale=0.3).double()
    field = random_field(2, (9, 14), 6, torch.Generator().manual_seed(0)).double().requires_grad_(True)
    a, b = rd_model.rollout(field, 5), cell_network.diffusion_rollout(rd_model, field, 5, plan="dense")
    assert b.dtype == torch.float64 and (a - b).abs().max() < 1e-12
    for ga, gb in zip(torch.autograd.grad(weighted_sum(a), [field, *rd_model.parameters()]),
                      torch.autograd.grad(weighted_sum(b), [field, *rd_model.parameters()])):
        assert relative_error(gb, ga) < 1e-10
