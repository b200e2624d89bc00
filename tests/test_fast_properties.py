"""A property test: on random small rules and states that hold NaN and inf, the fast engine
(helpers.fast, both backends) computes what the plain model (helpers.nca.NCA.rollout) computes,
non-finite values included: the same values are NaN, the same are +inf or -inf, and the finite
ones agree within 1e-5. States, and the gradients of the weight, the bias and the state.

A seeded loop (no hypothesis dependency): every case is reproducible from its index, printed
when it fails."""
import random

import pytest
import torch

from helpers import fast
from helpers.nca import NCA

CASES = 48
SIZES = [(3, 5), (7, 4), (5, 3), (4, 9), (3, 3), (9, 10), (6, 17)]
CHANNELS = {"laplacian_sobel": [3, 6, 12], "side": [4, 8, 12]}


def random_case(index: int) -> dict:
    pick = random.Random(index)
    filters = pick.choice(sorted(CHANNELS))
    return {
        "rule": {"channels": pick.choice(CHANNELS[filters]), "filters": filters,
                 "split_relu": pick.random() < 0.5, "update_per": pick.choice(["channel", "cell"]),
                 "update_rate": pick.choice([0.5, 0.5, 0.3, 1.0, 0.0])},
        "dtype": pick.choice([torch.float32, torch.float64]),
        "size": pick.choice(SIZES),
        "batch": pick.choice([1, 2]),
        "steps": pick.randint(1, 6),
        "nan": pick.randint(0, 2), "posinf": pick.randint(0, 1), "neginf": pick.randint(0, 1),
        "bad_weight": pick.random() < 0.15,       # sometimes a NaN or inf among the weights, too
        "seed": index,
    }


def make_inputs(case: dict):
    torch.manual_seed(case["seed"])
    model = NCA(**case["rule"]).to(case["dtype"])
    with torch.no_grad():
        model.update.weight.normal_(0.0, 0.05)
        model.update.bias.normal_(0.0, 0.05)
        if case["bad_weight"]:
            model.update.weight.view(-1)[torch.randint(model.update.weight.numel(), (1,))] = float(
                random.Random(case["seed"]).choice(["nan", "inf", "-inf"]))
    height, width = case["size"]
    state = torch.randn(case["batch"], model.channels, height, width, dtype=case["dtype"]) * 0.5
    state.view(-1)[torch.randint(state.numel(), (3,))] = 0.0          # exact zeros: relu's kink
    flat = state.view(-1)
    for kind, value in (("nan", float("nan")), ("posinf", float("inf")), ("neginf", float("-inf"))):
        flat[torch.randperm(flat.numel())[:case[kind]]] = value
    upstream = torch.randn(state.shape, dtype=case["dtype"])               # dL/d(final state)
    return model, state, upstream


def run(model, state, upstream, steps, seed, engine):
    start = state.clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    final = engine(model, start, steps, generator)
    grads = torch.autograd.grad(final, [model.update.weight, model.update.bias, start], upstream)
    return [final.detach(), *grads]


def assert_agree(expected: torch.Tensor, actual: torch.Tensor, what: str) -> None:
    """The same NaN positions, the same infinities (with their signs), finite values within 1e-5
    (relative to the largest finite value when that is above 1: float32 sums in another order)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    assert torch.equal(actual.isnan(), expected.isnan()), \
        f"{what}: NaN at {int(actual.isnan().sum())} values, plain at {int(expected.isnan().sum())}"
    assert torch.equal(actual.isinf(), expected.isinf()), \
        f"{what}: inf at {int(actual.isinf().sum())} values, plain at {int(expected.isinf().sum())}"
    infinite = expected.isinf()
    assert torch.equal(actual[infinite], expected[infinite]), f"{what}: infinities of another sign"
    finite = expected.isfinite()
    scale = max(1.0, float(expected[finite].abs().max())) if finite.any() else 1.0
    torch.testing.assert_close(actual[finite], expected[finite], atol=1e-5 * scale, rtol=1e-5,
                               msg=lambda message: f"{what}: {message}")


def plain(model, state, steps, generator):
    return model.rollout(state, steps, generator=generator)


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_fast_and_plain_agree_on_random_rules_with_non_finite_states(backend):
    checked = non_finite_cases = 0
    for index in range(CASES):
        case = random_case(index)
        model, state, upstream = make_inputs(case)

        def quick(model, state, steps, generator):
            return fast.rollout(model, state, steps, generator=generator, backend=backend)

        if backend == "kernel" and case["dtype"] == torch.float64:
            with pytest.raises(RuntimeError, match="float32"):      # the kernel runs float32 only
                quick(model, state, case["steps"], None)
            continue
        expected = run(model, state, upstream, case["steps"], case["seed"], plain)
        actual = run(model, state, upstream, case["steps"], case["seed"], quick)
        for name, want, got in zip(["final state", "weight grad", "bias grad", "state grad"], expected, actual):
            assert_agree(want, got, f"case {index} {case}, {name}")
        checked += 1
        non_finite_cases += not expected[0].isfinite().all()
    assert checked >= 15 and non_finite_cases >= 10       # the loop really tested something


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_one_nan_spreads_as_in_the_plain_model(backend):
    """The probe of issue 16: one NaN in a 64x64 state, 20 steps; plain turns every value NaN."""
    torch.manual_seed(0)
    model = NCA()
    with torch.no_grad():
        model.update.weight.normal_(0.0, 0.004)
        model.update.bias.normal_(0.0, 0.02)
    state = torch.zeros(1, 12, 32, 32)
    state[0, 0, 5, 5] = float("nan")
    with torch.no_grad():
        expected = model.rollout(state, 20, generator=torch.Generator().manual_seed(1))
        actual = fast.infer(model, state, 20, generator=torch.Generator().manual_seed(1), backend=backend)
    assert expected.isnan().all()
    assert actual.isnan().all()



@pytest.mark.parametrize("width", [13, 5])          # the last vector of 8 cells sticks out of the grid
def test_an_infinity_in_the_first_column_does_not_leak_through_lanes_outside_the_grid(width):
    """The kernel's lanes past the last column read the wrapped first column; their features must
    not reach dW (as 0 * inf = NaN) where the plain model has no such cell."""
    torch.manual_seed(0)
    model = NCA(update_rate=1.0)
    with torch.no_grad():
        model.update.weight.normal_(0.0, 0.05)
        model.update.bias.normal_(0.0, 0.05)
    state = torch.randn(1, 12, 4, width) * 0.5
    state[0, 0, 2, 0] = float("inf")
    upstream = torch.randn(state.shape)
    expected = run(model, state, upstream, 1, 0, plain)
    actual = run(model, state, upstream, 1, 0, lambda m, s, n, g: fast.rollout(m, s, n, generator=g, backend="kernel"))
    for name, want, got in zip(["final state", "weight grad", "bias grad", "state grad"], expected, actual):
        assert_agree(want, got, f"width {width}, {name}")
