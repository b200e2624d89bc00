"""The fast rollouts (helpers.fast) must compute what the plain model (helpers.nca.NCA) computes."""
import dataclasses

import pytest
import torch

from helpers import bench, fast, nca
from helpers.fast import cpu_kernel, masks
from helpers.fast.kernel_engine import KernelWorkspace
from helpers.fast.torch_engine import TorchWorkspace
from helpers.nca import NCA
from helpers.train import TrainConfig, train_pool

STEPS = 16

#: Both backends of helpers.fast: PyTorch operations, and the fused C++ kernel of helpers/fast/csrc.
BACKENDS = ["torch", "kernel"]


def make_model(seed=0, **kwargs):
    """A model whose 16 steps move the state by about 1 but do not blow it up (like a trained one:
    a rule that grows values exponentially would turn rounding differences into large ones)."""
    torch.manual_seed(seed)
    model = NCA(**kwargs)
    with torch.no_grad():
        model.update.weight.normal_(0.0, 0.004)
        model.update.bias.normal_(0.0, 0.02)
    return model


def seed_like_state(batch=2, height=20, width=24, channels=12):
    """Zeros with a random patch: exact zeros (relu at 0) and wrap-around at the border both occur."""
    state = torch.zeros(batch, channels, height, width)
    state[:, :, 2:7, -3:] = torch.rand(batch, channels, 5, 3, generator=torch.Generator().manual_seed(1)) - 0.3
    state[:, :, -1, :4] = 0.2
    return state


def loss_of(final):
    return final.square().mean() + final[:, :3].sum() * 1e-3


def plain_and_fast(model, state, steps=STEPS, seed=7, **options):
    """Run both with generators in the same state; return (plain, fast) final states and gradients."""
    results = []
    for run in (lambda g: model.rollout(state, steps, generator=g),
                lambda g: fast.rollout(model, state, steps, generator=g, **options)):
        final = run(torch.Generator().manual_seed(seed))
        gradients = torch.autograd.grad(loss_of(final), list(model.parameters()))
        results.append((final.detach(), gradients))
    return results


def assert_same_gradients(expected, actual, rtol=1e-4):
    for want, got in zip(expected, actual):
        assert want.shape == got.shape
        assert want.norm() > 0, "a zero gradient would make this comparison meaningless"
        assert (got - want).norm() <= rtol * want.norm(), f"relative error {(got - want).norm() / want.norm():.2e}"


def test_the_cpu_kernel_compiles_here():
    """CI installs a C++ compiler, so the kernel must build; elsewhere fast falls back to PyTorch."""
    assert cpu_kernel.available(), cpu_kernel.load_error()
    assert fast.uses_cpu_kernel() and not fast.uses_cpu_kernel("meta")
    # what the library is, it says itself (written once, in the C++ source)
    assert isinstance(cpu_kernel.version(), int) and cpu_kernel.version() >= 3
    assert cpu_kernel.max_channels() == 16
    assert f"return {cpu_kernel.version()};" in cpu_kernel.SOURCE.read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_run_the_frozen_rule_with_its_tensors(backend):
    """fast.run_rule takes the model's Rule and its weight, bias and filters, nothing else of the model."""
    model = make_model(filters="side", update_per="cell", update_rate=0.3)
    rule, state = model.rule(), seed_like_state()
    weight, bias = model.update.weight, model.update.bias
    plain = model.rollout(state, 6, generator=torch.Generator().manual_seed(4))
    quick = fast.run_rule(rule, weight, bias, model.filters, state, 6, generator=torch.Generator().manual_seed(4),
                          backend=backend)
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
    plain_grads = torch.autograd.grad(loss_of(plain), [weight, bias])
    assert_same_gradients(plain_grads, torch.autograd.grad(loss_of(quick), [weight, bias]))
    # the workspace of each backend is built from the same Rule
    workspace = {"torch": TorchWorkspace, "kernel": KernelWorkspace}[backend]
    work = fast.make_workspace(rule, model.filters, state, None, "exact", backend)
    assert type(work) is workspace and work.rule is rule and work.mask_shape == (2, 1, 20, 24)


def test_run_rule_checks_that_rule_tensors_and_state_fit():
    model = make_model()
    rule, weight, bias, filters = model.rule(), model.update.weight, model.update.bias, model.filters
    state = seed_like_state()
    with pytest.raises(TypeError, match="Rule"):
        fast.run_rule(model.config(), weight, bias, filters, state, 2)
    with pytest.raises(ValueError, match=r"weight is \[12, 24, 1, 1\], got \(12, 48, 1, 1\)"):
        fast.run_rule(dataclasses.replace(rule, split_relu=False), weight, bias, filters, state, 2)
    with pytest.raises(ValueError, match="bias"):
        fast.run_rule(rule, weight, bias[:3], filters, state, 2)
    with pytest.raises(ValueError, match="filters"):
        fast.run_rule(rule, weight, bias, filters[:6], state, 2)
    with pytest.raises(TypeError, match="dtype"):
        fast.run_rule(rule, weight.double(), bias.double(), filters, state, 2)
    with pytest.raises(ValueError, match="shaped"):
        fast.run_rule(rule, weight, bias, filters, state[:, :6], 2)


def test_more_channels_than_the_kernel_runs_fall_back_to_pytorch():
    model = make_model(channels=18)            # the kernel runs at most 16
    state = seed_like_state(channels=18)
    with pytest.raises(RuntimeError, match="at most 16 channels"):
        fast.rollout(model, state, 2, backend="kernel")
    (plain, plain_grads), (quick, quick_grads) = plain_and_fast(model, state, steps=4)
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
    assert_same_gradients(plain_grads, quick_grads)


@pytest.mark.parametrize("update_per", ["channel", "cell"])
def test_the_shared_exact_masks_are_update_mask_draw_for_draw(update_per):
    """Both backends' torch.rand path (masks.TorchRandMasks) draws what helpers.nca.update_mask draws."""
    rule = nca.Rule(update_rate=0.3, update_per=update_per)
    shape = (2, 12, 7, 9)
    draws = masks.TorchRandMasks(rule, shape, torch.Generator().manual_seed(8), "cpu")
    generator = torch.Generator().manual_seed(8)
    for dtype in (torch.float32, torch.bool):
        out = torch.empty(masks.mask_shape(rule, shape), dtype=dtype)
        expected = nca.update_mask(shape, rule.update_rate, rule.update_per, generator)
        assert torch.equal(draws.draw(out=out).float(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [{}, {"split_relu": False}, {"filters": "side", "update_per": "cell"},
                                     {"update_rate": 0.3}, {"padding": "zeros"},
                                     {"padding": "zeros", "split_relu": False, "filters": "side"}])
def test_fast_rollout_matches_plain_states_and_gradients(options, backend):
    model = make_model(**options)
    (plain, plain_grads), (quick, quick_grads) = plain_and_fast(model, seed_like_state(), backend=backend)
    assert 0.5 < (plain - seed_like_state()).abs().max() < 10, "the rollout should move the state, not explode"
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
    assert_same_gradients(plain_grads, quick_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("every", [1, 3, 5, 16, 40])
def test_checkpointed_rollout_gives_the_plain_gradients(every, backend):
    model = make_model()
    (plain, plain_grads), (quick, quick_grads) = plain_and_fast(model, seed_like_state(), checkpoint_every=every,
                                                                backend=backend)
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
    assert_same_gradients(plain_grads, quick_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", nca.PADDINGS)
def test_gradient_with_respect_to_the_state(backend, padding):
    model = make_model(padding=padding)
    start = seed_like_state(batch=1, height=9, width=11)
    gradients = []
    for run in (lambda s, g: model.rollout(s, 6, generator=g),
                lambda s, g: fast.rollout(model, s, 6, generator=g, checkpoint_every=4, backend=backend)):
        state = start.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss_of(run(state, torch.Generator().manual_seed(3))), state)
        gradients.append(gradient)
    assert_same_gradients([gradients[0]], [gradients[1]])


def test_global_random_generator_gives_the_same_masks_as_plain():
    model = make_model()
    state = seed_like_state()
    torch.manual_seed(11)
    with torch.no_grad():
        plain = model.rollout(state, 5)
    torch.manual_seed(11)
    with torch.no_grad():
        quick = fast.infer(model, state, 5)
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1,), (623,), (624,), (625,), (2, 12, 30, 41), (3, 1, 100, 100)])
@pytest.mark.parametrize("rate", [0.5, 0.3, 0.9, 0.0, 1.0])
def test_kernel_masks_are_torch_rand_masks_draw_for_draw(shape, rate):
    """The kernel's Mersenne Twister gives torch.rand(shape) < rate exactly, and leaves the generator
    where torch.rand leaves it (sizes on both sides of the twister's 624-word blocks)."""
    assert cpu_kernel.exact_masks_available()
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(2):                           # twice: the second draw starts mid-block
        mask = cpu_kernel.draw_rand_mask(torch.empty(shape, dtype=torch.bool), rate, ours)
        assert torch.equal(mask, torch.rand(shape, generator=theirs) < rate)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_kernel_masks_use_the_global_generator_like_torch_rand():
    torch.manual_seed(3)
    mask = cpu_kernel.draw_rand_mask(torch.empty(2, 5, 7, dtype=torch.bool), 0.5)
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(mask, torch.rand(2, 5, 7) < 0.5) and torch.equal(after, torch.rand(4))


def test_a_fast_rollout_leaves_the_generator_where_the_plain_one_does():
    model, state = make_model(), seed_like_state()
    plain_generator, fast_generator = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    with torch.no_grad():
        model.rollout(state, 7, generator=plain_generator)
        fast.infer(model, state, 7, generator=fast_generator)
    assert torch.equal(plain_generator.get_state(), fast_generator.get_state())


def test_without_the_twister_the_kernel_draws_masks_with_torch_rand(monkeypatch):
    """If a PyTorch release drew random numbers differently, the check fails and torch.rand is used."""
    monkeypatch.setattr(cpu_kernel, "_twister_matches", False)
    assert not cpu_kernel.exact_masks_available()
    (plain, plain_grads), (quick, quick_grads) = plain_and_fast(make_model(), seed_like_state(), backend="kernel")
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
    assert_same_gradients(plain_grads, quick_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("width", [24, 13, 3])      # whole vectors of 8 cells, a partial one, a tiny grid
@pytest.mark.parametrize("padding", nca.PADDINGS)
def test_inference_stores_nothing_and_matches(backend, width, padding):
    model = make_model(padding=padding)
    state = seed_like_state(width=width)
    with torch.no_grad():
        plain = model.rollout(state, STEPS, generator=torch.Generator().manual_seed(5))
        quick = fast.infer(model, state, STEPS, generator=torch.Generator().manual_seed(5), backend=backend)
    assert not quick.requires_grad
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_masks_update_about_half_the_values_and_differ_per_step(backend):
    model = make_model()
    state = torch.zeros(2, 12, 32, 32)
    with torch.no_grad():
        model.update.weight.zero_()
        model.update.bias.fill_(1.0)          # every update adds exactly 1 where the mask is on

        def run(steps, seed):
            return fast.infer(model, state, steps, masks="bits", generator=torch.Generator().manual_seed(seed),
                              backend=backend)

        one, many = run(1, 0), run(40, 0)
        again, other = run(40, 0), run(40, 1)
    assert set(one.unique().tolist()) == {0.0, 1.0}
    assert abs(one.mean().item() - 0.5) < 0.02
    assert abs(many.mean().item() - 20.0) < 0.3       # 40 steps, each value updated half the time
    assert many.std().item() > 1.0                   # masks are not the same at every step
    assert 2.0 < many.std().item() < 4.0              # binomial(40, 1/2): std sqrt(10) = 3.16, no correlations
    assert torch.equal(many, again) and not torch.equal(many, other)   # the generator decides the masks


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_masks_train_like_exact_masks(backend):
    model = make_model()
    state = seed_like_state()
    final = fast.rollout(model, state, 8, masks="bits", generator=torch.Generator().manual_seed(2), backend=backend)
    gradients = torch.autograd.grad(loss_of(final), list(model.parameters()))
    assert all(torch.isfinite(g).all() and g.norm() > 0 for g in gradients)


def test_without_the_kernel_auto_falls_back_to_pytorch(monkeypatch):
    monkeypatch.setenv("DSOS_CPU_KERNEL", "0")
    cpu_kernel.reset()
    try:
        assert not fast.uses_cpu_kernel() and "DSOS_CPU_KERNEL" in cpu_kernel.load_error()
        (plain, plain_grads), (quick, quick_grads) = plain_and_fast(make_model(), seed_like_state())
        torch.testing.assert_close(quick, plain, atol=1e-5, rtol=0)
        assert_same_gradients(plain_grads, quick_grads)
        with pytest.raises(RuntimeError, match="DSOS_CPU_KERNEL"):
            fast.rollout(make_model(), seed_like_state(), 2, backend="kernel")
    finally:
        monkeypatch.delenv("DSOS_CPU_KERNEL")
        cpu_kernel.reset()
    assert cpu_kernel.available()


def test_a_kernel_that_does_not_compile_says_why(monkeypatch, tmp_path):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernel, "SOURCE", broken)
    monkeypatch.setenv("DSOS_CACHE", str(tmp_path / "cache"))
    cpu_kernel.reset()
    try:
        assert cpu_kernel.load() is None
        assert "could not compile" in cpu_kernel.load_error() and "broken.cpp" in cpu_kernel.load_error()
    finally:
        monkeypatch.undo()
        cpu_kernel.reset()


def test_the_kernel_refuses_what_it_cannot_run():
    model = make_model()
    with pytest.raises(RuntimeError, match="float32"):
        fast.rollout(model.double(), seed_like_state().double(), 2, backend="kernel")
    with pytest.raises(ValueError, match="backend"):
        fast.rollout(make_model(), seed_like_state(), 2, backend="gpu")
    # backend="auto" runs float64 with PyTorch operations instead, and still matches plain
    model = make_model().double()
    with torch.no_grad():
        plain = model.rollout(seed_like_state().double(), 4, generator=torch.Generator().manual_seed(1))
        quick = fast.infer(model, seed_like_state().double(), 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(quick, plain, atol=1e-12, rtol=0)


def test_make_rollout_trains_like_the_plain_rollout():
    """train_pool draws its masks from the global generator: with the fast rollout plugged in, the
    same seed must give the same losses as with the plain one."""
    def make_samples(count):
        return {"state": seed_like_state(batch=count, height=12, width=12)}

    def loss_fn(final, batch):
        return (final[:, :3] - 0.25).square().mean()

    config = TrainConfig(iterations=5, batch_size=2, pool_size=4, min_steps=4, max_steps=8, learning_rate=1e-2)
    histories = []
    for rollout in (None, fast.make_rollout(checkpoint_every=3), fast.make_rollout(backend="torch")):
        histories.append(train_pool(make_model(), make_samples, loss_fn, config, rollout=rollout, progress=False))
    plain, quick, quick_torch = (torch.tensor(history.losses) for history in histories)
    assert len(quick) == 5 and quick.std() > 0
    torch.testing.assert_close(quick, plain, rtol=1e-4, atol=0)
    torch.testing.assert_close(quick_torch, plain, rtol=1e-4, atol=0)


def test_double_backward_through_the_same_rollout_is_refused():
    model = make_model()
    final = fast.rollout(model, seed_like_state(), 3)
    loss_of(final).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already"):
        loss_of(final).backward()


def test_bad_input_gets_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match="shaped"):
        fast.rollout(model, torch.zeros(2, 5, 8, 8), 3)
    with pytest.raises(ValueError, match="checkpoint_every"):
        fast.rollout(model, torch.zeros(1, 12, 8, 8), 3, checkpoint_every=0)
    with pytest.raises(ValueError, match="masks"):
        fast.make_rollout(masks="random")
    with pytest.raises(ValueError, match="update_rate 0.5"):
        fast.rollout(make_model(update_rate=0.3), torch.zeros(1, 12, 8, 8), 3, masks="bits")
    with pytest.raises(ValueError, match="steps"):
        fast.rollout(model, torch.zeros(1, 12, 8, 8), -1)
    with pytest.raises(TypeError, match="NCA"):
        fast.rollout(torch.nn.Conv2d(12, 12, 1), torch.zeros(1, 12, 8, 8), 3)


def test_zero_steps_returns_the_state():
    state = seed_like_state()
    assert fast.rollout(make_model(), state, 0) is state


def test_benchmark_prints_its_table(capsys):
    rows = bench.main(["--small", "--repeats", "1", "--configs", "mst"])
    printed = capsys.readouterr().out
    assert "train iter" in printed and "plain" in printed and "fast, checkpoint 8" in printed
    assert "the loss alone" in printed and "C++ kernel" in printed
    assert {row["variant"] for row in rows} == set(bench.variants(torch.device("cpu")))
    assert "fast, PyTorch ops" in {row["variant"] for row in rows}
    plain = next(row for row in rows if row["variant"] == "plain")
    assert plain["speedup"] == pytest.approx(1.0)
    assert all(row["train_s"] > 0 and row["updates_per_s"] > 0 for row in rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_padding_is_what_lies_beyond_the_border(backend):
    """One bright cell at the left edge: with wrap-around the grid's last column (its neighbour
    across the border) feels it after one step; with zero padding the last column does not."""
    state = torch.zeros(1, 12, 8, 8)
    state[:, :, 3, 0] = 1.0
    right_column = {}
    for padding in nca.PADDINGS:
        model = make_model(padding=padding, update_rate=1.0)    # every value updates: no random mask
        with torch.no_grad():
            plain = model(state)
            quick = fast.infer(model, state, 1, backend=backend)
        torch.testing.assert_close(quick, plain, atol=1e-6, rtol=0)
        right_column[padding] = plain[:, :, 3, -1]
    with torch.no_grad():
        untouched = make_model(padding="zeros", update_rate=1.0)(torch.zeros(1, 12, 8, 8))[:, :, 3, -1]
    assert (right_column["circular"] - untouched).abs().max() > 1e-4    # the wrapped neighbour was felt
    torch.testing.assert_close(right_column["zeros"], untouched)        # nothing comes across the edge
