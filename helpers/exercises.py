"""The learner's exercises: one check per exercise, against a reference in helpers.

A chapter's exercise is three cells:

* the **exercise cell**: a stub the learner completes, ``raise NotImplementedError("<one-line task>")``;
* the **check cell**: ``exercises.check("01.div_backward", div_backward)`` calls the learner's function
  on random and edge-case inputs, compares it with the reference and prints a verdict: *done*, *not
  attempted yet* (the stub still raises ``NotImplementedError``) or *wrong*, with the input, what was
  expected, what came back and a hint. It never raises because of the learner's code, so "Run All"
  runs through a notebook whose exercises are not done;
* the **solution cell**, hidden by default (``#@title`` first line and ``cellView: form`` metadata for
  Colab, ``jupyter.source_hidden`` for JupyterLab, Notebook 7 and VS Code): it defines the answer
  and checks it with ``strict=True``, which raises ``AssertionError`` unless the answer is right, so
  the tests fail when a solution breaks.

Every exercise is registered once in ``EXERCISES`` with its reference, its inputs, its tolerance, a
hint and a few planted wrong answers (classic mistakes) that tests/test_exercises.py checks are caught.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import reaction_diffusion, toys
from .export.quantize import quantize_state

SOLUTION_TITLE = "#@title Solution (double-click to show)"
#: The metadata that hides a solution cell's source: Colab's form view, and JupyterLab's / VS Code's flag.
SOLUTION_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}}
STATUSES = ("done", "not attempted", "wrong")


@dataclass(frozen=True)
class Case:
    """One input for an exercise: the positional arguments and a short description shown in verdicts."""
    args: tuple
    label: str = "random input"


@dataclass(frozen=True)
class Exercise:
    """An exercise: what to write, the reference answer, the inputs it is checked on, and how.

    ``cases(generator)`` returns the inputs (random ones drawn from ``generator``, and edge cases);
    ``run(function, *args)``, when given, turns a call into the values compared (e.g. values and
    gradients); ``mistakes`` maps a name to a planted wrong answer, a classic mistake the check must
    catch (tests/test_exercises.py checks that it does)."""
    id: str
    task: str
    reference: Callable
    cases: Callable[[torch.Generator], list[Case]]
    hint: str
    outputs: tuple[str, ...] = ()
    mistakes: dict[str, Callable] = field(default_factory=dict)
    rtol: float = 1e-7
    atol: float = 1e-9
    run: Callable | None = None

    def result_of(self, function: Callable, args: tuple):
        arguments = copy.deepcopy(args)            # a function that changes its inputs cannot spoil the next call
        return self.run(function, *arguments) if self.run else function(*arguments)


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``status`` is one of ``STATUSES``; ``message`` is what the learner reads."""
    exercise: str
    status: str
    message: str

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------- comparing

class _Mismatch(Exception):
    """Raised inside the comparison with a sentence that says what differs."""


def _as_tensor(value, where: str) -> torch.Tensor:
    if value is None:
        raise _Mismatch(f"{where} is None: did the function forget to `return` it?")
    if isinstance(value, bool):
        raise _Mismatch(f"{where} is a bool ({value}), expected a number or a tensor")
    try:
        return torch.as_tensor(value).detach().cpu().to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise _Mismatch(f"{where} is a {type(value).__name__}, not a number or a tensor ({error})") from None


def _compare(expected, got, where: str, rtol: float, atol: float) -> None:
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            raise _Mismatch(f"{where or 'the result'} should be a tuple of {len(expected)} values, "
                            f"got a {type(got).__name__}")
        if len(got) != len(expected):
            raise _Mismatch(f"{where or 'the result'} should hold {len(expected)} values, got {len(got)}")
        for index, (one_expected, one_got) in enumerate(zip(expected, got)):
            _compare(one_expected, one_got, f"{where}[{index}]" if where else f"value {index}", rtol, atol)
        return
    expected_tensor = _as_tensor(expected, where or "the result")
    got_tensor = _as_tensor(got, where or "the result")
    if got_tensor.shape != expected_tensor.shape:
        raise _Mismatch(f"{where or 'the result'} has shape {tuple(got_tensor.shape)}, expected "
                        f"{tuple(expected_tensor.shape)}")
    close = torch.isclose(got_tensor, expected_tensor, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        first = tuple(int(i) for i in (~close).nonzero()[0])
        at = f" at index {list(first)}" if first else ""
        count = f" ({int((~close).sum())} of {close.numel()} entries differ)" if close.numel() > 1 else ""
        raise _Mismatch(f"{where or 'the result'}{at}: expected {_number(expected_tensor[first])}, "
                        f"got {_number(got_tensor[first])}{count}")


def _number(value) -> str:
    value = float(value)
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _show(value, limit: int = 10) -> str:
    """A short, readable rendering of an input or output."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_show(item, limit) for item in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        return _number(value)
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().reshape(-1)
        if value.dtype == torch.bool:
            shown = [str(bool(item)) for item in flat[:limit]]
        else:
            shown = [_number(item) for item in flat[:limit]]
        more = f", ... ({flat.numel()} values)" if flat.numel() > limit else ""
        return f"tensor{list(value.shape)}[{', '.join(shown)}{more}]"
    if isinstance(value, float):
        return _number(value)
    return repr(value)


def _call_text(exercise: Exercise, function_name: str, case: Case) -> str:
    # Only the learner's arguments: a case may carry more, used by the exercise's ``run`` (e.g. a loss's weights).
    names = list(inspect.signature(exercise.reference).parameters)
    shown = [f"{name}={_show(arg)}" for name, arg in zip(names, case.args)]
    return f"{function_name}({', '.join(shown)})"


def _name_outputs(exercise: Exercise, message: str) -> str:
    for index, name in enumerate(exercise.outputs):
        message = message.replace(f"value {index}", f"value {index} ({name})", 1)
    return message


# ---------------------------------------------------------------------------------- checking

def get(exercise_id: str) -> Exercise:
    """The registered exercise ``exercise_id``; a clear error for an unknown one."""
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}; the registered ones are {', '.join(sorted(EXERCISES))}")
    return EXERCISES[exercise_id]


def evaluate(exercise_id: str, function: Callable) -> Verdict:
    """Run ``function`` on every case of the exercise and compare it with the reference. Never raises
    because of ``function``: a stub is "not attempted", any other exception or difference is "wrong"."""
    exercise = get(exercise_id)
    name = getattr(function, "__name__", "your function")
    if not callable(function):
        return Verdict(exercise_id, "wrong", f"❌ {exercise_id}: expected a function, got a "
                                              f"{type(function).__name__}. Pass the function itself, without ().")
    cases = exercise.cases(torch.Generator().manual_seed(0))
    for number, case in enumerate(cases, start=1):
        expected = exercise.result_of(exercise.reference, case.args)
        got_text = "-"
        try:
            got = exercise.result_of(function, case.args)
        except NotImplementedError:
            return Verdict(exercise_id, "not attempted",
                           f"⬜ {exercise_id}: not attempted yet.\n   Task: {exercise.task}\n"
                           f"   Complete `{name}` in the cell above (replace the `raise NotImplementedError` "
                           f"line), run that cell, then run this one again.")
        except Exception as error:  # the learner's code failed: that is a verdict, not a crash of the notebook
            problem = f"it raised {type(error).__name__}: {error}"
        else:
            got_text = _show(got)
            try:
                _compare(expected, got, "", exercise.rtol, exercise.atol)
                continue
            except _Mismatch as mismatch:
                problem = _name_outputs(exercise, str(mismatch))
        return Verdict(exercise_id, "wrong",
                       f"❌ {exercise_id}: not right yet, on input {number} of {len(cases)} ({case.label}):\n"
                       f"   call:     {_call_text(exercise, name, case)}\n"
                       f"   expected: {_show(expected)}\n"
                       f"   got:      {got_text}\n"
                       f"   what differs: {problem}\n"
                       f"   hint: {exercise.hint}")
    return Verdict(exercise_id, "done", f"✅ {exercise_id}: done. `{name}` agrees with the reference on all "
                                        f"{len(cases)} inputs ({_case_summary(cases)}).")


def _case_summary(cases: list[Case]) -> str:
    random_count = sum(case.label == "random input" for case in cases)
    return f"{random_count} random, {len(cases) - random_count} edge cases"


def check(exercise_id: str, function: Callable, strict: bool = False) -> None:
    """Print the verdict on the learner's ``function`` (done / not attempted yet / wrong, with a hint).

    ``strict=True`` (the solution cells) raises an ``AssertionError`` unless it is done."""
    if not callable(function):
        raise TypeError(f"check({exercise_id!r}, ...) takes your function itself (its name, without brackets), got "
                        f"{function!r} ({type(function).__name__})")
    verdict = evaluate(exercise_id, function)
    print(verdict.message)
    if strict and verdict.status != "done":
        raise AssertionError(f"the solution of {exercise_id} does not pass its own check:\n{verdict.message}")


# ====================================================================== the exercises' inputs

def _floats(generator: torch.Generator, count: int, low: float = -3.0, high: float = 3.0) -> list[float]:
    return [low + (high - low) * float(value) for value in torch.rand(count, generator=generator, dtype=torch.float64)]


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


# ----------------------------------------------------------- 01 · differentiable programming

def dual_pow_reference(u: float, du: float, v: float, dv: float) -> tuple[float, float]:
    """u ** v for dual numbers (u > 0), with a variable exponent: u^v = exp(v log u), so its tangent is
    u^v (dv log u + v du / u)."""
    value = u ** v
    return value, value * (dv * math.log(u) + v * du / u)


def _dual_pow_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        u, = _floats(generator, 1, 0.2, 3.0)
        du, v, dv = _floats(generator, 3)
        cases.append(Case((u, du, v, dv)))
    return cases + [Case((2.0, 1.0, 3.0, 0.0), "a constant exponent: dv = 0"),
                    Case((2.0, 0.0, 0.5, 1.0), "a constant base: du = 0"),
                    Case((1.0, 0.7, 2.5, -1.3), "u = 1, where log u = 0"),
                    Case((1.7, 0.4, 0.0, 2.0), "v = 0")]


def div_backward_reference(x: float, y: float, upstream: float) -> tuple[float, float]:
    """The division gate z = x / y receives dL/dz = upstream and sends (dL/dx, dL/dy) to its inputs."""
    return upstream / y, -upstream * x / y ** 2


def _div_backward_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        x, upstream = _floats(generator, 2)
        y, = _floats(generator, 1, 0.3, 3.0)
        sign, = _floats(generator, 1, -1, 1)
        cases.append(Case((x, y if sign > 0 else -y, upstream)))
    return cases + [Case((0.0, 2.0, 1.5), "x = 0"), Case((3.0, -2.0, 1.0), "y negative, upstream 1"),
                    Case((1.2, 0.5, 0.0), "upstream 0: nothing flows back")]


def relu_weight_gradient_reference(x: torch.Tensor, z: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """dL/dW of a dense ReLU layer Y = relu(Z), Z = X W^T + b: Delta^T X with Delta = dL/dY * [Z > 0].

    The same as helpers.autodiff.dense_backward's weight gradient for a "relu" layer."""
    delta = grad_y * (z > 0).to(grad_y.dtype)
    return delta.T @ x


def _relu_weight_gradient_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for batch, n_in, n_out in [(5, 4, 3), (8, 2, 6), (3, 7, 2), (16, 5, 4)]:
        x = _randn(generator, batch, n_in)
        z = _randn(generator, batch, n_out)
        cases.append(Case((x, z, _randn(generator, batch, n_out))))
    x, grad_y = _randn(generator, 4, 3), _randn(generator, 4, 2)
    z = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [2.0, -0.5]], dtype=torch.float64)
    cases.append(Case((x, z, grad_y), "some Z exactly 0, where the ReLU's slope is taken as 0"))
    one = _randn(generator, 1, 3)
    cases.append(Case((one, torch.ones(1, 2, dtype=torch.float64), _randn(generator, 1, 2)), "a batch of one"))
    return cases


# -------------------------------------------------------------------------- 02 · gradient toys

def _run_pin(pin: Callable, params: torch.Tensor, pinned: torch.Tensor, weights: torch.Tensor):
    """Call ``pin`` inside a small loss and return what it used and the gradient that reached ``params``."""
    params = params.clone().requires_grad_(True)
    used = pin(params, pinned)
    if not isinstance(used, torch.Tensor):
        return used, None
    if used.requires_grad:
        (gradient,) = torch.autograd.grad((used * weights).sum(), params, allow_unused=True)
    else:
        gradient = None
    return used.detach(), torch.zeros_like(params) if gradient is None else gradient


def _pin_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for size in (3, 5, 8):
        pinned = torch.rand(size, generator=generator) < 0.5
        pinned[0], pinned[-1] = True, False      # at least one of each
        cases.append(Case((_randn(generator, size), pinned, _randn(generator, size))))
    return cases + [Case((_randn(generator, 4), torch.ones(4, dtype=torch.bool), _randn(generator, 4)),
                         "every entry pinned"),
                    Case((_randn(generator, 4), torch.zeros(4, dtype=torch.bool), _randn(generator, 4)),
                         "nothing pinned")]


def damped_step_reference(jacobian: torch.Tensor, residual: torch.Tensor, damping: float) -> torch.Tensor:
    """The damped least-squares step -J^T (J J^T + damping I)^-1 r, as helpers.toys.damped_step takes it."""
    system = jacobian @ jacobian.T + damping * torch.eye(len(residual), dtype=jacobian.dtype)
    return -jacobian.T @ torch.linalg.solve(system, residual)


def _damped_step_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, 2, n), _randn(generator, 2), damping))
             for n, damping in [(5, 0.1), (3, 1.0), (8, 0.01), (4, 2.0)]]
    return cases + [Case((_randn(generator, 2, 2), _randn(generator, 2), 0.5), "as many angles as equations"),
                    Case((_randn(generator, 2, 5), _randn(generator, 2), 1e6), "a huge damping: a small gradient step"),
                    Case((_randn(generator, 2, 5), torch.zeros(2, dtype=torch.float64), 0.3),
                         "on target already: r = 0")]


# ------------------------------------------------------------------- 03 · neural CA textures

def perceive_reference(state: torch.Tensor) -> torch.Tensor:
    """Chapter 03's perception of a state [B, 12, H, W]: each channel through its own fixed 3x3 filter
    (Laplacian on 0..3, Sobel-x on 4..7, Sobel-y on 8..11, unnormalized), the grid wrapping around;
    helpers.nca.perceive with helpers.nca.perception_filters()."""
    from .nca import perceive, perception_filters

    return perceive(state, perception_filters().to(state.dtype))


def _perceive_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((torch.randn(batch, 12, height, width, generator=generator),))
             for batch, height, width in [(1, 5, 5), (2, 6, 9), (3, 4, 7)]]
    corner = torch.zeros(1, 12, 6, 6)
    corner[0, :, 0, 0] = 1.0                             # one bright cell in the corner, in every channel
    ramp = torch.arange(7.0).repeat(1, 12, 5, 1)         # grows by 1 per cell to the right (and wraps)
    return cases + [Case((corner,), "one bright cell in the corner: its neighbours wrap around"),
                    Case((torch.full((2, 12, 4, 4), 0.3),), "a uniform grid: every filter sums to 0"),
                    Case((ramp,), "a ramp from left to right: only Sobel-x sees a slope inside")]


def split_signs_reference(values: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2C, H, W]: the positive parts relu(y) first, then the negative parts -relu(-y)
    (helpers.nca.split_signs); the two halves add back up to y."""
    from .nca import split_signs

    return split_signs(values)


def _split_signs_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((torch.randn(batch, channels, 3, 4, generator=generator),))
             for batch, channels in [(1, 24), (2, 5), (3, 12)]]
    return cases + [Case((torch.rand(1, 6, 2, 2, generator=generator) + 0.1,), "every value positive"),
                    Case((-torch.rand(1, 6, 2, 2, generator=generator) - 0.1,), "every value negative"),
                    Case((torch.zeros(1, 4, 2, 2),), "zeros: both parts 0")]


def stochastic_update_reference(state: torch.Tensor, delta: torch.Tensor, draws: torch.Tensor,
                                rate: float) -> torch.Tensor:
    """One stochastic step: a value takes its change ``delta`` where its uniform draw is below ``rate``
    (probability ``rate``) and keeps its old value elsewhere. ``draws`` is shaped like the mask: like
    the state (per channel) or [B, 1, H, W] (per cell, broadcast over the channels), as helpers.nca's
    update_mask and NCA.forward do it."""
    return state + delta * (draws < rate).to(state.dtype)


def _stochastic_update_cases(generator: torch.Generator) -> list[Case]:
    def random_case(shape, mask_shape, rate, label="random input"):
        return Case((torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator),
                     torch.rand(*mask_shape, generator=generator), rate), label)
    cases = [random_case((2, 12, 5, 5), (2, 12, 5, 5), 0.5), random_case((1, 12, 4, 6), (1, 12, 4, 6), 0.25),
             random_case((3, 12, 3, 3), (3, 12, 3, 3), 0.8)]
    state, delta = torch.randn(1, 12, 4, 4, generator=generator), torch.randn(1, 12, 4, 4, generator=generator)
    return cases + [random_case((2, 12, 4, 4), (2, 1, 4, 4), 0.5, "per cell: draws [B, 1, H, W]"),
                    Case((state, delta, torch.full((1, 12, 4, 4), 0.5), 0.5),
                         "every draw exactly at the rate: no value updates (draw < rate)"),
                    Case((state, delta, torch.rand(1, 12, 4, 4, generator=generator), 0.0),
                         "rate 0: nothing changes"),
                    Case((state, delta, torch.rand(1, 12, 4, 4, generator=generator), 1.0),
                         "rate 1: every value updates")]


# ------------------------------------------------------------------------ 04 · export shaders

def quantize_weights_reference(weights: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization with one scale: s = max|w| / (2^(bits-1) - 1), codes round(w / s).

    What helpers.export.quantize does to the 576 weights (and, separately, to the 12 biases)."""
    scale = weights.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(weights / scale), scale


def _quantize_weights_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((0.3 * _randn(generator, 12, 48), 8)), Case((_randn(generator, 40), 8)),
             Case((2.5 * _randn(generator, 6, 5), 4))]
    negative_largest = _randn(generator, 10).clamp(-1, 1)
    negative_largest[3] = -4.0
    # at 3 bits the largest code is 3: with 0.75 the largest magnitude the scale is exactly 0.25
    ties = torch.tensor([3.0, 0.5, -0.5, 1.5, -2.5, 2.5, 0.25], dtype=torch.float64) * 0.25
    return cases + [Case((negative_largest, 8), "the largest magnitude is a negative weight"),
                    Case((_randn(generator, 7), 2), "2 bits: codes -1, 0, 1"),
                    Case((ties, 3), "values exactly half-way between two codes (torch.round: to even)")]


def quantize_state_reference(state: torch.Tensor) -> torch.Tensor:
    """The 8-bit state: every value stored as the nearest of 255 levels q / 127, q in [-127, 127]."""
    return quantize_state(state)


def _half_levels(count: int) -> torch.Tensor:
    """float32 values v with 127 * v exactly half-way between two codes (where rounding rules differ)."""
    found = []
    for code in range(count * 3):
        value = torch.tensor((code + 0.5) / 127, dtype=torch.float32)
        if float(value * 127) == code + 0.5:
            found.append(value)
        if len(found) == count:
            break
    return torch.stack(found)


def _quantize_state_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((0.6 * torch.randn(1, 12, 4, 4, generator=generator),)) for _ in range(3)]
    beyond = torch.tensor([-3.0, -1.2, -1.0, 1.0, 1.01, 2.5])
    return cases + [Case((beyond,), "values beyond [-1, 1]"),
                    Case((torch.zeros(2, 3),), "the all-zero seed (zero is a level)"),
                    Case((torch.cat([_half_levels(4), -_half_levels(4)]),),
                         "values exactly half-way between two levels (torch.round: to even)")]


def framebuffer_pixel_reference(x: int, y: int, channel: int, width: int) -> tuple[int, int, int]:
    """Where the shader's frame buffer keeps ``channel`` of cell (x, y): tile k = channel // 4 is
    drawn at columns k*width ... k*width + width - 1, component channel % 4 (R, G, B, A)."""
    tile = channel // 4
    return tile * width + x, y, channel % 4


def _framebuffer_pixel_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        width = int(torch.randint(4, 65, (1,), generator=generator))
        x, y = (int(torch.randint(0, width, (1,), generator=generator)) for _ in range(2))
        cases.append(Case((x, y, int(torch.randint(0, 12, (1,), generator=generator)), width)))
    return cases + [Case((0, 0, 0, 16), "the first value of the first cell"),
                    Case((15, 9, 11, 16), "the last channel of the last column"),
                    Case((3, 2, 4, 16), "channel 4: the first of tile 1"),
                    Case((5, 1, 3, 8), "channel 3: the alpha of tile 0")]


# ------------------------------------------------------------------------------ 07 · NCA manifold

def broadcast_code_reference(perception: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Method (a), broadcast: every cell of image i reads its perception and image i's code.
    ``perception`` [batch, P, H, W], ``codes`` [batch, K] -> [batch, P + K, H, W], perception first
    (the order of helpers.manifold_nca's broadcast rule, whose first layer has the code's columns last)."""
    height, width = perception.shape[2:]
    return torch.cat([perception, codes[:, :, None, None].expand(-1, -1, height, width)], dim=1)


def _broadcast_code_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, batch, 6, size, size + 1), _randn(generator, batch, code)))
             for batch, size, code in [(3, 4, 5), (2, 6, 3), (4, 3, 8)]]
    return cases + [Case((_randn(generator, 1, 6, 4, 4), _randn(generator, 1, 5)), "a batch of one"),
                    Case((_randn(generator, 3, 6, 1, 1), _randn(generator, 3, 2)), "a grid of one cell"),
                    Case((_randn(generator, 2, 48, 5, 5), _randn(generator, 2, 12)), "the chapter's sizes: 48 + 12")]


def per_image_layer_reference(cells: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """Method (c), the hypernetwork's rules: image i's cells [N, I] through image i's own layer,
    cells @ W_i^T + b_i, for every image at once. ``cells`` [batch, N, I], ``weights`` [batch, O, I],
    ``biases`` [batch, O] -> [batch, N, O]; the product helpers.manifold_nca's ``change`` takes."""
    return torch.baddbmm(biases[:, None, :], cells, weights.transpose(1, 2))


def _per_image_layer_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, batch, cells, inputs), _randn(generator, batch, outputs, inputs),
                   _randn(generator, batch, outputs)))
             for batch, cells, inputs, outputs in [(3, 7, 5, 4), (2, 9, 6, 6), (4, 5, 3, 8)]]
    return cases + [Case((_randn(generator, 1, 6, 4), _randn(generator, 1, 2, 4), _randn(generator, 1, 2)),
                         "a batch of one"),
                    Case((_randn(generator, 3, 1, 4), _randn(generator, 3, 4, 4), _randn(generator, 3, 4)),
                         "one cell per image, a square layer"),
                    Case((torch.zeros(2, 5, 3, dtype=torch.float64), _randn(generator, 2, 4, 3),
                          _randn(generator, 2, 4)), "every cell zero: only the biases remain")]


def interpolate_reference(start: torch.Tensor, end: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` codes evenly spaced on the straight line from ``start`` to ``end`` [K], both included:
    [count, K], as helpers.tasks.manifold.interpolate gives them."""
    from .tasks import manifold  # here, not at the top: the exercises of other chapters do not need it

    return manifold.interpolate(start, end, count)


def _interpolate_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, size), _randn(generator, size), count))
             for size, count in [(12, 5), (4, 8), (7, 6)]]
    same = _randn(generator, 6)
    return cases + [Case((_randn(generator, 12), _randn(generator, 12), 2), "two codes: the two ends only"),
                    Case((same, same.clone(), 4), "start and end equal: every code the same"),
                    Case((torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 11),
                         "from 0 to 1 in steps of 0.1")]


# ------------------------------------------------------------------ 05 · minimum spanning tree

def kruskal_reference(points) -> list[tuple[int, int]]:
    """The Euclidean minimum spanning tree of ``points`` [n, 2], as sorted pairs (i, j) with i < j
    (helpers.tasks.mst.minimum_spanning_tree)."""
    from .tasks.mst import minimum_spanning_tree  # here: the other chapters' exercises do not need it

    return minimum_spanning_tree(points)


def _sorted_edges(kruskal: Callable, points) -> list[tuple[int, int]]:
    """What a learner's ``kruskal`` returns, in one order: each pair (small, large), the pairs sorted."""
    return sorted(tuple(sorted(int(index) for index in edge)) for edge in kruskal(points))


def _kruskal_cases(generator: torch.Generator) -> list[Case]:
    def points(count: int, scale: float = 99.0):
        return (torch.rand(count, 2, generator=generator, dtype=torch.float64) * scale).numpy()

    import numpy as np

    cases = [Case((points(count),)) for count in (5, 9, 15)]
    triangle = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0], [40.0, 40.0]])   # the 3rd shortest pair closes a cycle
    line = np.array([[0.0, 0.0], [7.0, 0.0], [1.0, 0.0], [20.0, 0.0], [12.0, 0.0]])
    return cases + [Case((np.array([[3.0, 4.0], [60.0, 80.0]]),), "two points: one edge"),
                    Case((triangle,), "a near triangle: the third shortest pair would close a cycle"),
                    Case((line,), "points on a line, not in order: each joined to its neighbours")]


def _kruskal_without_cycle_check(points) -> list[tuple[int, int]]:
    """A planted mistake: the n - 1 shortest pairs, whether or not they close a cycle."""
    import itertools

    import numpy as np

    pairs = sorted(itertools.combinations(range(len(points)), 2),
                   key=lambda pair: np.linalg.norm(np.subtract(points[pair[0]], points[pair[1]])))
    return pairs[:len(points) - 1]


def _nearest_neighbours(points) -> list[tuple[int, int]]:
    """A planted mistake: every point joined to its nearest neighbour (a forest, not always a tree)."""
    import numpy as np

    gaps = np.linalg.norm(np.asarray(points)[:, None] - np.asarray(points)[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    return sorted({tuple(sorted((i, int(np.argmin(row))))) for i, row in enumerate(gaps)})


def asymmetric_loss_reference(drawn: torch.Tensor, target: torch.Tensor, extra_ink_weight: float) -> torch.Tensor:
    """The mean over pixels of w (drawn - target)^2, w = extra_ink_weight where drawn > target, else 1
    (helpers.tasks.mst.asymmetric_loss)."""
    from .tasks.mst import asymmetric_loss

    return asymmetric_loss(drawn, target, extra_ink_weight)


def _asymmetric_loss_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for shape, weight in [((2, 1, 5, 5), 0.5), ((1, 1, 8, 6), 0.25), ((3, 1, 4, 4), 1.0)]:
        target = (torch.rand(shape, generator=generator, dtype=torch.float64) > 0.7).to(torch.float64)
        cases.append(Case((torch.rand(shape, generator=generator, dtype=torch.float64), target, weight)))
    target = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    target[..., 0, 0] = 1.0
    extra = target.clone()
    extra[..., 1, 1] = 1.0
    return cases + [Case((torch.zeros_like(target), target, 0.5), "one pixel of ink missing"),
                    Case((extra, target, 0.5), "one pixel of ink extra: half the price"),
                    Case((target.clone(), target, 0.5), "a perfect drawing: loss 0")]


def graph_verdict_reference(drawn: list, tree: list, count: int) -> tuple[float, float, float, float]:
    """(edge precision, edge recall, 1.0 if the drawn graph is exactly the tree, 1.0 if it has a cycle) of
    the ``drawn`` edges of ``count`` points against their minimum spanning tree ``tree``
    (helpers.tasks.mst_graphs.graph_scores)."""
    from .tasks.mst_graphs import graph_scores

    scores = graph_scores(set(map(tuple, drawn)), tree, count)
    return scores["edge_precision"], scores["edge_recall"], float(scores["exact"]), float(scores["cycle"])


def _run_graph_verdict(verdict: Callable, drawn, tree, count):
    """The learner's four answers as numbers (True and False count as 1 and 0)."""
    return tuple(float(value) for value in verdict(drawn, tree, count))


def _graph_verdict_cases(generator: torch.Generator) -> list[Case]:
    from .tasks.mst import minimum_spanning_tree
    from .tasks.mst_graphs import pairs

    cases = []
    for count in (6, 9, 12):
        points = (torch.rand(count, 2, generator=generator, dtype=torch.float64) * 99).numpy()
        tree = minimum_spanning_tree(points)
        others = [pair for pair in pairs(count) if pair not in tree]
        keep = torch.rand(len(tree), generator=generator) > 0.3           # most tree edges drawn ...
        extra = torch.randperm(len(others), generator=generator)[:2].tolist()   # ... and two wrong ones
        drawn = [edge for edge, kept in zip(tree, keep) if kept] + [others[index] for index in extra]
        cases.append(Case((drawn, tree, count)))
    tree = [(0, 1), (1, 2), (2, 3)]
    return cases + [Case((list(tree), tree, 4), "exactly the tree"),
                    Case(([], tree, 4), "nothing drawn: precision 1 by convention, recall 0"),
                    Case(([(0, 1), (1, 2), (0, 2)], tree, 4), "a triangle: a cycle, though point 3 is left out"),
                    Case(([(0, 1), (2, 3), (1, 2), (0, 3)], tree, 4), "the tree and one edge more: a cycle")]


def _verdict_with(precision_when_empty: float = 1.0, cycle=None):
    """A planted mistake in graph_verdict (see 05.graph_verdict)."""
    def verdict(drawn, tree, count):
        drawn, tree = set(map(tuple, drawn)), set(map(tuple, tree))
        right = len(drawn & tree)
        parent = list(range(count))

        def root(node):
            while parent[node] != node:
                node = parent[node]
            return node
        for i, j in drawn:
            parent[root(i)] = root(j)
        parts = len({root(node) for node in range(count)})
        has_cycle = cycle(drawn, count, parts) if cycle else len(drawn) > count - parts
        return (right / len(drawn) if drawn else precision_when_empty, right / len(tree), float(drawn == tree),
                float(has_cycle))
    return verdict


# ------------------------------------------------------------------------------ 06 · growing NCA

def alive_mask_reference(state: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] booleans: some cell of the 3x3 neighbourhood (itself included) has alpha (channel 3)
    above 0.1, as helpers.growing_nca.alive_mask says."""
    from .growing_nca import alive_mask  # here, not at the top: the exercises of other chapters do not need it

    return alive_mask(state)


def _alive_mask_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for batch, size in [(2, 6), (1, 9), (3, 5)]:
        state = torch.rand(batch, 16, size, size, generator=generator) * 0.3
        state[:, 3] *= (torch.rand(batch, size, size, generator=generator) < 0.25).float()   # a few live cells
        cases.append(Case((state,)))
    exact = torch.zeros(1, 16, 5, 5)
    exact[0, 3, 2, 2] = 0.1
    exact[0, 3, 0, 4] = 0.1001
    border = torch.zeros(1, 16, 4, 6)
    border[0, 3, 0, 0] = 0.5
    colour_only = torch.zeros(1, 16, 5, 5)
    colour_only[0, :3, 2, 2] = 0.9                    # colour but no alpha: not alive
    colour_only[0, 4:, 1, 1] = 0.9
    return cases + [Case((exact,), "alpha exactly 0.1 (not above it) and just above"),
                    Case((border,), "a live cell in a corner: its neighbours inside the grid only"),
                    Case((colour_only,), "colour and hidden channels high, alpha zero")]


def turned_kernels_reference(angle: float) -> torch.Tensor:
    """[3, 3, 3]: the identity, and the Sobel pair (divided by 8) turned by ``angle`` radians,
    (cos a Kx - sin a Ky, sin a Kx + cos a Ky), as helpers.growing_nca.perception_kernels."""
    from .growing_nca import perception_kernels

    return perception_kernels(angle)


def _turned_kernels_cases(generator: torch.Generator) -> list[Case]:
    return [Case((angle,)) for angle in _floats(generator, 4, -math.pi, math.pi)] + [
        Case((0.0,), "angle 0: the upright filters"), Case((math.pi / 2,), "a quarter turn"),
        Case((math.pi,), "a half turn: both gradients negated")]


def recovered_curve_reference(damaged_losses: torch.Tensor, twin_losses: torch.Tensor,
                              factor: float) -> torch.Tensor:
    """[T]: at each of T measured steps, the fraction of the B damaged states [T, B] whose loss is
    within ``factor`` x the loss of their undamaged twin at the SAME step (helpers.tasks.growing.regeneration)."""
    return (damaged_losses <= factor * twin_losses).to(damaged_losses.dtype).mean(dim=1)


def _recovered_curve_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for steps, count in [(6, 8), (11, 5), (4, 20)]:
        twin = 0.001 + 0.01 * torch.rand(steps, count, generator=generator, dtype=torch.float64)
        twin = twin.cumsum(dim=0)                      # twins that drift: the loss at the cut is no reference
        damaged = twin * (0.5 + 2 * torch.rand(steps, count, generator=generator, dtype=torch.float64))
        cases.append(Case((damaged, twin, 1.25)))
    twin = torch.full((3, 4), 0.002, dtype=torch.float64)
    return cases + [Case((twin * 1.25, twin, 1.25), "every damaged loss exactly at the bound: recovered"),
                    Case((twin * 3, twin, 2.0), "none recovered"),
                    Case((torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), 1.25),
                         "perfect states and twins (loss 0)")]


# ----------------------------------------------------------------------- 08 · reaction-diffusion

def gray_scott_step_reference(state: torch.Tensor, feed: float, kill: float) -> torch.Tensor:
    """One Gray-Scott step of a batch [B, 2, H, W] of (u, v) with D_u = 0.2, D_v = 0.1 (cells^2 per step):
    u += D_u lap(u) - u v^2 + feed (1 - u);  v += D_v lap(v) + u v^2 - (feed + kill) v
    (helpers.reaction_diffusion.gray_scott_step)."""
    return reaction_diffusion.gray_scott_step(state, feed, kill)


def _gray_scott_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for batch, height, width in [(1, 8, 8), (2, 6, 9), (3, 5, 5)]:
        state = torch.rand(batch, 2, height, width, generator=generator, dtype=torch.float64)
        feed, = _floats(generator, 1, 0.01, 0.06)
        kill, = _floats(generator, 1, 0.04, 0.07)
        cases.append(Case((state, feed, kill)))
    rest = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    rest[:, 0] = 1.0
    seeded = rest.clone()
    seeded[:, :, 2:4, 2:4] = 0.5
    return cases + [Case((rest, 0.03, 0.06), "u = 1, v = 0 everywhere: the resting state stays"),
                    Case((seeded, 0.03, 0.06), "a square of v in u: the reaction starts there"),
                    Case((seeded, 0.0, 0.0), "no feed and no kill: reaction and diffusion only")]


def _gray_scott_mistake(state, feed, kill, rates=(0.2, 0.1), removal="feed + kill", power=2, change_only=False):
    """A Gray-Scott step with a planted mistake (see 08.gray_scott_step)."""
    u, v = state[:, 0], state[:, 1]
    lap = reaction_diffusion.laplacian(state)
    reaction = u * v ** power
    removed = (feed + kill) if removal == "feed + kill" else kill
    du = rates[0] * lap[:, 0] - reaction + feed * (1 - u)
    dv = rates[1] * lap[:, 1] + reaction - removed * v
    change = torch.stack([du, dv], dim=1)
    return change if change_only else state + change


def laplacian_reference(field: torch.Tensor) -> torch.Tensor:
    """The isotropic 9-point Laplacian (edges 4/6, corners 1/6, centre -20/6) of every channel of
    field [B, C, H, W] on a grid that wraps around (helpers.reaction_diffusion.laplacian)."""
    return reaction_diffusion.laplacian(field)


def _stencil_conv(field: torch.Tensor, stencil: list, scale: float = 6.0, padding: str = "circular",
                  mix_channels: bool = False) -> torch.Tensor:
    """Each channel convolved with a 3x3 stencil (a planted mistake can pad with zeros or mix channels)."""
    channels = field.shape[1]
    kernel = torch.tensor(stencil, dtype=field.dtype) / scale
    padded = torch.nn.functional.pad(field, (1, 1, 1, 1), mode=padding)
    if mix_channels:
        return torch.nn.functional.conv2d(padded, kernel.expand(channels, channels, 3, 3))
    return torch.nn.functional.conv2d(padded, kernel.expand(channels, 1, 3, 3), groups=channels)


_NINE_POINT = [[1.0, 4.0, 1.0], [4.0, -20.0, 4.0], [1.0, 4.0, 1.0]]
_FIVE_POINT = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]


def _laplacian_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, batch, channels, height, width),))
             for batch, channels, height, width in [(1, 1, 7, 7), (2, 3, 6, 9), (1, 4, 5, 5), (3, 2, 8, 4)]]
    corner = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    corner[..., 0, 0] = 1.0
    checkerboard = ((torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2 * 2 - 1).to(torch.float64)
    return cases + [Case((corner,), "one hot cell in a corner: its neighbours wrap around the edges"),
                    Case((torch.full((1, 2, 5, 5), 0.7, dtype=torch.float64),), "a constant field: no diffusion"),
                    Case((checkerboard[None, None],), "the finest checkerboard (the stencil's largest eigenvalue)")]


def turn_gap_reference(step: Callable, state: torch.Tensor) -> torch.Tensor:
    """The largest |turn(step(state)) - step(turn(state))|, turn = one quarter turn of the grid plane
    (torch.rot90(x, 1, dims=(-2, -1))): 0 for a step that has no favourite direction."""
    turn = lambda x: torch.rot90(x, 1, dims=(-2, -1))        # noqa: E731 (a one-line name for the turn)
    return (turn(step(state)) - step(turn(state))).abs().max()


class _Step:
    """A step function with a readable name in the check's verdicts."""

    def __init__(self, name: str, function: Callable):
        self.name, self.function = name, function

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        return self.function(state)

    def __repr__(self) -> str:
        return self.name


def _small_rd_rule(state: torch.Tensor) -> torch.Tensor:
    """One step of a small neural reaction-diffusion rule with fixed random weights (float64)."""
    rule = reaction_diffusion.ReactionDiffusionNCA(state.shape[1], 8).to(state.dtype)
    weights = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for parameter in rule.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=weights, dtype=state.dtype))
        return rule.step(state)


_STEPS = {
    "diffusion (9-point)": lambda s: s + 0.2 * _stencil_conv(s, _NINE_POINT),
    "diffusion (5-point)": lambda s: s + 0.2 * _stencil_conv(s, _FIVE_POINT, scale=1.0),
    "a neural RD rule": _small_rd_rule,
    "shift one cell right": lambda s: torch.roll(s, 1, dims=-1),
    "add the x-gradient (Sobel)": lambda s: s + 0.1 * _stencil_conv(s, [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0],
                                                                        [-1.0, 0.0, 1.0]], scale=8.0),
}


def _turn_gap_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_Step(name, step), _randn(generator, 2, 4, 7, 7))) for name, step in _STEPS.items()]
    tall = _randn(generator, 1, 4, 6, 9)
    constant = torch.full((1, 4, 5, 5), 0.3, dtype=torch.float64)
    return cases + [
        Case((_Step("shift one cell right", _STEPS["shift one cell right"]), tall),
             "a grid that is not square: the turn changes its shape"),
        Case((_Step("diffusion (9-point)", _STEPS["diffusion (9-point)"]), tall),
             "diffusion on a grid that is not square"),
        Case((_Step("shift one cell right", _STEPS["shift one cell right"]), constant),
             "a constant state: even a shift commutes with the turn")]


def _turned(angle: float, sign: float = 1.0, scale: float = 8.0) -> torch.Tensor:
    """Turned kernels with a planted mistake (see 06.turned_kernels)."""
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / scale
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1.0
    c, s = math.cos(angle), sign * math.sin(angle)
    return torch.stack([identity, c * sobel_x - s * sobel_x.T, s * sobel_x + c * sobel_x.T])


def _texture_filters(swap: bool = False, normalized: bool = False) -> torch.Tensor:
    """Chapter 03's [12, 1, 3, 3] filters, with a planted mistake (see 03.perceive)."""
    laplacian = torch.tensor([[1.0, 2.0, 1.0], [2.0, -12.0, 2.0], [1.0, 2.0, 1.0]]) / (16 if normalized else 1)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / (8 if normalized else 1)
    first, second = (sobel_x.T, sobel_x) if swap else (sobel_x, sobel_x.T)
    return torch.stack([laplacian] * 4 + [first] * 4 + [second] * 4)[:, None]


def _texture_perceive(state: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(state, (1, 1, 1, 1), mode="circular")
    return torch.nn.functional.conv2d(padded, filters.to(state.dtype), groups=12)


# ======================================================================== the registry

EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in [
    Exercise(
        "01.dual_pow",
        "return (value, tangent) of u ** v for dual numbers u + du·ε and v + dv·ε (u > 0).",
        dual_pow_reference, _dual_pow_cases,
        "write u ** v as exp(v * log u) and apply the chain rule; both inputs carry a tangent, so there "
        "are two terms: dv * log(u) and v * du / u, both multiplied by the value u ** v.",
        outputs=("value", "tangent"),
        mistakes={
            "the constant-exponent rule": lambda u, du, v, dv: (u ** v, v * u ** (v - 1) * du),
            "the exponent's term only": lambda u, du, v, dv: (u ** v, u ** v * math.log(u) * dv),
            "a tangent not multiplied by u ** v": lambda u, du, v, dv: (u ** v, dv * math.log(u) + v * du / u),
        }),
    Exercise(
        "01.div_backward",
        "return (dL/dx, dL/dy) for the gate z = x / y, given x, y and the upstream gradient dL/dz.",
        div_backward_reference, _div_backward_cases,
        "z = x * y**-1: the multiply gate sends x the upstream gradient times the other factor 1/y; "
        "y gets the upstream gradient times dz/dy = -x / y**2 (mind the sign and the square).",
        outputs=("dL/dx", "dL/dy"),
        mistakes={
            "a lost sign": lambda x, y, g: (g / y, g * x / y ** 2),
            "y not squared": lambda x, y, g: (g / y, -g * x / y),
            "the upstream gradient forgotten": lambda x, y, g: (1 / y, -x / y ** 2),
            "the multiply gate's rule": lambda x, y, g: (g * y, g * x),
        }),
    Exercise(
        "01.relu_weight_gradient",
        "return dL/dW [outputs, inputs] of a dense ReLU layer, given X [batch, inputs], Z and dL/dY [batch, outputs].",
        relu_weight_gradient_reference, _relu_weight_gradient_cases,
        "first the unary gate: Delta = dL/dY * relu'(Z), with relu'(Z) = 1 where Z > 0 and 0 elsewhere (Z = 0 "
        "too); then the multiply gates, summed over the batch: dL/dW = Delta^T X, shaped [outputs, inputs] like W.",
        mistakes={
            "the ReLU's mask forgotten": lambda x, z, g: g.T @ x,
            "a missing transpose (X^T Delta)": lambda x, z, g: x.T @ (g * (z > 0)),
            "the batch averaged instead of summed": lambda x, z, g: (g * (z > 0)).T @ x / len(x),
            "slope 1 at Z = 0": lambda x, z, g: (g * (z >= 0)).T @ x,
        }),
    Exercise(
        "02.pin",
        "return params with the entries where `pinned` is True cut from the graph (same values, no gradient).",
        toys.pin, _pin_cases,
        "params.detach() has the same values with no graph behind them; torch.where(mask, a, b) takes each entry "
        "from a where mask is True and from b elsewhere. The values must not change, only where gradient flows.",
        outputs=("the values used", "the gradient that reaches params"),
        run=_run_pin,
        mistakes={
            "nothing detached": lambda p, m: p * 1,
            "everything detached": lambda p, m: p.detach(),
            "the mask inverted": lambda p, m: torch.where(m, p, p.detach()),
            "pinned entries set to zero": lambda p, m: torch.where(m, torch.zeros_like(p), p),
        }),
    Exercise(
        "02.damped_step",
        "return the damped least-squares step -J^T (J J^T + damping I)^-1 r, given J [2, n], r [2] and the damping.",
        damped_step_reference, _damped_step_cases,
        "build the 2x2 system J @ J.T + damping * torch.eye(2), solve it for r with torch.linalg.solve, multiply "
        "by -J.T. The step goes against the residual (minus sign), and the damping goes on the diagonal only.",
        mistakes={
            "the sign": lambda j, r, d: j.T @ torch.linalg.solve(j @ j.T + d * torch.eye(2, dtype=j.dtype), r),
            "the damping forgotten": lambda j, r, d: -torch.linalg.pinv(j) @ r,
            "damping added to every entry": lambda j, r, d: -j.T @ torch.linalg.solve(j @ j.T + d, r),
            "a plain gradient step": lambda j, r, d: -j.T @ r / d,
        }),
    Exercise(
        "03.perceive",
        "return [B, 12, H, W]: channels 0-3 through the Laplacian, 4-7 Sobel-x, 8-11 Sobel-y, the grid wrapping "
        "around.",
        perceive_reference, _perceive_cases,
        "stack the 12 kernels ([LAPLACIAN] * 4 + [SOBEL_X] * 4 + [SOBEL_Y] * 4) into [12, 1, 3, 3]; pad with "
        "F.pad(state, (1, 1, 1, 1), mode=\"circular\") (wrap around, not zeros); then F.conv2d(padded, filters, "
        "groups=12), one filter per channel. The filters are used as written: no division by 16 or 8.",
        rtol=1e-5, atol=1e-5,
        mistakes={
            "zero padding": lambda s: torch.nn.functional.conv2d(
                s, _texture_filters(), padding=1, groups=12),
            "Sobel-x and Sobel-y swapped": lambda s: _texture_perceive(s, _texture_filters(swap=True)),
            "normalized filters (/ 16 and / 8)": lambda s: _texture_perceive(s, _texture_filters(normalized=True)),
            "the Laplacian on every channel": lambda s: _texture_perceive(
                s, _texture_filters()[:1].repeat(12, 1, 1, 1)),
            "the kernels flipped (a true convolution)": lambda s: _texture_perceive(
                s, _texture_filters().flip(-1, -2)),
        }),
    Exercise(
        "03.split_signs",
        "return [B, 2C, H, W]: relu(values) for the C positive parts, then -relu(-values) for the C negative parts.",
        split_signs_reference, _split_signs_cases,
        "torch.cat([F.relu(values), -F.relu(-values)], dim=1): the positive parts first, then the negative parts "
        "WITH their sign (each is <= 0), joined along the channels (dim=1), so that the two halves add up to values.",
        mistakes={
            "the negative part's sign lost": lambda v: torch.cat([torch.relu(v), torch.relu(-v)], dim=1),
            "the halves swapped": lambda v: torch.cat([-torch.relu(-v), torch.relu(v)], dim=1),
            "the values and their magnitudes": lambda v: torch.cat([v, v.abs()], dim=1),
            "joined along the batch (dim=0)": lambda v: torch.cat([torch.relu(v), -torch.relu(-v)], dim=0),
        }),
    Exercise(
        "03.stochastic_update",
        "return the next state: state + delta where the draw is below rate, the old state elsewhere.",
        stochastic_update_reference, _stochastic_update_cases,
        "the mask is (draws < rate) as 0/1 floats (.float()); multiply the CHANGE by it and add: state + delta * "
        "mask. A per-cell draws [B, 1, H, W] broadcasts over the 12 channels by itself.",
        mistakes={
            "updates where the draw is above the rate": lambda s, d, u, r: s + d * (u > r).float(),
            "the expected change, no randomness": lambda s, d, u, r: s + d * r,
            "the mask on the state, not the change": lambda s, d, u, r: s * (u < r).float() + d,
            "draw <= rate": lambda s, d, u, r: s + d * (u <= r).float(),
        }),
    Exercise(
        "04.quantize_weights",
        "return (codes, scale): scale = max|w| / (2**(bits-1) - 1) and codes = round(w / scale).",
        quantize_weights_reference, _quantize_weights_cases,
        "the scale maps the largest MAGNITUDE (use .abs().max(), a negative weight can be the largest) to the "
        "largest code 2**(bits-1) - 1 (127 for 8 bits); round to the nearest code with torch.round.",
        outputs=("codes", "scale"),
        mistakes={
            "128 levels per side": lambda w, b: (torch.round(w / (w.abs().max() / 2 ** (b - 1))),
                                                 w.abs().max() / 2 ** (b - 1)),
            "the largest value, not magnitude": lambda w, b: (torch.round(w / (w.max() / (2 ** (b - 1) - 1))),
                                                              w.max() / (2 ** (b - 1) - 1)),
            "truncation instead of rounding": lambda w, b: (torch.trunc(w / (w.abs().max() / (2 ** (b - 1) - 1))),
                                                            w.abs().max() / (2 ** (b - 1) - 1)),
            "rounding halves away from zero": lambda w, b: (
                torch.sign(w) * torch.floor((w / (w.abs().max() / (2 ** (b - 1) - 1))).abs() + 0.5),
                w.abs().max() / (2 ** (b - 1) - 1)),
        }),
    Exercise(
        "04.quantize_state",
        "return the state with every value replaced by the nearest level q / 127 (q an integer in [-127, 127]).",
        quantize_state_reference, _quantize_state_cases,
        "clamp to [-1, 1] first (the codes stop at ±127), multiply by 127, torch.round (halves to even, as the "
        "C program and the shader do), divide by 127. The result is a float state, not the integer codes.",
        rtol=0.0, atol=1e-7,
        mistakes={
            "no clamp": lambda s: torch.round(s * 127) / 127,
            "the codes, not the levels": lambda s: torch.round(s.clamp(-1, 1) * 127),
            "128 levels per side": lambda s: torch.round(s.clamp(-1, 1) * 128) / 128,
            "rounding halves up": lambda s: torch.floor(s.clamp(-1, 1) * 127 + 0.5) / 127,
        }),
    Exercise(
        "04.framebuffer_pixel",
        "return (column, row, component) of the frame-buffer pixel value that holds `channel` of cell (x, y).",
        framebuffer_pixel_reference, _framebuffer_pixel_cases,
        "4 values per pixel: channels 0-3 are tile 0, 4-7 tile 1, 8-11 tile 2 (tile = channel // 4); tile k "
        "starts at column k * width, so the column is k * width + x; the component is channel % 4.",
        outputs=("column", "row", "component"),
        mistakes={
            "three values per pixel": lambda x, y, c, w: ((c // 3) * w + x, y, c % 3),
            "interleaved tiles": lambda x, y, c, w: (3 * x + c // 4, y, c % 4),
            "the tile and component swapped": lambda x, y, c, w: ((c % 4) * w + x, y, c // 4),
        }),
    Exercise(
        "07.broadcast_code",
        "return [batch, P + K, H, W]: each image's perception [P, H, W] with its own code [K] copied into every cell.",
        broadcast_code_reference, _broadcast_code_cases,
        "codes[:, :, None, None] has shape [batch, K, 1, 1]; .expand(-1, -1, H, W) copies it to every cell "
        "without copying memory; torch.cat([perception, that], dim=1) puts it after the P perceptions.",
        mistakes={
            "the code before the perception": lambda p, c: torch.cat(
                [c[:, :, None, None].expand(-1, -1, *p.shape[2:]), p], dim=1),
            "the first image's code for every image": lambda p, c: torch.cat(
                [p, c[:1, :, None, None].expand(len(p), -1, *p.shape[2:])], dim=1),
            "the code in the middle cell only (that is the stamp)": lambda p, c: torch.cat(
                [p, torch.nn.functional.pad(c[:, :, None, None], [p.shape[3] // 2, (p.shape[3] - 1) // 2,
                                                                   p.shape[2] // 2, (p.shape[2] - 1) // 2])], dim=1),
        }),
    Exercise(
        "07.per_image_layer",
        "return [batch, N, O]: image i's cells [N, I] times image i's weights [O, I] transposed, plus its bias [O].",
        per_image_layer_reference, _per_image_layer_cases,
        "a batched matrix product: cells @ weights.transpose(1, 2) multiplies each image's cells by its own "
        "W_i^T ([batch, N, I] @ [batch, I, O]); biases[:, None, :] adds image i's bias to each of its N cells.",
        mistakes={
            "a missing transpose": lambda c, w, b: torch.bmm(c, w) + b[:, None, :],
            "the first image's rule for every image": lambda c, w, b: c @ w[0].T + b[0],
            "the bias forgotten": lambda c, w, b: c @ w.transpose(1, 2),
        }),
    Exercise(
        "07.interpolate",
        "return [count, K]: count codes evenly spaced from start to end [K], start first and end last.",
        interpolate_reference, _interpolate_cases,
        "weights t = torch.linspace(0, 1, count) (both ends included) as a column [count, 1]; each code is "
        "(1 - t) * start + t * end, so t = 0 gives start and t = 1 gives end.",
        mistakes={
            "the end left out": lambda a, b, n: a + (torch.arange(n, dtype=a.dtype) / n)[:, None] * (b - a),
            "start and end swapped": lambda a, b, n: torch.linspace(0, 1, n, dtype=a.dtype)[:, None] * a
            + (1 - torch.linspace(0, 1, n, dtype=a.dtype)[:, None]) * b,
            "one code too few": lambda a, b, n: a + torch.linspace(0, 1, n - 1, dtype=a.dtype)[:, None] * (b - a),
        }),
    Exercise(
        "06.alive_mask",
        "return [B, 1, H, W] booleans: True where some cell of the 3x3 neighbourhood has alpha (channel 3) > 0.1.",
        alive_mask_reference, _alive_mask_cases,
        "take the alpha channel with state[:, 3:4] (keep the channel axis), the largest value of each 3x3 "
        "neighbourhood with F.max_pool2d(..., kernel_size=3, stride=1, padding=1), then compare: strictly > 0.1.",
        mistakes={
            "the cell alone, no neighbourhood": lambda s: s[:, 3:4] > 0.1,
            "the red channel, not alpha": lambda s: torch.nn.functional.max_pool2d(s[:, 0:1], 3, 1, 1) > 0.1,
            "at least 0.1 (>=)": lambda s: torch.nn.functional.max_pool2d(s[:, 3:4], 3, 1, 1) >= 0.1,
            "any channel": lambda s: torch.nn.functional.max_pool2d(s.amax(1, keepdim=True), 3, 1, 1) > 0.1,
        }),
    Exercise(
        "06.turned_kernels",
        "return the [3, 3, 3] kernels: identity, then Sobel-x / 8 and Sobel-y / 8 turned by `angle` radians.",
        turned_kernels_reference, _turned_kernels_cases,
        "Kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] / 8 and Ky = Kx.T; a turn mixes the pair as a 2D rotation "
        "mixes (x, y): Kx' = cos(a) Kx - sin(a) Ky, Ky' = sin(a) Kx + cos(a) Ky. The identity does not turn.",
        rtol=1e-6, atol=1e-7,
        mistakes={
            "the turn the other way": lambda a: _turned(a, sign=-1),
            "Sobel not divided by 8": lambda a: _turned(a, scale=1.0),
            "the identity left out": lambda a: _turned(a)[1:],
            "degrees taken for radians": lambda a: _turned(math.radians(a)),
        }),
    Exercise(
        "06.recovered_curve",
        "return [T]: at each step, the fraction of damaged states whose loss <= factor x their twin's loss then.",
        recovered_curve_reference, _recovered_curve_cases,
        "compare each damaged loss with its OWN twin at the SAME step (the same row of twin_losses, not the "
        "first row), <= so that the bound itself counts, then average the booleans over the states (dim=1).",
        mistakes={
            "against the twin at the moment of the cut": lambda d, t, f: (d <= f * t[:1]).double().mean(dim=1),
            "averaged over time, not states": lambda d, t, f: (d <= f * t).double().mean(dim=0),
            "strictly below the bound": lambda d, t, f: (d < f * t).double().mean(dim=1),
            "medians compared, not states": lambda d, t, f: (d.median(1).values <= f * t.median(1).values).double(),
        }),
    Exercise(
        "05.kruskal",
        "return the minimum spanning tree of points [n, 2] as pairs (i, j): Kruskal's algorithm with a union-find.",
        kruskal_reference, _kruskal_cases,
        "sort all pairs by length, shortest first; keep a pair unless find(i) == find(j) (its points are already "
        "connected: it would close a cycle), and after keeping it join the two roots; stop at n - 1 edges.",
        run=_sorted_edges,
        mistakes={
            "no cycle check (the n - 1 shortest pairs)": _kruskal_without_cycle_check,
            "each point joined to its nearest neighbour": _nearest_neighbours,
            "one edge too few": lambda points: kruskal_reference(points)[:-1],
        }),
    Exercise(
        "05.asymmetric_loss",
        "return the mean over pixels of w (drawn - target)^2, with w = extra_ink_weight where drawn > target, else 1.",
        asymmetric_loss_reference, _asymmetric_loss_cases,
        "error = drawn - target; torch.where(error > 0, extra_ink_weight, 1.0) is the weight of each pixel (extra "
        "ink is error > 0); multiply it by error ** 2 (the weight goes on the squared error), then .mean().",
        mistakes={
            "the weights swapped": lambda d, t, w: torch.where(d - t > 0, 1.0, w).mul((d - t) ** 2).mean(),
            "the weight inside the square": lambda d, t, w: (torch.where(d - t > 0, w, 1.0) * (d - t)).pow(2).mean(),
            "summed, not averaged": lambda d, t, w: (torch.where(d - t > 0, w, 1.0) * (d - t) ** 2).sum(),
            "the symmetric loss": lambda d, t, w: ((d - t) ** 2).mean(),
        }),
    Exercise(
        "05.graph_verdict",
        "return (edge precision, edge recall, is exactly the tree, has a cycle) of drawn edges against the tree.",
        graph_verdict_reference, _graph_verdict_cases,
        "precision = drawn edges in the tree / drawn edges (1 when nothing is drawn), recall = tree edges drawn / "
        "tree edges; a graph with c connected components (union-find) has a cycle when it has more than "
        "count - c edges.",
        run=_run_graph_verdict,
        mistakes={
            "precision 0 when nothing is drawn": _verdict_with(precision_when_empty=0.0),
            "a cycle only when there are more edges than a tree has": _verdict_with(
                cycle=lambda drawn, count, parts: len(drawn) > count - 1),
            "a cycle whenever the graph is not connected": _verdict_with(cycle=lambda drawn, count, parts: parts > 1),
        }),
    Exercise(
        "08.gray_scott_step",
        "return the state [B, 2, H, W] after one Gray-Scott step (D_u = 0.2, D_v = 0.1, lap = rdm.laplacian).",
        gray_scott_step_reference, _gray_scott_cases,
        "u, v = state[:, 0], state[:, 1]; lap = rdm.laplacian(state) (then lap[:, 0] is u's); the new u is "
        "u + 0.2 lap_u - u*v*v + feed*(1 - u), the new v is v + 0.1 lap_v + u*v*v - (feed + kill)*v; "
        "torch.stack([u_new, v_new], dim=1).",
        mistakes={
            "the same diffusion rate for both": lambda s, f, k: _gray_scott_mistake(s, f, k, rates=(0.2, 0.2)),
            "v removed at rate kill, not feed + kill": lambda s, f, k: _gray_scott_mistake(s, f, k, removal="kill"),
            "u v instead of u v squared": lambda s, f, k: _gray_scott_mistake(s, f, k, power=1),
            "the change, not the new state": lambda s, f, k: _gray_scott_mistake(s, f, k, change_only=True),
        }),
    Exercise(
        "08.laplacian",
        "return the 9-point Laplacian [B, C, H, W] of every channel, on a grid that wraps around.",
        laplacian_reference, _laplacian_cases,
        "the stencil [[1, 4, 1], [4, -20, 4], [1, 4, 1]] / 6 as a [C, 1, 3, 3] kernel (.repeat(C, 1, 1, 1)); "
        "pad with F.pad(field, (1, 1, 1, 1), mode='circular') so the grid wraps, then F.conv2d(..., groups=C) "
        "so that each channel diffuses on its own.",
        rtol=1e-6, atol=1e-6,           # a stencil written in float32 (1/6 rounded) is right too
        mistakes={
            "the 5-point stencil": lambda f: _stencil_conv(f, _FIVE_POINT, scale=1.0),
            "zero padding: no wrap-around": lambda f: _stencil_conv(f, _NINE_POINT, padding="constant"),
            "the weights not divided by 6": lambda f: _stencil_conv(f, _NINE_POINT, scale=1.0),
            "channels mixed (no groups)": lambda f: _stencil_conv(f, _NINE_POINT, mix_channels=True),
        }),
    Exercise(
        "08.turn_gap",
        "return the largest |turn(step(state)) - step(turn(state))|, turn = torch.rot90(x, 1, dims=(-2, -1)).",
        turn_gap_reference, _turn_gap_cases,
        "turn the grid plane only (dims=(-2, -1): the last two axes; batch and channels stay); compute both "
        "orders, step then turn and turn then step, and return (a - b).abs().max(), the largest difference.",
        rtol=1e-6, atol=1e-9,
        mistakes={
            "the batch and channel axes turned": lambda step, s: (torch.rot90(step(s), 1, dims=(0, 1))
                                                                   - step(torch.rot90(s, 1, dims=(0, 1)))).abs().max(),
            "the turn on one side only": lambda step, s: (step(s) - step(torch.rot90(s, 1, dims=(-2, -1)))).abs().max(),
            "the mean, not the largest difference": lambda step, s: (torch.rot90(step(s), 1, dims=(-2, -1)) - step(
                torch.rot90(s, 1, dims=(-2, -1)))).abs().mean(),
        }),
]}
