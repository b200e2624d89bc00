"""The fast engine refuses what the plain model refuses (dtypes, a rule's options), and its C++
kernel is never handed a buffer it would misread (issue 16)."""
import dataclasses

import pytest
import torch

from helpers import fast, nca
from helpers.fast import cpu_kernel, masks
from helpers.fast.kernel_engine import KernelWorkspace
from helpers.nca import NCA

BACKENDS = ["auto", "kernel", "torch"]


def small_model(**options):
    torch.manual_seed(0)
    model = NCA(**options)
    with torch.no_grad():
        model.update.weight.normal_(0.0, 0.01)
        model.update.bias.normal_(0.0, 0.02)
    return model


def state(dtype=torch.float32):
    return (torch.rand(1, 12, 6, 7, generator=torch.Generator().manual_seed(2)) * 4 - 2).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_and_a_state_of_different_dtypes_are_refused_as_by_plain(backend):
    """float64 model with a float32 state (and the reverse): the plain model raises, so does fast,
    with a message that says what to convert; nothing is cast silently."""
    for model_dtype, state_dtype in [(torch.float64, torch.float32), (torch.float32, torch.float64)]:
        model = small_model().to(model_dtype)
        with pytest.raises(RuntimeError):
            model.rollout(state(state_dtype), 3)
        with pytest.raises(TypeError, match=r"must have the state's dtype.*convert"):
            fast.rollout(model, state(state_dtype), 3, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_states_other_than_float32_and_float64_are_refused(dtype):
    """The plain model cannot run them either (its float masks promote a half state after one step; an
    integer state is refused by its state check)."""
    model = small_model().to(dtype) if dtype.is_floating_point else small_model()
    with pytest.raises((RuntimeError, ValueError)):
        model.rollout(state(dtype), 3)
    with pytest.raises((TypeError, ValueError), match="float32 or float64|floating point values"):
        fast.rollout(model, state(dtype), 3, backend="torch")


def test_the_kernel_never_reads_a_float64_buffer_as_float32():
    """Below the public checks, the kernel workspace itself refuses buffers of another dtype or shape
    (before, a float64 weight was read as float32: NaN states and gradients of 1e307, no error)."""
    model = small_model()
    rule = model.rule()
    work = KernelWorkspace(rule, model.filters, (1, 12, 6, 7), torch.float32, "cpu", None, "exact")
    with pytest.raises(TypeError, match="float32"):
        work.load_parameters(model.update.weight.detach().double(), model.update.bias.detach().double())
    work.load_parameters(model.update.weight.detach(), model.update.bias.detach())
    mask = work.draw_mask(None)
    out = work.new_state()
    with pytest.raises(TypeError, match="float32"):
        work.step(state(torch.float64), mask, out)
    with pytest.raises(ValueError, match=r"\(1, 12, 6, 7\)"):
        work.step(torch.zeros(1, 12, 6, 6), mask, out)              # a smaller buffer would be overrun
    with pytest.raises(TypeError, match="bool"):
        work.step(state(), mask.float(), out)
    with pytest.raises(TypeError, match="uint8|bool"):
        cpu_kernel.draw_rand_mask(torch.empty(5, dtype=torch.uint8), 0.5)
    # and the checked call gives the plain model's step
    expected = model(state(), mask=mask.float())
    torch.testing.assert_close(work.step(state(), mask, out), expected.detach(), atol=1e-6, rtol=0)


def tampered(rule: nca.Rule, **options) -> nca.Rule:
    """A frozen Rule changed behind its back (object.__setattr__), as a careless caller could."""
    rule = dataclasses.replace(rule)
    for name, value in options.items():
        object.__setattr__(rule, name, value)
    return rule


BAD_OPTIONS = [({"update_rate": 1.5}, ValueError), ({"update_rate": -0.5}, ValueError),
               ({"update_rate": float("nan")}, ValueError), ({"update_per": "pixel"}, ValueError),
               ({"split_relu": "no"}, TypeError), ({"split_relu": 1}, TypeError)]


@pytest.mark.parametrize("options, error", BAD_OPTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_run_rule_refuses_the_options_rule_refuses(options, error, backend):
    """fast.run_rule goes through nca.Rule's own checks, even for a Rule changed after it was made:
    before, update_rate 1.5 updated every value and update_per='pixel' ran per-cell masks."""
    model = small_model()
    with pytest.raises(error):
        nca.Rule(**options)
    rule = tampered(model.rule(), **options)
    with pytest.raises(error, match=next(iter(options))):
        fast.run_rule(rule, model.update.weight, model.update.bias, model.filters, state(), 3, backend=backend)


@pytest.mark.parametrize("options", [{"update_rate": 1.5}, {"update_rate": -0.5}, {"update_per": "pixel"}])
def test_a_model_whose_options_were_changed_is_refused_by_both_engines(options):
    model = small_model()
    for name, value in options.items():
        setattr(model, name, value)
    with pytest.raises(ValueError):
        model.rollout(state(), 3)
    for backend in BACKENDS:
        with pytest.raises(ValueError):
            fast.rollout(model, state(), 3, backend=backend)


def test_the_mask_shape_reinterprets_no_option():
    """masks.mask_shape used to read anything but 'channel' as per-cell."""
    with pytest.raises(ValueError, match="update_per"):
        masks.mask_shape(tampered(nca.Rule(), update_per="pixel"), (1, 12, 5, 5))
    assert masks.mask_shape(nca.Rule(update_per="cell"), (2, 12, 5, 4)) == (2, 1, 5, 4)
    assert masks.mask_shape(nca.Rule(), (2, 12, 5, 4)) == (2, 12, 5, 4)


@pytest.mark.parametrize("steps", [True, 2.0, -1, "3"])
def test_step_counts_the_plain_model_refuses_are_refused(steps):
    """Before, steps=True ran one step in the fast engine (the plain rollout refuses a bool)."""
    model = small_model()
    with pytest.raises(ValueError, match="steps"):
        model.rollout(state(), steps)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="steps"):
            fast.rollout(model, state(), steps, backend=backend)
    with pytest.raises(ValueError, match="checkpoint_every"):
        fast.rollout(model, state(), 3, checkpoint_every=True)
